"""The run: one RunConfig, the pipeline (the stages in order, one cell per model x variant), executors, resume and merge, manifest, cache keys."""
