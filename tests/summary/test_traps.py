"""Traps that must not pass as findings: NaN, unclosed scaffolds, degenerate models, loops, fake preambles."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import log_softmax

from harness.summary.determinism import determinism_verdict
from harness.summary.flags import scaffold_table
from harness.ladder.records import PromptPair
from harness.score.metrics import divergence as dv
from harness.score.metrics.repetition import loop_mask, loop_share
from harness.models.registry import Scaffold
from harness.score.scaffold import answer_start_token
from harness.score.pairs import answer_columns, divergence_columns, score_pairs
from harness.score.records import PairSides, ScoredSide
from harness.summary.build import cell_stats
from harness.summary.traps import answer_missing_flags
from harness.decode.greedy import Generation


# --- NaN propagation -------------------------------------------------------

def test_divergences_of_non_finite_inputs_are_nan():
    q = log_softmax(np.random.default_rng(0).normal(size=64)).astype(np.float32)
    bad = q.copy()
    bad[3] = np.nan
    over = q.copy()
    over[5] = np.inf
    for x in (bad, over):
        assert np.isnan(dv.kl(x, q)) and np.isnan(dv.kl(q, x)) and np.isnan(dv.js(x, q))
    assert np.isnan(dv.js(bad, bad.copy()))  # NaN == NaN is no evidence of identical distributions
    masked = q.copy()
    masked[7] = -np.inf  # a masked-out token is a legitimate zero probability
    assert np.isfinite(dv.js(masked, q))


def test_kl_is_never_negative_at_real_vocabulary_size():
    # float32 log-softmax at V = 150k: the normaliser's rounding alone made KL -2e-8 before renormalising.
    rng = np.random.default_rng(0)
    z = rng.normal(size=150_000) * 3
    a = log_softmax(z).astype(np.float32)
    b = log_softmax(z + rng.normal(size=z.size) * 1e-7).astype(np.float32)
    for x, y in ((a, b), (b, a)):
        assert 0.0 <= dv.kl(x, y) < 1e-9
    assert 0.0 <= dv.js(a, b) < 1e-9


def _identical_rows(**over):
    row = {c: 0.0 for c in divergence_columns()}
    row.update(model="m", variant="bf16", rung="identical", pair_id="p", top1_flip=False)
    row.update(over)
    return pd.DataFrame([row])


def test_nan_on_the_identical_rung_makes_the_verdict_unknown_never_deterministic():
    assert determinism_verdict(_identical_rows())["verdict"] == "deterministic"
    v = determinism_verdict(_identical_rows(js=float("nan"), kl_ab=float("nan")))
    assert v["verdict"] == "unknown" and v["per_model"] == {"m/bf16": "unknown"} and v["nan_rows"] == 1
    # a missing answer span is not a reproducibility failure
    assert determinism_verdict(_identical_rows(emb_dist_answer=float("nan")))["verdict"] == "deterministic"
    assert determinism_verdict(_identical_rows(js=float("nan"), emb_dist=0.1))["verdict"] == "nondeterministic"

# --- answer spans of unclosed scaffolds ---------------------------------------

THINK = Scaffold(open="<think>", close="</think>")


def _generation(ids, text, key):
    n = len(ids)
    z = np.zeros(n, np.float32)
    return Generation(model="m", variant="bf16", prompt_key=key, replicate=0, rendered_text="", n_prompt_tokens=1,
                      gen_ids=tuple(ids), gen_text=text, stop_reason="length", trace_top1_id=np.asarray(ids, np.int64),
                      trace_top1_logit=z + 1, trace_top2_id=np.zeros(n, np.int64), trace_top2_logit=z,
                      prompt_end_logprobs=log_softmax(np.arange(8.0)).astype(np.float32),
                      hidden_means={L: np.ones(4, np.float32) + i for i, L in enumerate((8, 64))})


@pytest.fixture(scope="module")
def embedder():
    from harness.score.embedder import Embedder

    return Embedder()


def _sides(tok, text_a, text_b, scaffold=THINK):
    dec = lambda x: tok.decode(list(x), skip_special_tokens=False)  # noqa: E731
    out = []
    for key, text in (("a", text_a), ("b", text_b)):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        g = _generation(ids, text, key)
        out.append(ScoredSide(g, *answer_start_token(g.gen_ids, dec, scaffold)))
    pair = PromptPair(pair_id="x", prompt_id="x", rung="paraphrase", edit_kind="curated", prompt_a="A", prompt_b="B",
                      origin="curated")
    return PairSides(pair, *out), dec


def test_unclosed_scaffolds_have_missing_answer_span_metrics_not_zero(demo_tokenizer, embedder):
    sides, dec = _sides(demo_tokenizer, "<think>\nthe word is apple so the answer must be", "<think>\nadd the two numbers and then")
    assert (sides.a.scaffold, sides.b.scaffold) == ("unclosed", "unclosed")
    rows, _ = score_pairs([sides], (8, 64), dec, embedder.encode)
    for r in rows:
        assert r.answer_missing
        assert np.isnan(r.emb_dist_answer) and np.isnan(r.tok_edit_norm_answer)  # was exactly 0.0
        assert r.emb_dist > 0  # the raw outputs did move
    frame = pd.DataFrame([r.__dict__ for r in rows])
    cells = cell_stats(frame)
    assert all(c["answer_missing"] == {"count": 1, "share": 1.0} for c in cells)
    assert all(np.isnan(c["emb_dist_answer"]["mean"]) and c["emb_dist_answer"]["n_missing"] == 1 for c in cells)
    (flag,) = answer_missing_flags(cells)
    assert flag["flag"] == "answer_span_missing" and "-nothink" in flag["detail"] and "m:" in flag["detail"]


def test_one_closed_side_is_still_missing_and_closed_pairs_score(demo_tokenizer, embedder):
    sides, dec = _sides(demo_tokenizer, "<think>\nx</think>\n\nelppa", "<think>\nthe word is apple")
    (r, _), _ = score_pairs([sides], (8, 64), dec, embedder.encode)
    assert r.answer_missing and np.isnan(r.emb_dist_answer)
    sides, dec = _sides(demo_tokenizer, "<think>\nx</think>\n\nelppa", "<think>\ny</think>\n\nelppa")
    (r, _), _ = score_pairs([sides], (8, 64), dec, embedder.encode)
    assert not r.answer_missing and r.emb_dist_answer == 0.0 and r.tok_edit_norm_answer == 0.0
    assert set(answer_columns()) <= set(divergence_columns())

# --- repetition loops ---------------------------------------------------------

@pytest.mark.parametrize("ids, share", [
    ([1, 2] * 10, 1.0),
    ([5, 6, 7] + [1, 2, 3] * 5, 15 / 18),
    (list(range(40)), 0.0),
    ([9, 9, 9] + list(range(10, 20)), 0.0),   # three repeats under MIN_LOOP_TOKENS: formatting, not a loop
    ([1, 2, 3, 1, 2, 3] + list(range(10, 20)), 0.0),  # two copies are an echo
    (list(range(10)) + [7] * 10, 0.5),  # the answer, then stuck on one token
])
def test_loop_share_closed_forms(ids, share):
    assert loop_share(ids) == pytest.approx(share)


def test_loop_mask_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(30):
        block = list(rng.integers(0, 50, size=int(rng.integers(1, 6))))
        ids = list(rng.integers(100, 200, size=int(rng.integers(0, 10)))) + block * int(rng.integers(1, 6)) + list(
            rng.integers(300, 400, size=int(rng.integers(0, 10))))
        mask = loop_mask(ids)
        brute = np.zeros(len(ids), bool)
        for p in range(1, 65):
            for i in range(len(ids)):
                j = i
                while j + p < len(ids) and ids[j + p] == ids[j]:
                    j += 1
                span = j - i + p
                if (i == 0 or i - 1 + p >= len(ids) or ids[i - 1 + p] != ids[i - 1]) and span >= 3 * p and span >= 8:
                    brute[i:i + span] = True
        assert (mask == brute).all(), ids
    assert np.isnan(loop_share([]))

# --- the scaffold flag only for real preambles -------------------------------

def _gens(rows):
    return pd.DataFrame([{"model": "m", "variant": "bf16", "replicate": 0, "scaffold_status": "none",
                          "gen_ids": ids, "gen_text": text} for ids, text in rows])


def test_common_opening_counts_only_real_content(demo_tokenizer):
    tok = demo_tokenizer

    def row(text):
        return tok(text, add_special_tokens=False)["input_ids"], text

    newlines = _gens([row("\n" * 12 + f"{w} {w}") for w in ("cat", "dog", "sun", "map", "cup")])
    repeated = _gens([row("aaaaaaaaaaaaaaaa" + w) for w in ("cat", "dog", "sun", "map", "cup")])
    preamble = _gens([row(f"Let me think about this. The answer is {w}.") for w in ("cat", "dog", "sun", "map", "cup")])
    assert scaffold_table(newlines)[0]["common_opening_share"] == 0.0   # was 1.0
    assert scaffold_table(repeated)[0]["common_opening_share"] == 0.0
    assert scaffold_table(preamble)[0]["common_opening_share"] == 1.0

# --- unresponsive: a random-init model of a real architecture -----------------

@pytest.fixture(scope="module")
def random_model_run(tmp_path_factory, tiny_chat_dir):
    """Qwen3ForCausalLM, random weights, with the demo tokenizer (small vocab keeps CI fast).

    The done-when figure with the published Qwen3 tokenizer (151,936 rows) is in
    the issue note; the code path is the same.
    """
    from transformers import AutoTokenizer

    from harness.demo.random_init import make_random_qwen3
    from harness.ladder.load import load_ladder
    from harness.run.pipeline import RunConfig, run
    from harness.models.registry import entry_for_local_dir
    from tests.run.test_pipeline import SMALL_LADDER
    from tests.conftest import write

    tmp = tmp_path_factory.mktemp("random")
    vocab = len(AutoTokenizer.from_pretrained(str(tiny_chat_dir)))
    model_dir = make_random_qwen3(tiny_chat_dir, tmp / "qwen3-random", vocab_size=vocab)
    ladder = load_ladder(write(tmp / "small.yaml", SMALL_LADDER))
    return run(RunConfig(models=(entry_for_local_dir(model_dir),), ladder=ladder, out=tmp / "runs", lengths=(16,),
                         progress=False))


def test_random_init_model_is_unresponsive_and_has_no_scaffold(random_model_run):
    summary = json.loads((random_model_run.run_dir / "summary.json").read_text())
    flags = {f["flag"] for f in summary["flags"]}
    assert "unresponsive" in flags
    assert "scaffold" not in flags
    (row,) = summary["unresponsive"]
    assert row["unresponsive"] and row["reasons"]
    report = (random_model_run.run_dir / "report.md").read_text()
    assert "## Unresponsive check" in report and "## Repetition loops" in report

# --- long outputs are embedded whole -----------------------------------------

def test_outputs_differing_only_after_word_piece_300_are_apart(embedder):
    words = "the quick brown fox jumps over a lazy dog while the sun sets behind distant hills".split()
    base = " ".join(np.random.default_rng(0).choice(words, 330))
    a, b = base + " and then the answer is yes, certainly yes.", base + " but the answer is no, absolutely not."
    tok = embedder.model.tokenizer
    ia, ib = tok(a, add_special_tokens=False)["input_ids"], tok(b, add_special_tokens=False)["input_ids"]
    assert ia[:300] == ib[:300] and ia != ib
    va, vb = embedder.encode([a, b])
    assert np.linalg.norm(va) == pytest.approx(1.0, abs=1e-6)
    assert 1.0 - float(va @ vb) > 1e-4
    cut_a, cut_b = embedder._encode_plain([a, b])  # what the 256-piece window alone sees: (nearly) nothing
    assert 1.0 - float(cut_a @ cut_b) < 1e-6
    # a long text's vector does not depend on what else is embedded with it
    assert np.array_equal(embedder.encode(["short text", a, "another"])[1], va)
    info = embedder.info
    assert (info.long_text, info.window, info.overlap) == ("windows", 246, 61)
    assert len(embedder.windows([a])[0]) == 2 and embedder.count_windowed([a, "short"]) == 1


# --- no task signal (issue 30) ---------------------------------------------------

def _controls(pos: float, noop: float, n: int = 12):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(3)
    rows = []
    for k in range(n):
        for rung, v in (("identical", 0.0), ("noop_format", noop), ("positive_control", pos)):
            rows.append({"model": "m", "variant": "bf16", "length": 32, "prompt_id": f"p{k}", "pair_id": f"p{k}/{rung}",
                         "rung": rung, "prompt_key_a": f"k{k}", "emb_dist": v * rng.uniform(0.9, 1.1) if v else 0.0})
    return pd.DataFrame(rows)


def test_no_task_signal_fires_on_the_chaotic_case_only():
    from harness.summary.traps import no_signal_flags, unresponsive_table

    # The random-init figures: noop_format 0.697 against positive control 0.753, gap CI excluding 0.
    chaotic = unresponsive_table(_controls(0.753, 0.697), None)
    (row,) = chaotic
    assert row["gap_ci95"][0] > 0 and not row["unresponsive"]  # the absolute check is silent, as the issue found
    assert row["no_task_signal"] and row["relative_gap"] < 0.15
    (flag,) = no_signal_flags(chaotic)
    assert flag["flag"] == "no_task_signal" and "relative gap" in flag["detail"]
    # A demo-like model: invisible edits move little, a different task a lot.
    healthy = unresponsive_table(_controls(0.72, 0.10), None)
    assert healthy[0]["no_task_signal"] is False and no_signal_flags(healthy) == []
