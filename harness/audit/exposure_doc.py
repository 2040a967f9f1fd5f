"""The exposure table of published tokenizers: which edit kinds survive each family's template.

``python -m harness.audit.exposure_doc`` renders the default ladder and
``ladders/examples/prompts50.txt`` through the chat template and tokenizer of
each published family under ``tests/fixtures/tokenizers/`` (Qwen3, Llama 3,
Gemma 3; tokenizers only, no weights) and writes
``docs/exposure-real-tokenizers.md``. Edit kinds come from the ladders as
built, so a new kind in :data:`harness.ladder.edits.EDIT_KINDS` appears after
one re-run; a kind that produced no pair is listed with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import pandas as pd

from harness.audit.exposure import exposure_table
from harness.audit.tokens import audit_pairs
from harness.audit.records import AuditRow
from harness.ladder.edits import EDIT_KINDS
from harness.ladder.records import Ladder
from harness.audit.records import RenderPolicy

ROOT = Path(__file__).resolve().parents[2]
TOKENIZERS = ROOT / "tests" / "fixtures" / "tokenizers"
FAMILIES = ("qwen3", "llama3_1", "gemma3")
LADDERS = ("ladders/default.yaml", "ladders/examples/prompts50.txt")
OUT = ROOT / "docs" / "exposure-real-tokenizers.md"
COMMAND = "python -m harness.audit.exposure_doc"
VERSIONS = "Libraries:"
"""Opens the one line that may differ between machines (the freshness test skips it)."""


def load_family_tokenizer(folder: Path, work: Path):
    """The published tokenizer in ``folder`` (``tokenizer.json.gz`` + ``tokenizer_config.json``), loaded offline."""
    from transformers import AutoTokenizer

    work.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "tokenizer.json.gz", "rb") as fin, open(work / "tokenizer.json", "wb") as fout:
        shutil.copyfileobj(fin, fout)
    shutil.copyfile(folder / "tokenizer_config.json", work / "tokenizer_config.json")
    return AutoTokenizer.from_pretrained(str(work))


def load_ladder_file(path: Path) -> Ladder:
    from harness.ladder.load import load_ladder
    from harness.ladder.prompts_file import ladder_from_prompts

    return ladder_from_prompts(path) if path.suffix.lower() == ".txt" else load_ladder(path)


def audit_frame(tokenizers: dict, ladder: Ladder) -> pd.DataFrame:
    """audit.parquet's rows for every family on ``ladder`` (each family's own template, default kwargs)."""
    rows: list[AuditRow] = []
    for name, tok in tokenizers.items():
        rows += audit_pairs(name, tok, RenderPolicy(True), ladder.pairs)[0]
    return pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=[f.name for f in dataclasses.fields(AuditRow)])


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def ladder_section(label: str, ladder: Ladder, audit: pd.DataFrame, families: Sequence[str]) -> list[str]:
    exp = exposure_table(audit)
    cells = {(r.model, r.rung, r.edit_kind): f"{r.share:.2f} ({r.survived}/{r.pairs})" for r in exp.itertuples()}
    keys = list(dict.fromkeys(zip(exp["rung"], exp["edit_kind"])))
    rows = [[rung, kind] + [cells.get((f, rung, kind), "-") for f in families] for rung, kind in keys]
    lines = [f"## `{label}`", "",
             f"{len(ladder.prompts)} prompts, {len(ladder.pairs)} pairs, sha256 `{ladder.source_sha256[:16]}`. "
             "Share of pairs whose two prompts are still different token ids after the family's chat "
             "template and tokenizer (survived/pairs):", ""]
    lines += _table(["rung", "edit kind", *families], rows)
    erased = [f"- **{f}** erases: " + (", ".join(f"`{k}` ({cells[(f, r, k)].split(' ')[1][1:-1]})"
                                                for r, k in keys if (f, r, k) in cells and not cells[(f, r, k)].startswith("1.00"))
                                       or "nothing") for f in families]
    lines += ["", *erased]
    shown = {k for _, k in keys}
    absent = [k.name for k in EDIT_KINDS if k.name not in shown]
    if absent:
        n_skipped = {k: sum(s.edit_kind == k for s in ladder.skipped) for k in absent}
        n_same = audit[audit["reason"] == "identical_input"].groupby("edit_kind")["pair_id"].nunique()
        lines += ["", "Edit kinds with no pair to measure in this ladder: " + ", ".join(
            f"`{k}` ({n_skipped[k]} prompts had nothing to edit, {int(n_same.get(k, 0))} edits left the text "
            "unchanged)" for k in absent) + "."]
    counts = audit.groupby(["model", "reason"], sort=False).size()
    lines += ["", "Audit counts (all rungs): "
              + "; ".join(f"{f}: kept {int(counts.get((f, ''), 0))}, identical after template "
                          f"{int(counts.get((f, 'identical_after_template'), 0))}, identical input "
                          f"{int(counts.get((f, 'identical_input'), 0))}" for f in families) + ".", ""]
    return lines


def render_doc(tokenizers: dict, ladders: Sequence[tuple[str, Ladder]]) -> str:
    import tokenizers as hf_tokenizers
    import transformers

    families = list(tokenizers)
    lines = ["# Tokenizer exposure on published tokenizers", "",
             f"Generated by `{COMMAND}` (do not edit by hand; re-run it after adding an edit kind "
             "or changing a ladder). Tokenizers and chat templates: the published Qwen3, Llama 3.1 and "
             "Gemma 3 files in `tests/fixtures/tokenizers/` (see its README); rendered as `stabprobe` "
             "renders them (`add_generation_prompt=True`, default template kwargs, no second BOS).", "",
             f"{VERSIONS} transformers {transformers.__version__}, tokenizers {hf_tokenizers.__version__}.", "",
             "An edit a family's template erases is dropped from that model's run as "
             "`identical_after_template`: its rung says nothing about that model. Qwen3's template writes "
             "the message as is; the Llama 3 and Gemma 3 templates `trim` it, so every edit at the edges "
             "of the prompt disappears before the model sees it. That includes `blank_line` and "
             "`indented_lines` on one-sentence, one-line prompts (the blank line goes after the prompt, "
             "the indent before it): on these ladders they are edge edits too.", ""]
    for label, ladder in ladders:
        lines += ladder_section(label, ladder, audit_frame(tokenizers, ladder), families)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizers", default=str(TOKENIZERS), help="folder with one sub-folder per family")
    ap.add_argument("--out", default=str(OUT), help="markdown file to write")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stabprobe-tok-") as work:
        toks = {f: load_family_tokenizer(Path(args.tokenizers) / f, Path(work) / f) for f in FAMILIES}
        ladders = [(p, load_ladder_file(ROOT / p)) for p in LADDERS]
        text = render_doc(toks, ladders)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
