"""Variance decomposition (harness.summary.variance): the moment estimator against brute force and REML, planted
components recovered within their prompt-resampled intervals, one-level and confounded factors left out and said."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.summary.variance import _Design, decompose, henderson3, variance_table

RUNGS = ["noop_format", "punctuation", "structural", "casing", "typo", "filler"]


def _crossed(rng, n_prompts=30, rungs=RUNGS, models=("m1", "m2"), edits=2, sd_prompt=0.15, rung_fx=None,
             model_fx=None, sd_res=0.2, drop=0.0):
    """A pairs-like frame: y = prompt + rung + model + residual, ``drop`` of the rows removed (unbalanced)."""
    rung_fx = rung_fx if rung_fx is not None else rng.normal(0, 0.1, len(rungs))
    model_fx = model_fx if model_fx is not None else rng.normal(0, 0.1, len(models))
    p_fx = rng.normal(0, sd_prompt, n_prompts)
    rows = []
    for p in range(n_prompts):
        for r, rung in enumerate(rungs):
            for m, model in enumerate(models):
                for e in range(edits):
                    rows.append({"prompt_id": f"p{p:03d}", "rung": rung, "model": model, "variant": "bf16",
                                 "pair_id": f"p{p:03d}/{rung}/{e}",
                                 "emb_dist": 0.5 + p_fx[p] + rung_fx[r] + model_fx[m] + rng.normal(0, sd_res)})
    frame = pd.DataFrame(rows)
    if drop:
        frame = frame[rng.random(len(frame)) >= drop].reset_index(drop=True)
    return frame


def _codes(frame: pd.DataFrame, names=("prompt", "rung", "model")) -> dict[str, np.ndarray]:
    cols = {"prompt": "prompt_id", "rung": "rung", "model": "model"}
    return {f: pd.factorize(frame[cols[f]], sort=True)[0] for f in names}


def _brute(y: np.ndarray, codes: dict[str, np.ndarray]) -> dict[str, float]:
    """Method III from the full dummy matrices with numpy's least squares (no absorption, no sufficient statistics)."""
    n = y.size
    dum = {f: np.eye(int(c.max()) + 1)[c] for f, c in codes.items()}

    def fit(fs):
        x = np.hstack([np.ones((n, 1))] + [dum[f] for f in fs])
        beta, *_ = np.linalg.lstsq(x, y, rcond=None)
        r = y - x @ beta
        return float(r @ r), int(np.linalg.matrix_rank(x)), x

    rss, rank, _ = fit(list(codes))
    s2 = rss / (n - rank)
    out = {"residual": s2}
    for f in codes:
        rest = [g for g in codes if g != f]
        rss_f, rank_f, x = fit(rest)
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        u = u[:, s > s.max() * 1e-10]
        mz = dum[f] - u @ (u.T @ dum[f])
        out[f] = (rss_f - rss - (rank - rank_f) * s2) / float((mz * mz).sum())
    return out


def test_sufficient_statistics_equal_brute_force_least_squares_unbalanced_and_resampled():
    rng = np.random.default_rng(1)
    frame = _crossed(rng, n_prompts=12, drop=0.3)
    y = frame["emb_dist"].to_numpy()
    codes = _codes(frame)
    fit = henderson3(y, codes)
    brute = _brute(y, codes)
    for f in ("prompt", "rung", "model"):
        assert fit.components[f] == pytest.approx(brute[f], rel=1e-9, abs=1e-12)
    assert fit.residual == pytest.approx(brute["residual"], rel=1e-9)
    # A resample: prompt weights on the sufficient statistics == the rows copied, each copy its own prompt level.
    w = rng.multinomial(12, np.full(12, 1 / 12)).astype(float)
    take, new_prompt = [], []
    for k in np.flatnonzero(w):
        for copy in range(int(w[k])):
            idx = np.flatnonzero(codes["prompt"] == k)
            take.append(idx)
            new_prompt.append(np.full(idx.size, len(new_prompt)))
    take = np.concatenate(take)
    sub = {"prompt": np.concatenate(new_prompt),
           "rung": pd.factorize(codes["rung"][take], sort=True)[0], "model": pd.factorize(codes["model"][take], sort=True)[0]}
    brute_w = _brute(y[take], sub)
    fit_w = _Design(y, codes).fit(w)
    for f in ("prompt", "rung", "model"):
        assert fit_w.components[f] == pytest.approx(brute_w[f], rel=1e-8, abs=1e-12)
    assert fit_w.residual == pytest.approx(brute_w["residual"], rel=1e-8)


def test_balanced_design_matches_statsmodels_reml():
    sm = pytest.importorskip("statsmodels.formula.api")
    rng = np.random.default_rng(7)
    frame = _crossed(rng, n_prompts=25, rungs=RUNGS[:4], models=("m1", "m2", "m3"), edits=2, sd_prompt=0.3,
                     rung_fx=np.array([-0.3, 0.0, 0.1, 0.25]), model_fx=np.array([-0.2, 0.05, 0.3]))
    fit = henderson3(frame["emb_dist"].to_numpy(), _codes(frame))
    frame = frame.assign(one=1)
    vc = {"prompt": "0 + C(prompt_id)", "rung": "0 + C(rung)", "model": "0 + C(model)"}
    reml = sm.mixedlm("emb_dist ~ 1", frame, groups="one", vc_formula=vc).fit(reml=True)
    est = dict(zip(reml.model.exog_vc.names, reml.vcomp))
    # Balanced data, every estimate positive: REML and the ANOVA moments solve the same equations.
    for f in ("prompt", "rung", "model"):
        assert fit.components[f] == pytest.approx(est[f], rel=0.02)
    assert fit.residual == pytest.approx(reml.scale, rel=0.01)


def test_planted_components_are_recovered_within_their_intervals():
    """Coverage over repeated simulations: prompt effects drawn anew each time (the resampled unit); the rung and
    model effects fixed, so their truth is the variance of the planted effects (denominator L - 1)."""
    rng = np.random.default_rng(2026)
    rung_fx, model_fx = np.array([-0.15, -0.05, 0.0, 0.05, 0.1, 0.2]), np.array([-0.1, 0.1])
    truth = {"prompt": 0.15 ** 2, "rung": float(np.var(rung_fx, ddof=1)), "model": float(np.var(model_fx, ddof=1)),
             "residual": 0.2 ** 2}
    sims, covered, est = 40, {f: 0 for f in truth}, {f: [] for f in truth}
    for _ in range(sims):
        frame = _crossed(rng, n_prompts=40, rung_fx=rung_fx, model_fx=model_fx, drop=0.1)
        from harness.summary.variance import factor_frame

        out = decompose(frame["emb_dist"].to_numpy(), factor_frame(frame), resamples=200, seed=int(rng.integers(1 << 30)))
        for c in out["components"]:
            lo, hi = c["ci95"]
            covered[c["factor"]] += lo <= truth[c["factor"]] <= hi
            est[c["factor"]].append(c["estimate"])
    coverage = {f: covered[f] / sims for f in truth}
    print("coverage", coverage, "mean estimate / truth", {f: round(np.mean(est[f]) / truth[f], 3) for f in truth})
    for f in truth:
        assert coverage[f] >= 0.8, (f, coverage)
        assert np.mean(est[f]) == pytest.approx(truth[f], rel=0.2)  # unbiased moments: the mean lands on the truth


def test_one_level_factors_are_left_out_and_said_and_an_engine_fixed_by_its_variant_too():
    rng = np.random.default_rng(3)
    frame = _crossed(rng, n_prompts=10, models=("only",))
    out = variance_table(frame.assign(length=32, correct_a=np.nan, correct_b=np.nan), resamples=50)
    row = next(r for r in out if r["outcome"] == "emb_dist")
    assert {c["factor"] for c in row["components"]} == {"prompt", "rung", "residual"}  # no model row, not a 0
    assert row["left_out"]["model"].startswith("one level (only)")
    assert row["left_out"]["variant"].startswith("one level (bf16)") and "engine" in row["left_out"]
    # Two variants, each on its own engine: the engine adds no column; its variation is counted in the variant.
    two = pd.concat([frame, frame.assign(variant="q4_k_m@llamacpp",
                                         emb_dist=frame["emb_dist"] + rng.normal(0, 0.05, len(frame)))])
    row = next(r for r in variance_table(two.assign(length=32), resamples=50) if r["outcome"] == "emb_dist")
    assert "variant" in {c["factor"] for c in row["components"]}
    assert row["left_out"]["engine"].startswith("determined by variant")
    # correct_b all missing: said, not decomposed.
    gone = next(r for r in out if r["outcome"] == "correct_b")
    assert gone["not_computed"].startswith("no pair with a finite correct_b") and gone["n_pairs"] == 0


def test_noise_floor_is_the_identical_rungs_pooled_variance_exactly_zero_when_deterministic():
    rng = np.random.default_rng(4)
    frame = _crossed(rng, n_prompts=8).assign(length=32, correct_a=1.0, correct_b=1.0)
    ident = frame.drop_duplicates(["prompt_id", "model"]).assign(rung="identical", emb_dist=0.0)
    row = next(r for r in variance_table(pd.concat([frame, ident]), resamples=50) if r["outcome"] == "emb_dist")
    assert row["noise"]["variance"] == 0.0 and row["noise"]["share"] == 0.0 and row["noise"]["n_pairs"] == 16
    noisy = ident.assign(emb_dist=rng.random(len(ident)) * 0.1, correct_b=rng.integers(0, 2, len(ident)).astype(float))
    out = variance_table(pd.concat([frame, noisy]), resamples=50)
    row = next(r for r in out if r["outcome"] == "emb_dist")
    expect = noisy.groupby("model")["emb_dist"].var(ddof=1)  # equal counts: pooled = mean of the two
    assert row["noise"]["variance"] == pytest.approx(float(expect.mean()), rel=1e-12)
    corr = next(r for r in out if r["outcome"] == "correct_b")
    assert corr["noise"]["variance"] == pytest.approx(float(((1.0 - noisy["correct_b"]) ** 2).mean() / 2), rel=1e-12)
    # The identical rung is never one of the decomposed rungs.
    assert "identical" not in row["rungs"]
