"""`stabprobe geometry` end to end on the demo chat model, and the study's components."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.stability.calibration import calibrate, grouped_folds, isotonic_fit, per_position_spearman
from harness.stability.closed_form import head_state, local_stability
from harness.stability.fisher import fisher_topk
from harness.stability.directions import build_directions, direction_meta, stable_seed
from harness.stability.records import DirectionSpec
from harness.summary.clustered import median_ci
from harness.stability.head import HeadSpec, row_norms_sq

ROOT = Path(__file__).resolve().parents[2]


def _tiny_chat() -> Path:
    for p in (ROOT / "models" / "tiny-chat", Path("/tmp/sp/tiny-chat")):
        if (p / "config.json").is_file():
            return p
    pytest.skip("demo model tiny-chat is not available")


@pytest.fixture()
def ladder_json(tmp_path) -> Path:
    pairs = [
        {"id": "p1", "category": "punctuation", "prompt_a": "Reverse the word apple.", "prompt_b": "Reverse the word apple!"},
        {"id": "p2", "category": "synonym", "prompt_a": "Spell apple backwards.", "prompt_b": "Spell apple in reverse."},
        {"id": "p3", "category": "control_identical", "prompt_a": "What is 7 plus 5?", "prompt_b": "What is 7 plus 5?"},
    ]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(pairs), encoding="utf-8")
    return path


def test_geometry_end_to_end(tmp_path, ladder_json):
    from harness.ladder.load import load_ladder
    from harness.models.registry import entry_for_local_dir
    from harness.geometry.study import GeometryConfig, run_geometry

    torch.set_num_threads(1)
    cfg = GeometryConfig(models=(entry_for_local_dir(_tiny_chat()),), ladder=load_ladder(ladder_json), out=tmp_path / "runs",
                         max_new_tokens=4, max_positions=8, k=16, n_bootstrap=50, n_jacobian_checks=2,
                         directions=DirectionSpec(n_random=3, n_tangent=3, n_negative=3))
    result = run_geometry(cfg)
    assert result.exit_code == 0, result.summary
    run = result.run_dir
    for name in ("geometry.parquet", "geometry_positions.parquet", "geometry_pairs.parquet", "geometry_summary.json",
                 "geometry.md", "manifest.json"):
        assert (run / name).is_file(), name
    assert run.name.endswith("-geometry")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["command"] == "geometry"
    assert manifest["models"][0]["status"] == "ok"

    df = pd.read_parquet(run / "geometry.parquet")
    pos = pd.read_parquet(run / "geometry_positions.parquet")
    assert set(df["eps"]) == {0.01, 0.1, 1.0}
    assert df["position_id"].nunique() == 8 == int(pos["swept"].sum())
    assert set(df["direction_class"]) == {"eig", "structured", "random", "tangent", "negative"}
    core = df[df["direction_class"] != "negative"]
    for col in ("t_star", "t_emp", "rho", "vFv"):
        assert np.isfinite(core[col]).all(), col
    assert (core["rho"] > 0).all()
    for col in ("margin", "delta_tcb", "flip_radius", "v_eff", "entropy", "eff_rank", "delta_cluster", "delta_disperse"):
        assert np.isfinite(pos[col]).all(), col
    assert (pos["v_eff"] >= 1 - 1e-5).all() and (pos["margin"] >= 0).all()
    # five distinct prompts (the identical pair renders once), one prompt end each
    assert int(pos["is_prompt_end"].sum()) == 5

    s = json.loads((run / "geometry_summary.json").read_text())
    m = s["models"]["tiny-chat"]
    assert m["head"]["check_max_rel_err"] < 1e-3
    assert m["jacobian_check"]["n"] == 2 and m["jacobian_check"]["max_rel_err_fp64"] < 1e-8
    assert m["jacobian_check"]["max_rel_err_fp32"] < 1e-3
    # the closed-form J itself against autograd JVPs (random directions) and VJPs (a vocabulary subset), fp64
    assert m["jacobian_check"]["jvp_max_rel_err"] < 1e-10 and m["jacobian_check"]["vjp_max_rel_err"] < 1e-10
    # the ratio table: prompt-level cells whose counts add up across the two regimes, ρ = ratio²
    assert set(pos["base_prompt"]) == {"p1", "p2", "p3"}
    r = m["ratios"]["0.01"]
    assert r["all"]["eig1"]["n"] == 16 == r["two_token"]["eig1"]["n"] + r["outside_two_token"]["eig1"]["n"]
    assert r["all"]["eig1"]["n_prompts"] <= 3 and r["all"]["eig1"]["n_positions"] == 8
    sub = df[(df["eps"] == 0.01) & (df["direction_class"] == "eig") & (df["eig_rank"] == 1)]
    ratio = sub["t_emp"] / sub["t_star"]
    assert r["all"]["eig1"]["ratio"] == pytest.approx(float(np.median(ratio)), rel=1e-12)
    assert r["all"]["eig1"]["rho"] == pytest.approx(float(np.median(ratio ** 2)), rel=1e-12)
    assert r["all"]["eig1"]["within_8pct"] == pytest.approx(float(np.mean(np.abs(ratio - 1) <= 0.08)))
    v = m["verdict"]
    assert v["eps"] == 0.01 and v["n_swept_positions"] == 8
    assert v["n_two_token_positions"] == int(pos.loc[pos["swept"], "two_token"].sum())
    assert v["all"]["within_1pct"] in ("holds", "consistent", "not shown", "fails", "no data")
    assert m["rho"]["0.01"]["all"]["eig1+"]["n"] == 8
    eig1 = m["rho"]["0.01"]["all"]["eig1"]
    # Eight low-entropy positions say little about the size of rho (the two-token-regime
    # figure comes from the full study); what must hold is finiteness and the sign
    # asymmetry of the cubic term: moving towards the top token (+v) needs more KL budget.
    assert eig1["n"] == 16 and 0 < eig1["median"] < float("inf")
    assert m["rho"]["0.01"]["all"]["eig1-"]["median"] <= m["rho"]["0.01"]["all"]["eig1+"]["median"]
    assert eig1["ci"][0] <= eig1["median"] <= eig1["ci"][1]
    assert set(m["calibration"]["1"]) >= {"pooled", "eig", "structured", "random", "tangent"}
    assert 0 <= m["checks"]["cluster_disperse"]["share_all"] <= 1
    assert set(m["checks"]["correlations"]) == {"all", "prompt_end", "low_veff", "high_veff"}
    assert m["boundary_vs_bulk"]["n_pairs"] == 2
    md = (run / "geometry.md").read_text()
    for text in ("## Local geometry", "### tiny-chat", "The seed's claim", "Boundary ratio t_emp / t*", "Calibration", "Cluster/disperse", "Spearman",
                 "entropy (nats) quintile"):
        assert text in md


def test_geometry_cli_and_bad_flags(tmp_path, ladder_json, capsys):
    from harness.cli import main

    out = tmp_path / "cli-runs"
    assert main(["geometry", "--models", str(_tiny_chat()), "--ladder", str(ladder_json), "--out", str(out),
                 "--eps", "0.1", "--max-new-tokens", "2", "--max-positions", "3", "--k", "8"]) == 0
    runs = list(out.iterdir())
    assert len(runs) == 1 and (runs[0] / "geometry.md").is_file()
    bad = tmp_path / "bad"
    for flags in (["--eps", "0,1"], ["--eps", "x"], ["--max-positions", "0"], ["--k", "3"], ["--max-new-tokens", "-1"]):
        assert main(["geometry", "--models", str(_tiny_chat()), "--ladder", str(ladder_json), "--out", str(bad), *flags]) == 2
    assert not bad.exists()
    capsys.readouterr()
    # One validation (the library's), one minimum for --k: the sweep's 7 eigenvectors.
    assert main(["geometry", "--models", str(_tiny_chat()), "--ladder", str(ladder_json), "--k", "6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--k: 6: expected an integer ≥ 7" in err[0], err


# -- components -----------------------------------------------------------------


def _random_state(seed=0, V=60, d=24, n=4):
    g = torch.Generator().manual_seed(seed)
    head = HeadSpec(torch.randn(V, d, generator=g, dtype=torch.float64))
    H = torch.randn(n, d, generator=g, dtype=torch.float64) * 1.5
    state = head_state(H, head)
    st = local_stability(state, head, row_norms_sq(head))
    fk = fisher_topk(state, head, k=12, n_vectors=7, orient=-st.mu_minus_top)
    return head, state, st, fk


def test_directions_are_unit_seeded_and_in_their_spaces():
    head, state, st, fk = _random_state()
    spec = DirectionSpec()
    keys = [f"m/pos{i}" for i in range(state.n)]
    dirs, valid, meta = build_directions(keys, head, state, st, fk, spec)
    assert dirs.shape == (state.n, len(direction_meta(spec)), head.hidden_size) and valid.all()
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(dirs.shape[:2], dtype=dirs.dtype))
    cls = np.asarray(meta.cls)
    # eigenvectors with both signs, + raising the top token against μ̃
    eig = dirs[:, cls == "eig"]
    assert torch.allclose(eig[:, 0], -eig[:, 1])
    assert (torch.einsum("nd,nd->n", eig[:, 0], -st.mu_minus_top) >= 0).all()
    # tangent in span{w̃_i − μ̃ : top-k}, negative orthogonal to it
    mu = head.weight[st.top1_id] + st.mu_minus_top
    A = head.weight[fk.idx] - mu[:, None, :]  # [N, k, d]
    for i in range(state.n):
        Q, _ = torch.linalg.qr(A[i].T)
        t = dirs[i, cls == "tangent"]
        assert torch.allclose(t @ Q @ Q.T, t, atol=1e-10)
        z = dirs[i, cls == "negative"]
        assert float((A[i] @ z.T).abs().max()) < 1e-10
    # seeded from the key: the same position gets the same draws alone or in company
    alone, _, _ = build_directions(keys[2:3], head, head_state(state.h[2:3], head),
                                   local_stability(head_state(state.h[2:3], head), head, row_norms_sq(head)),
                                   fisher_topk(head_state(state.h[2:3], head), head, k=12, n_vectors=7), spec)
    rnd = cls == "random"
    assert torch.equal(alone[0, rnd], dirs[2, rnd])
    assert not torch.equal(dirs[0, rnd], dirs[1, rnd])
    assert stable_seed("a", 1) == stable_seed("a", 1) != stable_seed("a", 2)


def test_isotonic_calibration_recovers_a_monotone_bias():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"p{i}" for i in range(40)], 10)
    ts = np.exp(rng.normal(0, 1, groups.size))
    te = 3.0 * ts  # raw t* is always off by more than 50%
    cal = calibrate(ts, te, groups, np.array(["a", "b"] * (groups.size // 2)))
    assert cal["pooled"].share_raw == 0.0
    assert cal["pooled"].share_calibrated > 0.95
    assert cal["a"].n + cal["b"].n == cal["pooled"].n == groups.size
    folds = grouped_folds(groups)
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    fit = isotonic_fit(np.array([3.0, 1.0, 2.0, 2.0]), np.array([1.0, 0.0, 2.0, 0.0]))
    assert np.all(np.diff(fit.y) >= 0) and fit.predict(np.array([-5.0]))[0] == fit.y[0]
    sp = per_position_spearman(ts, te, groups)
    assert sp.size == 40 and np.allclose(sp, 1.0)


def test_median_ci_resamples_positions():
    v = np.r_[np.full(10, 1.0), np.full(10, 2.0)]
    g = np.r_[np.arange(10), np.arange(10)]  # each position holds one 1.0 and one 2.0
    c = median_ci(v, g, 500, 1)
    assert c["median"] == 1.5 and c["ci"] == [1.5, 1.5] and c["n_positions"] == 10
    c2 = median_ci(np.arange(50.0), np.arange(50), 500, 1)
    assert c2["ci"][0] < c2["median"] < c2["ci"][1]
    assert median_ci(np.array([math.nan]), np.array([0]), 10, 1)["median"] is None


def test_weighted_bootstrap_medians_match_expanded_resamples():
    from harness.summary.clustered import _weighted_medians

    rng = np.random.default_rng(3)
    P = 30
    g = rng.integers(0, P, 200)
    v = rng.lognormal(size=200)
    order = np.argsort(v, kind="stable")
    vs, gs = v[order], g[order]
    counts = rng.multinomial(P, np.full(P, 1.0 / P), size=40)
    got = _weighted_medians(vs, gs, counts)
    for b in range(40):
        expanded = np.concatenate([v[g == p].repeat(0) if counts[b, p] == 0 else np.tile(v[g == p], counts[b, p]) for p in range(P)])
        assert got[b] == pytest.approx(np.median(expanded), rel=1e-12)


def test_per_position_spearman_matches_scipy():
    from scipy import stats

    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(12), 9)
    a = rng.normal(size=g.size)
    b = a + rng.normal(size=g.size)
    b[:4] = 1.0  # ties
    got = per_position_spearman(a, b, g)
    want = [stats.spearmanr(a[g == i], b[g == i]).statistic for i in sorted(range(12), key=str)]  # groups in string order
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_collected_states_use_the_batch_invariant_linears():
    """collect_states runs under harness.decode.invariant: forcing the fixed-row chunking on the demo model (whose
    kernels are invariant, so it must change no bit) gives the same traces, and the model's layers are restored."""
    import numpy as np
    import torch

    from harness.decode.invariant import CHUNK_ROWS
    from harness.decode.records import LinearInvariance
    from harness.geometry.collect import collect_states
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    entry = load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"]
    plain, forced = load_model(entry), load_model(entry)
    prompts = {f"p{i}": tuple(plain.tokenizer.encode(t)) for i, t in enumerate(["Hi there", "Name a colour.", "Hi you"])}
    ref, _ = collect_states(plain, prompts, 6)
    assert plain.linear_invariance.invariant
    forced.linear_invariance = LinearInvariance(False, 1, ("forced by the test",), CHUNK_ROWS)
    got, _ = collect_states(forced, prompts, 6)
    assert ref.keys() == got.keys()
    for k in ref:
        a, b = ref[k], got[k]
        for f in a.__dataclass_fields__:
            x, y = getattr(a, f), getattr(b, f)
            if isinstance(x, torch.Tensor):
                assert torch.equal(x, y), (k, f)
            else:
                assert (np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y), (k, f)
    assert all("forward" not in m.__dict__ for m in forced.model.modules())


def test_band_verdicts_follow_the_ci():
    from harness.geometry.ratios import _band_verdict

    assert _band_verdict({"rho": 1.002, "rho_ci": [0.999, 1.005]}, 0.01) == "holds"
    assert _band_verdict({"rho": 1.005, "rho_ci": [0.98, 1.02]}, 0.01) == "consistent"
    assert _band_verdict({"rho": 1.05, "rho_ci": [1.0, 1.1]}, 0.01) == "not shown"
    assert _band_verdict({"rho": 1.05, "rho_ci": [1.047, 1.062]}, 0.01) == "fails"
    assert _band_verdict({"rho": 1.054, "rho_ci": [1.047, 1.062]}, 0.08) == "holds"  # the seed's Llama-3.2-1B figure
    assert _band_verdict({"rho": None, "rho_ci": [None, None]}, 0.08) == "no data"
