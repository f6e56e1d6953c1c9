// Gemma3Formats module.
