"""Markdown report and the terminal summary, both from summary.json."""

from __future__ import annotations

from typing import Any

from harness.ladder.records import RUNGS


def _fmt(x: float) -> str:
    return "nan" if x != x else f"{x:.4f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(summary: dict[str, Any], manifest: dict[str, Any]) -> str:
    det = summary["determinism"]
    cfg = manifest.get("config", {})
    parts = [
        "# stabprobe report",
        "",
        f"- status: **{manifest.get('status')}**; command: `{' '.join(manifest.get('argv', []))}`",
        f"- harness {manifest.get('harness', {}).get('version')} at commit {manifest.get('harness', {}).get('commit')}",
        f"- ladder: {cfg.get('ladder', {}).get('name')} ({cfg.get('ladder', {}).get('source')}); lengths: {cfg.get('lengths')}",
        f"- determinism: **{det['verdict']}** ({det['nonzero_rows']} of {det['identical_rows']} identical-rung rows non-zero)",
        "",
        "## Models",
        "",
        _table(
            ["model", "variant", "status", "revision", "error"],
            [[m["name"], str(m.get("variant")), m["status"], str(m.get("resolved_revision") or "")[:19], (m.get("error") or "")[:120]]
             for m in manifest.get("models", [])],
        ),
        "",
        "## Token audit (pairs kept / total; dropped by reason)",
        "",
        _table(
            ["model", "rung", "kept", "total", "dropped"],
            [[a["model"], a["rung"], str(a["kept"]), str(a["total"]),
              ", ".join(f"{k}: {v}" for k, v in a["dropped"].items()) or "-"] for a in summary["audit"]],
        ),
        "",
        "## Distances per rung (mean [95% bootstrap CI])",
        "",
    ]
    rows = []
    for c in summary["cells"]:
        e = c["emb_dist"]
        rows.append([
            c["model"], c["variant"], c["rung"], str(c["length"]), str(c["n_pairs"]),
            f"{_fmt(e['mean'])} [{_fmt(e['ci95'][0])}, {_fmt(e['ci95'][1])}]",
            _fmt(c["tok_edit_norm"]["mean"]), _fmt(c["hidden_dist"]["mean"]),
            f"{c['js']['mean']:.3g}", _fmt(c["top1_flip"]["mean"]), _fmt(c["diverged_share"]),
        ])
    parts.append(_table(["model", "variant", "rung", "L", "n", "embedding distance", "token edit (norm)",
                         "hidden dist", "prompt-end JS", "top-1 flip rate", "diverged share"], rows))
    checks = summary["checks"]["positive_control_exceeds_noop"]
    if checks:
        parts += ["", "## Check: positive control moves more than no-op formatting", "",
                  _table(["model", "variant", "L", "positive_control", "noop_format", "holds"],
                         [[c["model"], c["variant"], str(c["length"]), _fmt(c["positive_control"]),
                           _fmt(c["noop_format"]), "yes" if c["holds"] else "**no**"] for c in checks])]
    skipped = cfg.get("ladder", {}).get("skipped_edits", 0)
    parts += ["", f"Edits not applicable to their prompt (listed in the manifest): {skipped}.", ""]
    return "\n".join(parts)


def terminal_summary(summary: dict[str, Any]) -> str:
    """Per model x rung: pairs kept and mean embedding distance at each length."""
    lengths = sorted({c["length"] for c in summary["cells"]})
    kept = {(a["model"], a["rung"]): (a["kept"], a["total"]) for a in summary["audit"]}
    emb = {(c["model"], c["variant"], c["rung"], c["length"]): c["emb_dist"]["mean"] for c in summary["cells"]}
    models = sorted({(c["model"], c["variant"]) for c in summary["cells"]})
    head = f"{'model':<18}{'variant':<8}{'rung':<18}{'kept':>9}" + "".join(f"{'emb@' + str(L):>11}" for L in lengths)
    lines = [head, "-" * len(head)]
    for model, variant in models:
        for rung in RUNGS:
            if (model, rung) not in kept:
                continue
            k, t = kept[(model, rung)]
            vals = "".join(f"{_fmt(emb.get((model, variant, rung, L), float('nan'))):>11}" for L in lengths)
            lines.append(f"{model:<18}{variant:<8}{rung:<18}{f'{k}/{t}':>9}{vals}")
    det = summary["determinism"]
    lines.append(f"determinism: {det['verdict']} ({det['nonzero_rows']}/{det['identical_rows']} identical-rung rows non-zero)")
    for m in summary["models"]:
        if m["status"] != "ok":
            lines.append(f"FAILED {m['name']} ({m['variant']}): {m['error']}")
    return "\n".join(lines)
