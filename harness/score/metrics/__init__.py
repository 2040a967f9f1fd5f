"""Pure metric functions (numpy in, floats out); no model or file access."""
