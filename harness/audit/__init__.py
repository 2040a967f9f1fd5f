"""Stage 2, audit: rendering through a model's chat template (and its frozen clock), the token audit and tokenizer exposure."""
