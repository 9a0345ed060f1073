"""The quality benchmark's report: markdown tables and PNG plots from its results."""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.quality_plan import ML_ARCHS, Plan, dense_parameters, matched_ffn_mult
from schemas.contracts import TASKS
from trainer.model_config import PRESETS


def _runs(runs: dict, prefix: str) -> list[dict]:
    return [v for k, v in sorted(runs.items()) if k.startswith(prefix)]


def _stat(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _metric(entries: list[dict], L, task: str | None, name: str) -> list[float]:
    tasks = [task] if task else list(TASKS)
    return [statistics.mean(e["eval"][str(L)]["tasks"][t][name] for t in tasks) for e in entries]


def _row(label: str, entries: list[dict], L, extra: str = "") -> str:
    cells = [_stat(_metric(entries, L, t, "auc")) for t in TASKS]
    cells += [_stat(_metric(entries, L, None, "auc")), _stat(_metric(entries, L, None, "gauc"))]
    seconds = statistics.mean(e["train_seconds"] for e in entries) if entries else float("nan")
    return f"| {label} | " + " | ".join(cells) + f" | {seconds:,.0f} |{extra}"


HEADER = "| setting | " + " | ".join(f"AUC {t}" for t in TASKS) + " | mean AUC | mean GAUC | train s |"
RULE = "|---|" + "---:|" * (len(TASKS) + 3)


def _plot_length_scaling(plt, path: Path, xs: list[int], ys: list[float], errs: list[float], mode: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("max history length (train = eval)")
    ax.set_ylabel("mean AUC over tasks")
    ax.set_title(f"STCA length scaling ({mode})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_serving(plt, path: Path, serving, ushaped: list[dict], fixed10k: list[dict], fixed2k: list[dict],
                  mode: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ys = [_metric(ushaped, L, None, "auc") for L in serving]
    ax.errorbar(serving, [statistics.mean(y) for y in ys], yerr=[statistics.stdev(y) if len(y) > 1 else 0 for y in ys],
                marker="o", capsize=3, label="U-shaped training, served at L")
    for entries, L, style in ((fixed10k, 10_000, "--"), (fixed2k, 2_000, ":")):
        ax.axhline(statistics.mean(_metric(entries, L, None, "auc")), linestyle=style, color="grey",
                   label=f"fixed {L // 1000}k training and serving")
    ax.set_xscale("log")
    ax.set_xlabel("serving max history length")
    ax.set_ylabel("mean AUC over tasks")
    ax.set_title(f"Extrapolation ({mode})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _with_params(row: str, params: int) -> str:
    """The row with a dense-parameter cell after its label."""
    return row.replace(" |", f" | {params:,} |", 1)


def _preamble(plan: Plan, mode: str, command: str) -> list[str]:
    return [f"Command: `{command}` ({mode}: {plan.users} users x {plan.days} days of the default generator profile, "
            f"preset {plan.preset}, {plan.steps} steps of {plan.batch} requests on the {plan.train_days} days before "
            f"the last, evaluated on the last; seeds {list(plan.seeds)}; mean ± stdev over seeds)", ""]


def _length_scaling(runs: dict, plan: Plan, mode: str, plt, out: Path) -> list[str]:
    """STCA trained and evaluated at each length: the table, and the curve of mean AUC."""
    lines = ["**Length scaling** (STCA, trained and evaluated at the same max history):", "", HEADER, RULE]
    xs, ys, errs = [], [], []
    for L in plan.lengths:
        entries = _runs(runs, f"gen-stca-L{L}-")
        lines.append(_row(f"L = {L:,}", entries, L))
        if entries:  # lengths not run yet are left off the plot, not plotted as gaps
            vals = _metric(entries, L, None, "auc")
            xs.append(L)
            ys.append(statistics.mean(vals))
            errs.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
    _plot_length_scaling(plt, out / f"length_scaling_{mode}.png", xs, ys, errs, mode)
    return lines + ["", f"![length scaling](length_scaling_{mode}.png)", ""]


def _extrapolation(runs: dict, plan: Plan, mode: str, plt, out: Path) -> list[str]:
    """U-shaped training served at several lengths, against fixed 10k and 2k training."""
    ushaped = _runs(runs, "gen-stca-ushaped-")
    fixed10k, fixed2k = _runs(runs, "gen-stca-L10000-"), _runs(runs, "gen-stca-L2000-")
    lines = ["**Extrapolation** (train on U-shaped lengths, mean about 2k; serve at L):", "", HEADER, RULE]
    for L in plan.serving:
        lines.append(_row(f"U-shaped, served at {L:,}", ushaped, L))
    lines.append(_row("fixed 10k, served at 10,000", fixed10k, 10_000))
    lines.append(_row("fixed 2k, served at 2,000", fixed2k, 2_000))
    if ushaped and fixed10k and fixed2k:  # the comparison needs all three
        summary = _recovered_gain(ushaped, fixed10k, fixed2k)
        _plot_serving(plt, out / f"extrapolation_{mode}.png", plan.serving, ushaped, fixed10k, fixed2k, mode)
        lines += ["", f"![extrapolation](extrapolation_{mode}.png)"]
        lines += ["", summary]
    return lines + [""]


def _recovered_gain(ushaped: list[dict], fixed10k: list[dict], fixed2k: list[dict]) -> str:
    """How much of fixed-10k's gain over fixed-2k U-shaped training keeps, and at what cost (the
    paper's claim: about 80% of it for about a third of the training time)."""
    base = statistics.mean(_metric(fixed2k, 2_000, None, "auc"))
    gain10 = statistics.mean(_metric(fixed10k, 10_000, None, "auc")) - base
    gain_u = statistics.mean(_metric(ushaped, 10_000, None, "auc")) - base
    cost = statistics.mean(e["train_seconds"] for e in ushaped) / statistics.mean(e["train_seconds"] for e in fixed10k)
    if gain10 <= 0:
        share = "n/a (training at 10k gained nothing over 2k here)"
    elif gain_u <= 0:
        share = "none"
    else:
        share = f"{gain_u / gain10:.0%}"
    return (f"Gain of fixed-10k over fixed-2k: {gain10:+.4f} mean AUC; U-shaped served at 10k recovers {share} "
            f"of it ({gain_u:+.4f}) at {cost:.2f}x the training time of fixed 10k (the paper: about 80% for "
            f"about a third).")


def _baselines(runs: dict, plan: Plan) -> list[str]:
    """Every arch at the baseline length, with its dense parameter count: as preset, matched, and longer."""
    L = plan.baseline_len
    lines = [f"**STCA against the baselines** (max history {L:,}; dense = parameters outside the "
             f"embedding tables, which every arch shares; \"matched\" = widened to about STCA's dense count by the "
             f"feed-forward multiplier, the preset's is {PRESETS[plan.preset].ffn_mult}; other runs take {plan.steps:,} steps):", "",
             HEADER.replace(" |", " | dense params |", 1), RULE + "---:|"]
    for arch in plan.archs:
        lines.append(_with_params(_row(arch, _runs(runs, f"gen-{arch}-L{L}-"), L), dense_parameters(plan.preset, arch)))
    for arch in plan.matched:
        m = matched_ffn_mult(plan.preset, arch)
        lines.append(_with_params(_row(f"{arch}, matched (ffn x{m})", _runs(runs, f"gen-{arch}-matched-L{L}-"), L),
                                  dense_parameters(plan.preset, arch, m)))
    for arch, steps in plan.more_steps:
        lines.append(_with_params(_row(f"{arch}, {steps:,} steps", _runs(runs, f"gen-{arch}-steps{steps}-L{L}-"), L),
                                  dense_parameters(plan.preset, arch)))
    return lines + [""]


def _movielens(runs: dict, plan: Plan) -> list[str]:
    """The MovieLens runs, if any were made (--skip-movielens leaves the section out)."""
    if not any(k.startswith("ml-") for k in runs):
        return []
    lines = ["**MovieLens latest-small** (train on 7 days before the last of 30, evaluate on the last):", "",
             HEADER, RULE]
    # full-history runs are evaluated at full length, stored under "None"
    for arch in ML_ARCHS:
        lines.append(_row(f"{arch}, full history", _runs(runs, f"ml-{arch}-full-"), None))
    for arch in (a for a in plan.matched if a in ML_ARCHS):
        lines.append(_row(f"{arch}, matched (ffn x{matched_ffn_mult(plan.preset, arch)}), full history",
                          _runs(runs, f"ml-{arch}-matched-full-"), None))
    for L in plan.ml_lengths:
        lines.append(_row(f"stca, L = {L:,}", _runs(runs, f"ml-stca-L{L}-"), L))
    return lines + [""]


def write_report(runs: dict, plan: Plan, mode: str, out: Path, command: str) -> str:
    """report_{mode}.md and its plots under `out`; returns (and prints) the markdown."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on benchmark hosts
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    lines = _preamble(plan, mode, command)
    lines += _length_scaling(runs, plan, mode, plt, out)
    lines += _extrapolation(runs, plan, mode, plt, out)
    lines += _baselines(runs, plan)
    lines += _movielens(runs, plan)
    text = "\n".join(lines)
    (out / f"report_{mode}.md").write_text(text + "\n")
    print(text)
    return text
