"""From the audited pairs to decode requests: one per distinct (prompt, replicate)."""

from __future__ import annotations

from typing import Sequence

from harness.audit.records import AuditRow
from harness.decode.greedy import DecodeRequest, prompt_key


def decode_requests(pairs, audit: Sequence[AuditRow], rendered) -> tuple[list[DecodeRequest], dict[str, tuple[str, str, int]]]:
    """Distinct (prompt, replicate) requests, and for each kept pair the keys of its two sides."""
    kept = {a.pair_id for a in audit if a.kept}
    reqs: dict[tuple[str, int], DecodeRequest] = {}
    sides: dict[str, tuple[str, str, int]] = {}
    for p in pairs:
        if p.pair_id not in kept:
            continue
        ra, rb = rendered[p.prompt_a], rendered[p.prompt_b]
        ka, kb = prompt_key(ra.token_ids), prompt_key(rb.token_ids)
        rep_b = 1 if p.rung == "identical" else 0  # the noise floor's second side is its own decode
        reqs.setdefault((ka, 0), DecodeRequest(ka, ra.token_ids, 0, ra.text))
        reqs.setdefault((kb, rep_b), DecodeRequest(kb, rb.token_ids, rep_b, rb.text))
        sides[p.pair_id] = (ka, kb, rep_b)
    return list(reqs.values()), sides
