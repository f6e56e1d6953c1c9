// Gemma3Tokenizers module.
