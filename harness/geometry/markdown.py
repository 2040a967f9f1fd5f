"""geometry.md and the terminal lines of the study."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.geometry.config import CLASS_ORDER, N_COMPETITORS, TWO_TOKEN_MASS, TWO_TOKEN_P1
from harness.geometry.summarize import _eps_key
from harness.report.text import fmt_study


_f = fmt_study  # the study tables' one number format (harness.report.text)


def _cell(c: dict | None) -> str:
    if not c or c.get("median") is None:
        return "–"
    lo, hi = c.get("ci", [None, None])
    return f"{_f(c['median'])} [{_f(lo)}, {_f(hi)}] (n={c['n']}/{c['n_positions']})"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.1f}%"


def _ci(c: dict, key: str) -> str:
    if c.get(key) is None:
        return "–"
    lo, hi = c.get(f"{key}_ci", [None, None])
    return f"{_f(c[key])} [{_f(lo)}, {_f(hi)}]"


_SUBSET_TITLE = {"all": "every swept position", "outside_two_token": "outside the two-token regime",
                 "confident": "confident positions (top-1 ≥ 0.9)",
                 "two_token": "two-token regime (ρ ≈ 1 by construction)"}


def seed_claim_lines(m: dict[str, Any]) -> list[str]:
    """The seed's 1% / 8% claim on this model: the verdict, then the ratio table per class and ε."""
    v, ratios = m.get("verdict") or {}, m.get("ratios") or {}
    if not ratios or v.get("eps") is None:
        return []
    lines = ["#### The seed's claim: within 1% (top eigenvector, small ε) and within 8% across architectures", ""]
    lines.append(
        f"Headline regime: {v['regime']}, class {v['class']}, ε = {_f(v['eps'], 2)}: {v['n_swept_positions']} positions, "
        f"{v['n_two_token_positions']} of them in the two-token regime ({v['two_token_definition']}), "
        f"{v.get('n_confident_positions')} confident ({v.get('confident_definition')}). "
        "ratio = t_emp / t*, ρ = ratio² (the seed's quantity); medians with 95% CIs that resample base prompts."
    )
    lines.append("")
    lines.append("| subset | positions / prompts | median ρ [CI] | median ratio [CI] | 1% claim | 8% claim |")
    lines.append("|---|---|---|---|---|---|")
    for sub in ("all", "outside_two_token", "confident", "two_token"):
        x = v.get(sub)
        if not x:
            continue
        c = x["cell"]
        lines.append(f"| {_SUBSET_TITLE[sub]} | {c['n_positions']} / {c['n_prompts']} | {_ci(c, 'rho')} | {_ci(c, 'ratio')} "
                     f"| {x['within_1pct']} | {x['within_8pct']} |")
    lines.append("")
    others = v.get("other_classes_rho", {})
    near = [abs(r - 1) <= 0.08 for k, r in others.items() if not k.startswith("eig1") and r is not None]
    note = ("every class is within 8% of 1 too: at this ε every direction is still in the quadratic limit, so the top "
            "eigenvector is not what makes it exact" if near and all(near) else
            "classes outside 8% of 1 exist at this ε, so the comparison is direction-discriminating")
    lines.append("(holds: median ρ and its whole CI inside 1 ± band; consistent: the median inside, the CI across "
                 "an edge; not shown: the median outside, the CI across; fails: the CI outside.) At the same ε, median ρ "
                 "of the other classes: " + ", ".join(f"{k} {_f(r)}" for k, r in others.items()) + f" ({note}).")
    lines.append("")
    eps = list(ratios)
    for sub in ("all", "confident"):
        lines.append(f"Boundary ratio t_emp / t* by direction class and ε, {_SUBSET_TITLE[sub]} (median [95% CI, base "
                     "prompts resampled]; share of measurements within 1% / 8% of 1; n = measurements / positions / prompts):")
        lines.append("")
        lines.append("| class | " + " | ".join(f"ε = {e}" for e in eps) + " |")
        lines.append("|---|" + "---|" * len(eps))
        for cls in next(iter(ratios.values()))[sub]:
            cells = []
            for e in eps:
                c = ratios[e][sub][cls]
                cells.append("–" if c.get("ratio") is None else
                             f"{_ci(c, 'ratio')}; {_pct(c['within_1pct'])} / {_pct(c['within_8pct'])} "
                             f"(n={c['n']}/{c['n_positions']}/{c['n_prompts']})")
            lines.append(f"| {cls} | " + " | ".join(cells) + " |")
        lines.append("")
    big = eps[-1]
    cal = m.get("calibration", {}).get(big, {})
    if cal:
        lines.append(f"Calibrated accuracy at ε = {big} (share within 50% of t_emp; isotonic on log t*, 5-fold CV "
                     "grouped by base prompt): " + ", ".join(
                         f"{c} {_pct(s['share_raw'])} raw → {_pct(s['share_calibrated'])}" for c, s in cal.items()) + ".")
        lines.append("")
    return lines


def render_geometry_markdown(summary: dict[str, Any]) -> str:
    """The report section: every class, ε and stratum, then the paper's checks."""
    eps = [_eps_key(e) for e in summary.get("eps", [])]
    lines = ["## Local geometry: closed forms against the head", ""]
    lines.append(
        "ρ = ½ t_emp² vᵀFv / ε (1 = the Fisher quadratic is exact); cells are median [95% CI, positions "
        "resampled] (n = directions / positions). Two-token regime: "
        f"top-2 mass ≥ {TWO_TOKEN_MASS}, top-1 in [{TWO_TOKEN_P1[0]}, {TWO_TOKEN_P1[1]}]. Eigenvectors count with both signs."
    )
    lines.append("")
    for name, m in summary.get("models", {}).items():
        lines.append(f"### {name}")
        lines.append("")
        if m.get("status") != "ok":
            lines += [f"FAILED: {m.get('error')}", ""]
            continue
        hl = m["headline"]
        head = m.get("head", {})
        lines.append(
            f"{m['n_prompts']} prompts, {m['n_positions']} positions ({m['n_prompt_end_positions']} prompt ends), "
            f"{m['n_swept_positions']} swept, {m['n_two_token_positions']} of them in the two-token regime "
            f"({_pct(m['share_two_token'])} of all positions). Head: post map {head.get('post')}"
            f"{'' if head.get('post_value') is None else ' ' + _f(head.get('post_value'))}, bias {_f(head.get('bias'))}, "
            f"g(Wh+b) vs the model's logits max rel. error {_f(head.get('check_max_rel_err'), 2)}."
        )
        lines.append("")
        lines += seed_claim_lines(m)
        verdict = "–" if hl.get("in_range") is None else ("inside" if hl["in_range"] else "OUTSIDE")
        by_sign = hl.get("by_sign", {})
        lines.append(
            f"Headline ρ (ε = {_f(hl['eps'], 2)}, top eigenvector, every swept position; CI resamples positions): ρ = {_cell(hl)}; "
            f"{verdict} [{hl['range'][0]}, {hl['range'][1]}]. By sign: +v (towards the top token) "
            f"{_cell(by_sign.get('+'))}, −v {_cell(by_sign.get('-'))}."
        )
        lines.append("")
        for subset, title in (("all", "all swept positions"), ("two_token", "two-token regime")):
            lines.append(f"ρ by direction class, {title}:")
            lines.append("")
            lines.append("| class | " + " | ".join(f"ε = {e}" for e in eps) + " |")
            lines.append("|---|" + "---|" * len(eps))
            for cls in CLASS_ORDER:
                lines.append(f"| {cls} | " + " | ".join(_cell(m["rho"][e][subset].get(cls)) for e in eps) + " |")
            lines.append("")
        ranks = list(next(iter(m["rho_by_rank"].values()), {}).keys())
        if ranks:
            lines.append("ρ by eigenvector rank (all swept positions):")
            lines.append("")
            lines.append("| rank | " + " | ".join(f"ε = {e}" for e in eps) + " |")
            lines.append("|---|" + "---|" * len(eps))
            for r in ranks:
                lines.append(f"| {r} | " + " | ".join(_cell(m["rho_by_rank"][e].get(r)) for e in eps) + " |")
            lines.append("")
        for col, title in (("entropy", "entropy (nats)"), ("eff_rank", "effective Fisher rank")):
            st = m.get("strata", {}).get(col)
            if not st or not st.get("cells"):
                continue
            for e in eps:
                lines.append(f"Median ρ by {title} quintile, ε = {e}:")
                lines.append("")
                lines.append("| stratum | range | positions | " + " | ".join(CLASS_ORDER) + " |")
                lines.append("|---|---|---|" + "---|" * len(CLASS_ORDER))
                for c in st["cells"]:
                    vals = c["rho"].get(e, {})
                    lines.append(f"| {c['stratum'] + 1} | {_f(c['lo'])}–{_f(c['hi'])} | {c['n_positions']} | "
                                 + " | ".join(_f(vals.get(cls)) for cls in CLASS_ORDER) + " |")
                lines.append("")
        sv = m.get("stratifier_variance", {})
        if sv:
            lines.append("Mean within-cell variance of log ρ (top eigenvector; cells = quintile × sign; lower = the property sorts ρ better):")
            lines.append("")
            lines.append("| ε | entropy | effective Fisher rank | top-1 probability |")
            lines.append("|---|---|---|---|")
            for e in eps:
                v = sv.get(e, {})
                lines.append(f"| {e} | {_f(v.get('entropy'), 4)} | {_f(v.get('eff_rank'), 4)} | {_f(v.get('top1_prob'), 4)} |")
            lines.append("")
        lines.append("Calibration (share of held-out predictions within 50% of t_emp; isotonic on log t*, 5-fold CV grouped by base prompt):")
        lines.append("")
        lines.append("| ε | class | n | raw | calibrated |")
        lines.append("|---|---|---|---|---|")
        for e in eps:
            for c, s in m["calibration"][e].items():
                lines.append(f"| {e} | {c} | {s['n']} | {_pct(s['share_raw'])} | {_pct(s['share_calibrated'])} |")
        lines.append("")
        lines.append("Per-position Spearman of t* vs t_emp across directions:")
        lines.append("")
        lines.append("| ε | positions | median | 10% | 90% | min | max |")
        lines.append("|---|---|---|---|---|---|---|")
        for e in eps:
            s = m["spearman"][e]
            lines.append(f"| {e} | {s.get('n_positions', 0)} | {_f(s.get('median'))} | {_f(s.get('q10'))} | "
                         f"{_f(s.get('q90'))} | {_f(s.get('min'))} | {_f(s.get('max'))} |")
        lines.append("")
        ck = m["checks"]
        jc = m.get("jacobian_check", {})
        cd = ck["cluster_disperse"]
        lines.append("TCB checks:")
        lines.append("")
        if jc.get("n"):
            lines.append(f"- ‖J‖_F closed form vs autograd on {jc['n']} positions: max rel. error "
                         f"{_f(jc['max_rel_err_fp64'], 2)} (fp64), {_f(jc['max_rel_err_fp32'], 2)} (fp32); closed-form J v "
                         f"vs autograd JVP {_f(jc.get('jvp_max_rel_err'), 2)}, rows of J vs VJP {_f(jc.get('vjp_max_rel_err'), 2)} "
                         f"({jc.get('method', '')}).")
        else:
            lines.append(f"- ‖J‖_F vs autograd: {jc.get('note', 'not run')}.")
        lines.append(f"- Cluster/disperse (top-{N_COMPETITORS} competitors moved halfway, h and p fixed): "
                     f"δ(cluster) > δ(orig) > δ(disperse) at {_pct(cd['share_all'])} of {cd['n_all']} positions, "
                     f"{_pct(cd['share_prompt_end'])} of {cd['n_prompt_end']} prompt ends; median δ ratio "
                     f"cluster/orig {_f(cd['median_ratio_cluster'])}, disperse/orig {_f(cd['median_ratio_disperse'])}.")
        lines.append("")
        lines.append(f"Correlation of δ_TCB with V_eff and with the logit margin (low_veff: V_eff ≤ {ck['low_veff_max']}, "
                     f"high_veff: V_eff ≥ {ck.get('high_veff_min')}):")
        lines.append("")
        lines.append("| subset | n | δ~V_eff Spearman | δ~V_eff Pearson | δ~margin Spearman | δ~margin Pearson |")
        lines.append("|---|---|---|---|---|---|")
        for sub, c in ck["correlations"].items():
            a, b = c["delta_vs_veff"], c["delta_vs_margin"]
            lines.append(f"| {sub} | {c['n']} | {_f(a['spearman'])} | {_f(a['pearson'])} | {_f(b['spearman'])} | {_f(b['pearson'])} |")
        lines.append("")
        bb = m.get("boundary_vs_bulk", {})
        if bb.get("n_pairs"):
            lines.append(
                f"Boundary beats bulk: over {bb['n_diverged']} diverging perturbed pairs (of {bb['n_pairs']}), the "
                f"first-divergence step's margin sits at the {_f(bb['median_margin_percentile'], 1)}th percentile "
                f"(median) of output A's own trace; {_pct(bb['share_below_50'])} below the median step "
                f"(flip radius: {_f(bb['median_flip_radius_percentile'], 1)}th, δ_TCB: {_f(bb['median_delta_tcb_percentile'], 1)}th)."
            )
            lines.append("")
            lines.append("| rung | diverged | median percentile | share below 50 |")
            lines.append("|---|---|---|---|")
            for rung, r in bb["by_rung"].items():
                lines.append(f"| {rung} | {r['n']} | {_f(r['median'], 1)} | {_pct(r['share_below_50'])} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def terminal_geometry(summary: dict[str, Any]) -> str:
    lines = []
    for name, m in summary.get("models", {}).items():
        if m.get("status") != "ok":
            lines.append(f"{name}: FAILED {m.get('error')}")
            continue
        hl = m["headline"]
        v = m.get("verdict") or {}
        claim = "" if "all" not in v else (f"; seed's claim within 1%: {v['all']['within_1pct']}, within 8%: "
                                             f"{v['all']['within_8pct']} ({v['n_two_token_positions']} swept positions "
                                             "in the two-token regime)")
        lines.append(f"{name}: {m['n_positions']} positions, {m['n_swept_positions']} swept; "
                     f"ρ(eig1, ε={_f(hl['eps'], 2)}, every swept position) = {_cell(hl)}{claim}")
    return "\n".join(lines)
