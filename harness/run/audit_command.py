"""`stabprobe audit`: the token audit alone, with tokenizers only (no weights loaded)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import pandas as pd

from harness.core import rundir
from harness.audit.tokens import audit_pairs
from harness.audit.records import AuditRow
from harness.audit.exposure import EXPOSURE, exposure_table, exposure_text
from harness.core.hashing import sha256_text
from harness.ladder.records import Ladder
from harness.models.loading import _context_length, check_local_revision, gguf_as_local, load_tokenizer, render_policy
from harness.run.study import study_run
from harness.models.registry import ModelEntry
from harness.summary.build import audit_counts


def audit_table(counts: list[dict]) -> str:
    head = f"{'model':<24}{'rung':<18}{'kept':>6}{'total':>7}  dropped"
    lines = [head, "-" * (len(head) + 20)]
    for c in counts:
        dropped = ", ".join(f"{k}: {v}" for k, v in c["dropped"].items()) or "-"
        lines.append(f"{c['model']:<24}{c['rung']:<18}{c['kept']:>6}{c['total']:>7}  {dropped}")
    return "\n".join(lines)


def run_audit(models: Sequence[ModelEntry], ladder: Ladder, out: Path, argv: list[str] | None = None,
              max_new_tokens: int = 512) -> tuple[Path, str, int]:
    from transformers import AutoConfig

    config = {
        "ladder": {"name": ladder.name, "source": ladder.source, "sha256": ladder.source_sha256, "pairs": len(ladder.pairs)},
        "models": [m.model_dump() for m in models], "max_new_tokens": max_new_tokens,
    }

    def audit_model(entry: ModelEntry, rec: dict) -> list[AuditRow]:
        entry, _ = gguf_as_local(entry)  # a GGUF source is read from its converted directory (harness.models.gguf)
        resolved = check_local_revision(entry) if entry.is_local else entry.revision
        tok = load_tokenizer(entry)
        kwargs = {"trust_remote_code": entry.trust_remote_code}
        if not entry.is_local and entry.revision:
            kwargs["revision"] = entry.revision
        ctx = _context_length(AutoConfig.from_pretrained(entry.source, **kwargs))
        policy = render_policy(entry)
        new, _ = audit_pairs(entry.name, tok, policy, ladder.pairs, context_len=ctx, max_new_tokens=max_new_tokens)
        template = (policy.template_override or getattr(tok, "chat_template", None)) if policy.use_chat_template else None
        rec.update(status="ok", resolved_revision=resolved, chat_template_policy=entry.chat_template,
                   chat_template_sha256=sha256_text(template) if template else None, context_length=ctx)
        return new

    with study_run("audit", out, argv or (), config) as study:
        outcomes = study.measure_models(models, audit_model)
        rows: list[AuditRow] = [r for o in outcomes if o.error is None for r in o.result]
        run_dir, manifest = study.run_dir, study.manifest
        df = pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=[f.name for f in dataclasses.fields(AuditRow)])
        rundir.atomic_write_parquet(run_dir / rundir.AUDIT, df)
        exposure = exposure_table(df)
        rundir.atomic_write_parquet(run_dir / EXPOSURE, exposure)
    table = audit_table(audit_counts(df)) + "\n\n" + exposure_text(exposure)
    failed = [m for m in manifest["models"] if m["status"] != "ok"]
    for m in failed:
        table += f"\nFAILED {m['name']}: {m['error']}"
    return run_dir, table, study.exit_code
