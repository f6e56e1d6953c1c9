// Gemma3Model module.
