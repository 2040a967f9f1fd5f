"""Closed-form local stability of one final hidden state ``h``.

Formulas are those of ``../shared/METRICS.md`` ("Closed-form local stability of
one state h"): the Token Constraint Bound, the exact argmax-flip radius, the
Fisher pullback and its KL boundary, and the study that validates them
(``stabprobe geometry``). Nothing here builds the V×d Jacobian or a d×d Fisher
matrix; tests do, to check the closed forms against brute force.
"""

from harness.stability.closed_form import local_stability
from harness.stability.fisher import empirical_boundary, fisher_topk, quad_form, rho, t_star
from harness.stability.head import HeadSpec, check_head, head_from_model, row_norms_sq
from harness.stability.records import FisherTopK, LocalStability
from harness.stability.traces import first_divergence_margin_percentile, step_stability

__all__ = [
    "FisherTopK",
    "HeadSpec",
    "LocalStability",
    "check_head",
    "empirical_boundary",
    "first_divergence_margin_percentile",
    "fisher_topk",
    "head_from_model",
    "local_stability",
    "quad_form",
    "rho",
    "row_norms_sq",
    "step_stability",
    "t_star",
]
