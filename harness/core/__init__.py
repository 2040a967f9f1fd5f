"""Shared plumbing below every stage: atomic writes and run-directory names, strict YAML, content hashes, GEMM routes, the memo store."""
