// Gemma3Training module.
