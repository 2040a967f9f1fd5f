"""The CI gate command (docs/ci-gate.md): config and run."""
