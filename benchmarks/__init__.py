"""Speed benchmarks of stabprobe against its targets (issue 9): ``python -m benchmarks.run``."""
