"""Ladder building is bounded by its input (issue 34, defects 4 and 5): near-linear in prompt count and length,
and a prompt over the stated limit is refused with one line."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
import time

from harness.ladder.build import _unrelated, build_pairs
from harness.ladder.records import BasePrompt
from harness.ladder.show import describe_change
from harness.ladder.textspans import first_change


def _prompts(n: int, seed: int, vocab: int, topics: int | None = None) -> list[BasePrompt]:
    r = random.Random(seed)
    words = [f"{w}word{i}" for i, w in enumerate("alpha beta gamma delta kappa sigma omega theta".split())][:vocab]
    out = []
    for i in range(n):
        body = " ".join(r.choice(words) for _ in range(r.randint(1, 5)))
        text = f"Explain {body}." if r.random() < 0.9 or not out else out[r.randrange(len(out))].text  # duplicates too
        topic = f"t{i}" if topics is None else f"t{r.randrange(topics)}"
        out.append(BasePrompt(f"p{i}", text, topic))
    return out


def test_indexed_pairing_is_the_definition():
    from harness.ladder.build import _UnrelatedIndex

    # Every prompt's control is the one the direct definition picks: common words (held by over half of the
    # prompts), rare ones, shared topics, duplicated texts, ties.
    for seed, vocab, topics in [(1, 3, None), (2, 8, None), (3, 5, 4), (4, 2, 2), (5, 8, 30)]:
        prompts = _prompts(120, seed, vocab, topics)
        index = _UnrelatedIndex(prompts)
        for i, p in enumerate(prompts):
            assert index.pick("lad", i) == _unrelated("lad", p, prompts), (seed, p.id)


def test_positive_control_pairing_is_near_linear():
    # Defect 5: 1,000 prompts took 21 s and 3,000 took 382 s (min() inside the comprehension: cubic).
    r = random.Random(0)
    prompts = [BasePrompt(f"p{i}", f"Explain question number {i} about topic{r.randrange(500)} and "
                                   f"item{r.randrange(500)}.", f"p{i}") for i in range(5000)]
    t0 = time.perf_counter()
    pairs, _ = build_pairs("big", prompts, {}, edit_kinds=())
    took = time.perf_counter() - t0
    assert sum(p.rung == "positive_control" for p in pairs) == 5000
    assert took < 60, f"5,000 prompts paired in {took:.1f} s"


def test_edit_notes_are_linear_in_prompt_length():
    # Defect 4: SequenceMatcher without autojunk on a long prompt (240 KB of one repeated word: over 300 s).
    a = "word " * 18000 + "end."
    b = "word " * 9000 + "wrod " + "word " * 8999 + "end."
    t0 = time.perf_counter()
    note, delta = first_change(a, b), describe_change(a, b)
    took = time.perf_counter() - t0
    assert note == "word -> wrod" and delta.startswith("@45000 'word' -> 'wrod'")
    assert took < 5, f"notes of a 90 KB prompt took {took:.1f} s"


def test_bounded_opcodes_cover_both_sides():
    from harness.ladder.textspans import bounded_opcodes

    for a, b in [("abcdef", "abXdef"), ("aaaa", "aaaaa"), ("", "xy"), ("xy", ""), ("same", "same")]:
        a2, b2 = list(a * 600), list(b * 600)  # past the direct-alignment size
        ops = bounded_opcodes(a2, b2)
        assert ops[0][1] == 0 and ops[0][3] == 0 and ops[-1][2] == len(a2) and ops[-1][4] == len(b2)
        rebuilt = []
        for op, i1, i2, j1, j2 in ops:
            rebuilt += a2[i1:i2] if op == "equal" else b2[j1:j2]
        assert rebuilt == b2


def test_one_megabyte_prompt_is_refused_with_one_line(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("Explain " + "word " * 210_000 + "\nWhat is 7 plus 5?\n", encoding="utf-8")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "ladder", "build", "--prompts", str(big),
                           "--out", str(tmp_path / "l.yaml")], capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"stabprobe: error: {big}: prompt 1: prompt is 1,050,008 characters; "
                                   "the limit is 100,000")
    assert not (tmp_path / "l.yaml").exists() and took < 10


def test_indexed_pairing_with_masks_and_counted_overlaps_is_the_definition():
    from harness.ladder.build import _UnrelatedIndex

    # 700 prompts: words held by 32 or more prompts are masks, rarer ones lists; vocab 2 leaves prompts whose
    # every other shares a word (the counted path), vocab 8 mostly not.
    for seed, vocab, topics in [(6, 2, None), (7, 8, None), (8, 4, 50)]:
        r = random.Random(seed)
        prompts = [dataclasses.replace(p, text=p.text + (" rare" + "".join(chr(97 + int(d)) for d in str(r.randrange(60))) if r.random() < 0.5 else ""))
                   for p in _prompts(700, seed, vocab, topics)]
        index = _UnrelatedIndex(prompts)
        assert index.masks and index.lists
        for i in range(0, 700, 7):
            assert index.pick("lad", i) == _unrelated("lad", prompts[i], prompts), (seed, i)


def test_select_finds_the_kth_set_bit():
    from harness.ladder.pairing import _select

    r = random.Random(3)
    for n in (1, 9, 300, 70_000):
        bits = [j for j in range(n) if r.random() < 0.3] or [n - 1]
        mask = sum(1 << j for j in bits)
        for k in {0, len(bits) // 2, len(bits) - 1, r.randrange(len(bits))}:
            assert _select(mask, k) == bits[k]


def test_short_opcodes_are_sequence_matchers():
    # The direct common-head/tail opcodes (no repeated item in a, b's middle new) must be SequenceMatcher's own.
    import difflib

    from harness.ladder.textspans import bounded_opcodes

    r = random.Random(1)
    for _ in range(20_000):
        vocab = r.choice([2, 3, 5, 10, 50])
        a = [r.randrange(vocab) for _ in range(r.randrange(0, 9))]
        b = list(a)
        for _ in range(r.randrange(0, 3)):
            op = r.randrange(3)
            if op == 0 and b:
                b[r.randrange(len(b))] = r.randrange(vocab + 3)
            elif op == 1:
                b.insert(r.randrange(len(b) + 1), r.randrange(vocab + 3))
            elif b:
                del b[r.randrange(len(b))]
        if r.random() < 0.5:
            a, b = b, a
        assert bounded_opcodes(a, b) == difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes(), (a, b)
