"""Stage 5, summary: statistics, flags, determinism verdict and the builder of summary.json."""
