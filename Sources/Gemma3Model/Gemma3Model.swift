// Gemma3Model module: the configuration, the decoder tensor table, parameters, the training forward
// and backward, the KV-cache inference engine, sampling and generation, and `LanguageModel.load`.
// Token ids (`TokenID`), tokenizers and constrained decoding (`TokenConstraint`, `ByteGrammar`)
// come with it, so one import serves a user of the model.
@_exported import Gemma3Tokenizers
@_exported import Gemma3StructuredOutput
