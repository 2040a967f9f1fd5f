"""stabprobe: behavioural prompt-perturbation stability harness.

The pipeline is a chain of plain functions over frozen records:
ladder (pairs) -> audit (token ids per model) -> decode -> score -> summary -> report.
"""

__version__ = "0.1.0"
