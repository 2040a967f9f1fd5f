"""Token audit: which pairs a model can actually tell apart.

A pair whose two prompts render to the same ids is not a perturbation for that
model; it is dropped with its reason instead of being scored as "stable".
"""

from __future__ import annotations

from harness.ladder.records import NOISE_FLOOR, PromptPair
from harness.audit.records import AuditRow, RenderedPrompt, RenderPolicy
from harness.audit.render import render_distinct

KEPT = ""
IDENTICAL_INPUT = "identical_input"
IDENTICAL_AFTER_TEMPLATE = "identical_after_template"
EXCEEDS_CONTEXT = "exceeds_context"
INVALID_TEXT = "invalid_text"
"""A side is not valid Unicode (a lone surrogate from a JSON ``\\ud800``): no tokenizer can encode it, so the
pair is dropped with this reason and the model's other pairs go on (it used to fail the whole model)."""


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def first_difference(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return -1 if len(a) == len(b) else min(len(a), len(b))


def audit_pairs(
    model_name: str,
    tokenizer,
    policy: RenderPolicy,
    pairs: list[PromptPair] | tuple[PromptPair, ...],
    *,
    context_len: int | None = None,
    max_new_tokens: int = 0,
    variant: str = "bf16",
) -> tuple[list[AuditRow], dict[str, RenderedPrompt]]:
    """Audit rows for one model plus the rendering of every distinct prompt string."""
    texts = list(dict.fromkeys(t for p in pairs for t in (p.prompt_a, p.prompt_b)))
    invalid = {t for t in texts if not _encodable(t)}
    rendered = render_distinct(tokenizer, policy, (t for t in texts if t not in invalid))
    rows: list[AuditRow] = []
    for p in pairs:
        if p.prompt_a in invalid or p.prompt_b in invalid:
            rows.append(AuditRow(model_name, variant, p.pair_id, p.prompt_id, p.rung, p.edit_kind, False, INVALID_TEXT,
                                 0, 0, -1))
            continue
        a, b = rendered[p.prompt_a], rendered[p.prompt_b]
        fd = first_difference(a.token_ids, b.token_ids)
        if context_len is not None and max(len(a.token_ids), len(b.token_ids)) + max_new_tokens > context_len:
            reason = EXCEEDS_CONTEXT
        elif p.rung == NOISE_FLOOR:
            reason = KEPT  # the noise floor is decoded twice on purpose
        elif p.prompt_a == p.prompt_b:
            reason = IDENTICAL_INPUT
        elif fd == -1:
            reason = IDENTICAL_AFTER_TEMPLATE
        else:
            reason = KEPT
        rows.append(
            AuditRow(model_name, variant, p.pair_id, p.prompt_id, p.rung, p.edit_kind, reason == KEPT, reason,
                     len(a.token_ids), len(b.token_ids), fd)
        )
    return rows, rendered
