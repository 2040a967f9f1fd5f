"""The run: configuration, the pipeline (the stages in order, per cell), executors, manifest and caches."""
