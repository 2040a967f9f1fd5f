"""Models: the registry, pinning, loading (weights, tokenizer, variants)."""
