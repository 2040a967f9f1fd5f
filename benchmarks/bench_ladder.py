"""Ladder building at scale (issue 34): ``stabprobe ladder build`` on 100,000 one-line prompts in under 2 minutes.

The prompts are generated (seeded): an opening ("Explain", "What is", "List three facts about", ...) and 3 to 14
words drawn from a 300-word vocabulary, with commas, numbers and contractions now and then, ending in ``.``,
``?``, ``!`` or nothing. A small vocabulary is the hard case for the positive control's pairing (every word is
held by thousands of prompts). Every edit kind is built (about 30 pairs per prompt) and the ladder file is
written, as the command does. The figure is CPU seconds (the machine is shared: wall time depends on the
load, which is printed); ``--quick`` builds 10,000 prompts and scales the time to 100,000 (the build is
near-linear: the pairing's bit masks cost n/64 words per prompt, under a tenth of the total at 100,000).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

from benchmarks.common import Outcome, Row

TARGET_S = 120.0
FULL = 100_000


def make_prompts(n: int, seed: int = 7) -> list[str]:
    r = random.Random(seed)
    base = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec "
            "romeo sierra tango uniform victor whiskey xray yankee zulu river mountain ocean forest desert planet "
            "engine market garden history science music theory language computer network protein energy climate "
            "economy poetry painting").split()
    words = [a + b for a in base for b in ["", "s", "ing", "ed", "er"]]
    starts = ["Explain", "Describe", "What is", "Why does", "How do", "List three facts about",
              "Write a short poem about", "Give an example of", "Summarize"]
    out = []
    for _ in range(n):
        k = r.randint(3, 14)
        ws = [r.choice(words) for _ in range(k)]
        if r.random() < 0.3:
            ws[r.randrange(k)] += ","
        if r.random() < 0.2:
            ws.insert(r.randrange(k), str(r.randint(1, 999)))
        if r.random() < 0.1:
            ws.insert(r.randrange(k), "don't")
        out.append(f"{r.choice(starts)} {' '.join(ws)}{r.choice(['.', '?', '!', '', '.'])}")
    return out


def run(quick: bool = False) -> Outcome:
    from harness.ladder.build import build_ladder
    from harness.ladder.prompts_file import read_prompts_file
    from harness.ladder.write import write_ladder

    n = 10_000 if quick else FULL
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "prompts.txt"
        src.write_text("\n".join(make_prompts(n)) + "\n", encoding="utf-8")
        load = os.getloadavg()[0]
        cpu, wall = time.process_time(), time.perf_counter()
        read = read_prompts_file(src)
        ladder = build_ladder(read.prompt_set)
        write_ladder(read.prompt_set, ladder, Path(tmp) / "ladder.yaml")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    at_full = cpu * FULL / n
    ratio = TARGET_S / at_full
    measured = (f"{n:,} prompts, {len(ladder.pairs):,} pairs: {cpu:.1f} s CPU ({wall:.1f} s wall, load {load:.1f})"
                + ("" if n == FULL else f"; {at_full:.0f} s CPU scaled to {FULL:,}"))
    row = Row("ladder_build", measured, f"{FULL:,} one-line prompts < {TARGET_S:.0f} s", ratio, f"{ratio:.2f}x",
              ratio >= 1.0, [f"ladder_build: {n / cpu:,.0f} prompts/s of CPU, every edit kind, ladder file written; "
                             "the wall time is the CPU time on an idle core"])
    return Outcome([row], {"prompts": n, "pairs": len(ladder.pairs), "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                           "load_1min": load, "cpu_s_scaled_to_100k": round(at_full, 1)})
