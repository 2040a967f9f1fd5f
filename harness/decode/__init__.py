"""Stage 3, decode: greedy decoding with per-step capture, and the generation table."""
