"""Every pair metric, declared once: the pairs.parquet columns after the pair's identity, in column order.

A metric is one :class:`MetricSpec` here (or one ``harness.score.registry.register`` call): its column, how it
is computed from a :class:`harness.score.pair_view.PairView`, unit, what NaN means, how the summary aggregates
it, which direction is more stable, whether and how the gate may use it, and its report column. The
PairScore record, the summary means, the report's distances columns, the determinism check, the gate's
thresholds and the scorer version all derive from this list (harness.score.registry). Formulas are those of
``../shared/METRICS.md``.
"""

from __future__ import annotations

from harness.score.metrics.edit_distance import normalized_edit_distance, token_edit_distance
from harness.score.pair_view import TRIVIAL_SHIFT, PairView, cosine_distance
from harness.score.records import GateUse, MetricSpec

NAN_NO_ANSWER = "a side has no answer span (answer_missing)"
NAN_NO_FULL_ROW = "a side's full prompt-end row was not kept (read back without --store-full-dist)"
NAN_AGREE = "the prefixes agree (no first divergence within L)"
NAN_TWIN = ("not computed: the run had no --twin, or the cell's engine is not HF (cell.json `twin` says which), or the "
            "output read is empty")


def _answer_edit(v: PairView) -> float:
    return float("nan") if v.answer_missing else normalized_edit_distance(v.answer_ids_a, v.answer_ids_b)


def _twin(direction: str) -> tuple[MetricSpec, ...]:
    """The teacher-forced twin divergence of one direction (harness.score.twin): 'ab' reads side A's greedy output
    after prompt A (own) and after prompt B (other), 'ba' side B's output after prompt B and after prompt A."""
    own, other = ("A", "B") if direction == "ab" else ("B", "A")
    read = f"side {own}'s greedy output (first L steps, its end token included) read after prompt {own} and prompt {other}"

    def get(key: str):
        return lambda v: v.twin(direction, key)

    return (
        MetricSpec(f"twin_kl_{direction}", "float", get("kl"),
                   f"Teacher-forced twin divergence: mean over steps of KL(p_{own} || p_{other}), {read}. A belief "
                   "shift shows here even when no argmax changes; one low-margin flip amplified by free running does not.",
                   unit="nats", nan=NAN_TWIN, aggregate="mean", better="lower", identical_zero=True, optional=True,
                   report=f"twin KL ({own.lower()}'s output)", report_format="3g"),
        MetricSpec(f"twin_kl_max_{direction}", "float", get("kl_max"), f"Largest per-step KL of twin_kl_{direction}.",
                   unit="nats", nan=NAN_TWIN, better="lower", identical_zero=True, optional=True),
        MetricSpec(f"twin_top1_changed_{direction}", "float", get("top1_changed"),
                   f"1 / 0: at some step the argmax after prompt {other} is not the argmax after prompt {own}, on "
                   f"{own}'s tokens (teacher-forced: a flip of belief, not its free-running consequences).",
                   unit="1 / 0", nan=NAN_TWIN, aggregate="mean", better="lower", identical_zero=True, optional=True,
                   report="twin top-1 change" if direction == "ab" else ""),
        MetricSpec(f"twin_first_top1_{direction}", "float", get("first_top1"),
                   f"1-based first step where the two argmaxes of twin_kl_{direction} differ.",
                   unit="step", nan=NAN_TWIN + "; or no step differs within L (never 0: see twin_top1_changed)",
                   optional=True),
        MetricSpec(f"twin_llr_{direction}", "float", get("llr"),
                   f"log P(y_{own} | prompt {other}) - log P(y_{own} | prompt {own}) summed over the steps of "
                   f"twin_kl_{direction} (POSIX-style log-likelihood ratio; < 0: prompt {other} finds {own}'s output "
                   f"less likely; usually < 0, since each token is the argmax after prompt {own}: nearer 0 is more "
                   "stable).", unit="nats", nan=NAN_TWIN, aggregate="mean", better="higher", identical_zero=True,
                   optional=True),
        MetricSpec(f"twin_llr_tok_{direction}", "float", get("llr_tok"), f"twin_llr_{direction} per step read.",
                   unit="nats / token", nan=NAN_TWIN, aggregate="mean", better="higher", identical_zero=True, optional=True,
                   report="twin LLR / token" if direction == "ab" else "", report_format="3g"),
    )


BUILTIN: tuple[MetricSpec, ...] = (
    MetricSpec("emb_dist", "float", lambda v: v.emb_dist(),
               "1 - cos of MiniLM embeddings of the two decoded prefixes (raw output).",
               unit="cosine distance, [0, 2]", nan="a text embeds to the zero vector", aggregate="mean", better="lower",
               gate=GateUse("mean_emb_dist", 0.0, 2.0, "Mean output embedding distance (1 - cos) over the perturbed pairs."),
               identical_zero=True, report="embedding distance [95% CI]", report_ci=True),
    MetricSpec("emb_dist_answer", "float", lambda v: v.emb_dist(answer=True),
               "The same on the answer span: scaffold removed, first L answer tokens.",
               unit="cosine distance, [0, 2]", nan=NAN_NO_ANSWER, aggregate="mean", better="lower",
               identical_zero=True, answer_span=True, report="answer-span emb. distance [95% CI]", report_ci=True),
    MetricSpec("tok_edit", "int", lambda v: token_edit_distance(v.ids_a, v.ids_b),
               "Levenshtein distance (tokens) between the first L generated token ids of the two sides; 0 = equal.",
               unit="tokens", better="lower", identical_zero=True),
    MetricSpec("tok_edit_norm", "float", lambda v: normalized_edit_distance(v.ids_a, v.ids_b),
               "tok_edit / max(len_a, len_b); 0.0 when both sides are empty.",
               unit="[0, 1]", aggregate="mean", better="lower", identical_zero=True, report="token edit (norm)"),
    MetricSpec("tok_edit_norm_answer", "float", _answer_edit,
               "Normalized token edit distance of the answer spans.",
               unit="[0, 1]", nan=NAN_NO_ANSWER, aggregate="mean", better="lower", identical_zero=True, answer_span=True),
    MetricSpec("answer_missing", "bool", lambda v: v.answer_missing,
               "A side has no answer span (its scaffold never closed): the answer-span metrics are missing, not 0."),
    MetricSpec("first_div", "int", lambda v: v.first_div,
               "1-based first differing step within the first L tokens; 0 = identical prefixes.",
               unit="step", identical_zero=True),
    MetricSpec("lev_traj_max", "int", lambda v: int(v.traj.max()) if v.traj.size else 0,
               "max_t Lev(A[:t], B[:t]) for t <= L.", unit="tokens", better="lower", identical_zero=True),
    MetricSpec("lev_traj_mean", "float", lambda v: float(v.traj.mean()) if v.traj.size else 0.0,
               "Mean over t <= L of Lev(A[:t], B[:t]); 0.0 when both outputs are empty.", unit="tokens", better="lower"),
    MetricSpec("steps_above_shift", "int", lambda v: int((v.traj > TRIVIAL_SHIFT).sum()),
               f"Steps t <= L whose trajectory exceeds the trivial-shift line (d(t) > {TRIVIAL_SHIFT}).",
               unit="steps", better="lower", identical_zero=True),
    MetricSpec("hidden_dist", "float", lambda v: cosine_distance(v.ga.hidden_means[v.L], v.gb.hidden_means[v.L]),
               "Cosine distance of the mean post-norm hidden states over the first L steps.",
               unit="cosine distance, [0, 2]", nan="a side's mean state is the zero vector", aggregate="mean",
               better="lower", identical_zero=True, report="hidden dist"),
    MetricSpec("len_a", "int", lambda v: len(v.ids_a),
               "Generated tokens of side A within the first L (fewer than L when it stopped at EOS).", unit="tokens"),
    MetricSpec("len_b", "int", lambda v: len(v.ids_b), "The same for side B.", unit="tokens"),
    MetricSpec("answer_len_a", "int", lambda v: len(v.answer_ids_a),
               "Tokens of side A's answer span within its first L answer tokens (0 when the span is empty or missing).",
               unit="tokens"),
    MetricSpec("answer_len_b", "int", lambda v: len(v.answer_ids_b), "The same for side B.", unit="tokens"),
    MetricSpec("scaffold_a", "str", lambda v: v.sides.a.scaffold,
               "none / absent / closed / unclosed (see harness.score.scaffold)."),
    MetricSpec("scaffold_b", "str", lambda v: v.sides.b.scaffold, "The same for side B."),
    MetricSpec("min_margin_a", "float", lambda v: v.margins[0],
               "Smallest top-1 minus top-2 logit over side A's first L steps.", unit="logits", nan="side A is empty"),
    MetricSpec("min_margin_b", "float", lambda v: v.margins[1], "The same for side B.", unit="logits",
               nan="side B is empty"),
    MetricSpec("div_margin_a", "float", lambda v: v.margins[2], "Side A's margin at the first-divergence step.",
               unit="logits", nan=NAN_AGREE),
    MetricSpec("div_margin_b", "float", lambda v: v.margins[3], "Side B's margin at the first-divergence step.",
               unit="logits", nan=NAN_AGREE),
    MetricSpec("div_margin_pct_a", "float", lambda v: v.margins[4],
               "Percentile of div_margin_a within side A's first L margins: low = the split came at a low-margin step.",
               unit="percentile, 0-100", nan=NAN_AGREE),
    MetricSpec("div_delta_tcb_a", "float", lambda v: v.at_first_div(v.ga.trace_delta_tcb),
               "Side A's Token Constraint Bound at the first-divergence step.", unit="hidden-state norm",
               nan=NAN_AGREE + ", or the trace is unavailable"),
    MetricSpec("div_flip_radius_a", "float", lambda v: v.at_first_div(v.ga.trace_flip_radius),
               "Side A's argmax-flip radius at the first-divergence step.", unit="hidden-state norm",
               nan=NAN_AGREE + ", or the trace is unavailable"),
    MetricSpec("js", "float", lambda v: v.prompt_end[0],
               "Jensen-Shannon divergence of the two prompt-end next-token distributions.", unit="nats",
               nan=NAN_NO_FULL_ROW, aggregate="mean", better="lower", identical_zero=True, report="prompt-end JS",
               report_format="3g"),
    MetricSpec("kl_ab", "float", lambda v: v.prompt_end[1], "KL(a || b) of the prompt-end distributions.",
               unit="nats", nan=NAN_NO_FULL_ROW, better="lower", identical_zero=True),
    MetricSpec("kl_ba", "float", lambda v: v.prompt_end[2], "KL(b || a) of the prompt-end distributions.",
               unit="nats", nan=NAN_NO_FULL_ROW, better="lower", identical_zero=True),
    MetricSpec("top1_flip", "bool", lambda v: bool(v.prompt_end[3]), "The two prompt-end argmax tokens differ.",
               aggregate="rate", better="lower", identical_zero=True,
               gate=GateUse("flip_rate", 0.0, 1.0, "Share of perturbed pairs whose prompt-end top-1 token differs."),
               report="top-1 flip rate"),
    MetricSpec("top1_prob_a", "float", lambda v: v.prompt_end[4],
               "Probability of side A's prompt-end top-1 token.", unit="probability", nan="an empty row"),
    MetricSpec("top1_prob_b", "float", lambda v: v.prompt_end[5], "The same for side B.", unit="probability",
               nan="an empty row"),
    MetricSpec("margin_a", "float", lambda v: v.prompt_end[6],
               "Side A's prompt-end log-probability margin of the top two tokens (= their logit margin).",
               unit="nats", nan="fewer than two tokens in the row"),
    MetricSpec("margin_b", "float", lambda v: v.prompt_end[7], "The same for side B.", unit="nats",
               nan="fewer than two tokens in the row"),
    MetricSpec("prompt_key_a", "str", lambda v: v.ga.prompt_key,
               "Key of side A's rendered prompt ids (harness.decode.greedy.prompt_key: 16 hex digits of a sha256)."),
    MetricSpec("prompt_key_b", "str", lambda v: v.gb.prompt_key, "The same for side B."),
    MetricSpec("correct_a", "float", lambda v: v.correct_a,
               "1 / 0: side a's answer span passes its expected answer's check (harness.score.answers).",
               unit="1 / 0", nan="no expected answer, or no answer span"),
    MetricSpec("correct_b", "float", lambda v: v.correct_b,
               "The same for side b, against side b's expected answer.", unit="1 / 0",
               nan="no expected answer, or no answer span"),
    MetricSpec("answer_flip", "float", lambda v: abs(v.correct_a - v.correct_b),
               "|correct_a - correct_b|: the pair's correctness flipped (either direction).", unit="1 / 0",
               nan="a side's correctness is nan", better="lower",
               gate=GateUse("answer_flip_rate", 0.0, 1.0,
                            "Share of perturbed pairs whose answer correctness differs between the sides (needs `answer`).",
                            needs_answer=True)),
) + _twin("ab") + _twin("ba")
"""The built-in pair metrics, in pairs.parquet column order (after harness.score.records.PairIdentity)."""


