"""Stage 4, score: pair scores, drift scores, scaffolds, the embedder and the metrics."""
