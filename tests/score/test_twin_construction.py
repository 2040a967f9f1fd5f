"""The twin divergence separates a belief shift from an amplified flip, by construction.

A tiny causal LM made here (a bigram table, so every distribution is known in closed form) is read through the
harness's own passes (harness.run.twin.plan / compute, harness.decode.probe.step_logits_batch):

- belief shift: prompt B carries a marker token that, from where it appears on, adds a fixed vector to every
  position's logits without ever changing an argmax. The greedy outputs are identical (free-running distance 0 at
  every length), the twin KL is the closed-form KL of the two softmaxes, every step.
- amplified flip: the first generated step is a near tie (margin 0.01), and the marker adds 0.02 to the rival at
  the prompt end only. Side B's greedy output leaves A's at step 1 and never comes back (token edit distance 1),
  while the twin KL is one tiny term at step 1 and exactly 0 after it (A's tokens now run in one cycle of the
  chain, B's in the other: they share no token).
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.ladder.records import PromptPair
from harness.run.twin import compute, plan
from harness.score.metrics.edit_distance import first_divergence, normalized_edit_distance
from harness.score.twin import summarize

V = 12
MARK, GEN = 10, 11
"""The marker token of prompt B, and the token every prompt ends with (the generation prompt)."""


def bigram() -> torch.Tensor:
    t = torch.zeros(V, V)
    t += 0.01 * torch.arange(V)[None, :]  # distinct values: no exact ties anywhere
    for x in range(V):
        # two cycles with no token in common, 0 -> ... -> 4 -> 0 and 5 -> ... -> 9 -> 5 (GEN leads to 2, MARK to 1);
        # margin ~3.9 at every step
        t[x, (x + 1) % 5 + (5 if 5 <= x < 10 else 0)] = 4.0
    return t


SHIFT = torch.zeros(V)
SHIFT[9], SHIFT[0], SHIFT[5] = 2.0, -1.0, 1.0  # moves mass among the runners-up, never past the top (margin >= 1.8)


class ToyLM(torch.nn.Module):
    """Logits of position i: the bigram row of token i, plus a marker effect once MARK has appeared in 0..i."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(bigram(), requires_grad=False)
        self.mode = mode

    def forward(self, input_ids, use_cache=False, logits_to_keep=0):
        z = self.table[input_ids].clone()  # [B, n, V]
        seen = (input_ids == MARK).long().cumsum(-1) > 0
        if self.mode == "shift":
            z = z + seen[..., None] * SHIFT
        else:  # "flip": the prompt end's near tie, broken towards the rival by the marker only
            at_end = input_ids == GEN
            z[..., 3] = torch.where(at_end, torch.full_like(z[..., 3], 5.00), z[..., 3])
            z[..., 7] = torch.where(at_end, 4.99 + 0.02 * seen.float(), z[..., 7])
        return SimpleNamespace(logits=z[:, -logits_to_keep:] if logits_to_keep else z)


def greedy(model, prompt, steps) -> tuple[int, ...]:
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return tuple(ids[len(prompt):])


PROMPT_A = (1, 2, GEN)
PROMPT_B = (1, MARK, 2, GEN)
PAIR = PromptPair("p/synonym/x", "p", "synonym", "x", "a", "b", "curated")
LENGTHS = (4, 8, 16)


def twin_of(model):
    ya, yb = greedy(model, PROMPT_A, max(LENGTHS)), greedy(model, PROMPT_B, max(LENGTHS))
    gens = {("a", 0): SimpleNamespace(trace_top1_id=np.array(ya)), ("b", 0): SimpleNamespace(trace_top1_id=np.array(yb))}
    passes, reads, comps = plan([PAIR], {PAIR.pair_id: ("a", "b", 0)}, gens, {"a": PROMPT_A, "b": PROMPT_B})
    reading = compute(model, passes, reads, comps, V)
    return ya, yb, reading[(PAIR.pair_id, "ab")], reading[(PAIR.pair_id, "ba")]


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    p, q = torch.softmax(p_logits.double(), -1), torch.softmax(q_logits.double(), -1)
    return float((p * (p / q).log()).sum())


def test_a_belief_shift_without_a_flip_shows_in_the_twin_and_not_in_free_running():
    model = ToyLM("shift")
    ya, yb, ab, ba = twin_of(model)
    t = bigram()
    prev = (GEN,) + ya[:-1]  # the token each step reads last
    closed = np.array([kl(t[x], t[x] + SHIFT) for x in prev])
    closed_llr = np.array([float(torch.log_softmax((t[x] + SHIFT).double(), -1)[y] - torch.log_softmax(t[x].double(), -1)[y])
                           for x, y in zip(prev, ya)])
    for L in LENGTHS:
        assert normalized_edit_distance(ya[:L], yb[:L]) == 0.0 and first_divergence(ya[:L], yb[:L]) == 0
        s = summarize(ab, L)
        assert s["kl"] == pytest.approx(closed[:L].mean(), rel=1e-9) and s["kl"] > 0.05
        assert s["llr"] == pytest.approx(closed_llr[:L].sum(), rel=1e-9) and s["llr"] < 0
        assert s["top1_changed"] == 0.0 and math.isnan(s["first_top1"])
        assert summarize(ba, L)["kl"] > 0.05  # B's output (the same tokens) read the other way round


def test_one_low_margin_flip_amplified_is_far_in_free_running_and_tiny_in_the_twin():
    model = ToyLM("flip")
    ya, yb, ab, ba = twin_of(model)
    assert ya[0] == 3 and yb[0] == 7  # the near tie went the other way after prompt B
    end = bigram()[GEN].clone()
    end[3], end[7] = 5.00, 4.99
    flipped = end.clone()
    flipped[7] += 0.02
    step1 = kl(end, flipped)
    for L in LENGTHS:
        assert first_divergence(ya[:L], yb[:L]) == 1 and normalized_edit_distance(ya[:L], yb[:L]) == 1.0
        s = summarize(ab, L)
        assert s["top1_changed"] == 1.0 and s["first_top1"] == 1.0
        assert s["kl"] == pytest.approx(step1 / L, rel=1e-6) and s["kl"] < 1e-4
        assert summarize(ba, L)["kl"] < 1e-4
    assert (ab.kl[1:] == 0).all() and (ba.kl[1:] == 0).all()  # after the flip both prompts read the same prefix
