"""The noise-floor verdict (issue 30): a variant whose identical rung moves as much as its edits is unmeasurable."""

import numpy as np
import pandas as pd

from harness.summary.floor import EXACT, NOISY, UNMEASURABLE, UNKNOWN, floor_flags, floor_table


def _pairs(floor: float, pert: float, n: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        rows.append({"rung": "identical", "emb_dist": floor * rng.uniform(0.5, 1.5) if floor else 0.0})
        for rung in ("noop_format", "punctuation", "positive_control"):
            v = 0.8 if rung == "positive_control" else pert * rng.uniform(0.5, 1.5)
            rows.append({"rung": rung, "emb_dist": v})
        for r in rows[-4:]:
            r["prompt_id"] = f"p{k}"
    df = pd.DataFrame(rows)
    return df.assign(model="m", variant="int8", length=32, pair_id=[f"x{i}" for i in range(len(df))])


def test_exact_noisy_unmeasurable():
    assert floor_table(_pairs(0.0, 0.3))[0]["verdict"] == EXACT
    noisy = floor_table(_pairs(0.05, 0.3))[0]
    assert noisy["verdict"] == NOISY and noisy["margin_ci95"][0] > 0
    # The int8: identical 0.277 against noop_format 0.287.
    bad = floor_table(_pairs(0.277, 0.287))[0]
    assert bad["verdict"] == UNMEASURABLE and "0.2" in bad["reason"]
    assert bad["n_identical_nonzero"] == 12 and bad["n_perturbed"] == 24  # positive control left out
    # SmolLM2 int8 on tasks-small (this machine): floor 0.122 against 0.252, a margin whose CI excludes 0 -- still
    # half of every distance is the decode's own noise.
    assert floor_table(_pairs(0.122, 0.252))[0]["verdict"] == UNMEASURABLE
    (flag,) = floor_flags([bad])
    assert flag["flag"] == "unmeasurable" and flag["variant"] == "int8"


def test_nan_rows_counted_and_no_identical_is_unknown():
    df = _pairs(0.0, 0.3)
    df.loc[df["rung"] == "punctuation", "emb_dist"] = np.nan
    row = floor_table(df)[0]
    assert row["n_missing"] == 12 and row["verdict"] == EXACT
    assert floor_table(df[df["rung"] != "identical"])[0]["verdict"] == UNKNOWN
