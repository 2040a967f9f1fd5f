"""Per-layer stretching of the residual stream (pure maths; imports nothing from the pipeline)."""
