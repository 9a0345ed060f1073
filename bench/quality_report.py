"""The quality benchmark's report: markdown tables and PNG plots from its results.

Every table reports the test window (per-task AUC, mean AUC with its seed spread and its
95% bootstrap half-width, mean GAUC) and, beside it, the mean AUC on the validation
window, where choices are made. A difference smaller than the intervals is no difference.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from longseq.bench.quality_plan import (
    ABLATIONS, LR_LADDER, PLANS, Plan, chosen_lr, dense_parameters, lr_name, matched_ffn_mult,
)
from longseq.schemas.spec import load_default_spec
from longseq.trainer.model_config import EXTENSIONS, PRESETS

VARIANT_LABELS = {"stca": "STCA (the paper's)",
                  "stca+ext": "STCA + extensions (" + ", ".join(f"{k}={v}" for k, v in EXTENSIONS.items()) + ")"}


def _runs(runs: dict, prefix: str) -> list[dict]:
    return [v for k, v in sorted(runs.items()) if k.startswith(prefix)]


def _stat(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _metric(entries: list[dict], L, task: str | None, name: str, window: str = "test") -> list[float]:
    """Per run: the metric of one task (or the mean over its tasks) at serving length L."""
    def tasks(e: dict) -> dict:
        return e["eval"][window][str(L)]["tasks"]

    return [statistics.mean(tasks(e)[t][name] for t in ([task] if task else tasks(e))) for e in entries]


def _tasks(runs: dict, prefix: str) -> list[str]:
    """The tasks of the runs named prefix...: their data's spec's (the generated sample may take
    another spec than MovieLens, which is adapted to the default one)."""
    for e in _runs(runs, prefix):
        if "eval" in e:
            return list(next(iter(e["eval"]["test"].values()))["tasks"])
    return list(load_default_spec().tasks)


def _half_width(entries: list[dict], L, window: str = "test") -> str:
    """The mean half-width of the runs' 95% bootstrap intervals of mean AUC."""
    widths = [(hi - lo) / 2 for e in entries for lo, hi in [e["eval"][window][str(L)]["auc_intervals"]["mean"]]]
    return f"{statistics.mean(widths):.4f}" if widths else "n/a"


def _row(label: str, entries: list[dict], L, tasks: list[str], extra: str = "") -> str:
    cells = [_stat(_metric(entries, L, t, "auc")) for t in tasks]
    cells += [_stat(_metric(entries, L, None, "auc")), _half_width(entries, L),
              _stat(_metric(entries, L, None, "auc", "valid")), _stat(_metric(entries, L, None, "gauc"))]
    seconds = f"{statistics.mean(e['train_seconds'] for e in entries):,.0f}" if entries else "n/a"
    return f"| {label} | " + " | ".join(cells) + f" | {seconds} |{extra}"


def _header(tasks: list[str]) -> list[str]:
    """A results table's header and rule: one AUC column per task, then the means."""
    return ["| setting | " + " | ".join(f"AUC {t}" for t in tasks)
            + " | test mean AUC | ± 95% | valid mean AUC | test mean GAUC | train s |",
            "|---|" + "---:|" * (len(tasks) + 5)]


def _plot_length_scaling(plt, path: Path, curves: dict[str, tuple[list, list, list]], mode: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, (xs, ys, errs) in curves.items():
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("max history length (train = eval)")
    ax.set_ylabel("test mean AUC over tasks")
    ax.set_title(f"STCA length scaling ({mode})")
    ax.legend(fontsize=6)
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
    ax.set_ylabel("test mean AUC over tasks")
    ax.set_title(f"Extrapolation ({mode})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _with_params(row: str, cell: str) -> str:
    """The row with a dense-parameter cell after its label."""
    return row.replace(" |", f" | {cell} |", 1)


def _preamble(plan: Plan, mode: str, command: str, windows: str) -> list[str]:
    return [f"Command: `{command}` ({mode}: {plan.users} users x {plan.days} days of the default generator profile, "
            f"preset {plan.preset}, {plan.steps} steps of {plan.batch} requests; windows: {windows}; "
            f"seeds {list(plan.seeds)}; mean ± stdev over seeds. \"± 95%\" is the mean half-width of each run's 95% "
            f"bootstrap interval of test mean AUC (users resampled). Choices are made on the validation window; the "
            f"test window is only reported.)" + _parts(plan, mode), ""]


def _parts(plan: Plan, mode: str) -> str:
    """What of the plan this report covers, where it is not all of it (bench quality --sections,
    --archs, --ablations)."""
    whole = PLANS.get(mode.split("-")[0])  # the mode is the plan's name, then any preset, device or spec
    if whole is None or (plan.sections, plan.archs, plan.ablations) == (whole.sections, whole.archs, whole.ablations):
        return ""
    return (f" Part of the plan: sections {', '.join(plan.sections)}; baseline archs {', '.join(plan.archs)}; "
            f"ablations {', '.join(plan.ablations) or 'none'}.")


def _length_scaling(runs: dict, plan: Plan, mode: str, plt, out: Path) -> list[str]:
    """Each STCA variant trained and evaluated at each length: the table, and the curves of mean AUC."""
    tasks = _tasks(runs, "gen-")
    lines = ["**Length scaling** (trained and evaluated at the same max history):", "", *_header(tasks)]
    curves = {}
    for variant in plan.variants:
        xs, ys, errs = [], [], []
        for L in plan.lengths:
            entries = _runs(runs, f"gen-{variant}-L{L}-")
            lines.append(_row(f"{VARIANT_LABELS[variant]}, L = {L:,}", entries, L, tasks))
            if entries:  # lengths not run yet are left off the plot, not plotted as gaps
                vals = _metric(entries, L, None, "auc")
                xs.append(L)
                ys.append(statistics.mean(vals))
                errs.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        curves[VARIANT_LABELS[variant]] = (xs, ys, errs)
    _plot_length_scaling(plt, out / f"length_scaling_{mode}.png", curves, mode)
    return lines + ["", f"![length scaling](length_scaling_{mode}.png)", ""]


def _extrapolation(runs: dict, plan: Plan, mode: str, plt, out: Path) -> list[str]:
    """Each variant's U-shaped training served at several lengths, against its fixed 10k and 2k training."""
    tasks = _tasks(runs, "gen-")
    lines = ["**Extrapolation** (train on U-shaped lengths, mean about 2k; serve at L):", "", *_header(tasks)]
    summaries = [""]
    for variant in plan.variants:
        label = VARIANT_LABELS[variant]
        ushaped = _runs(runs, f"gen-{variant}-ushaped-")
        fixed10k, fixed2k = _runs(runs, f"gen-{variant}-L10000-"), _runs(runs, f"gen-{variant}-L2000-")
        for L in plan.serving:
            lines.append(_row(f"{label}, U-shaped, served at {L:,}", ushaped, L, tasks))
        lines.append(_row(f"{label}, fixed 10k, served at 10,000", fixed10k, 10_000, tasks))
        lines.append(_row(f"{label}, fixed 2k, served at 2,000", fixed2k, 2_000, tasks))
        if ushaped and fixed10k and fixed2k:  # the comparison needs all three
            suffix = "" if variant == "stca" else f"_{variant.replace('+', '_')}"
            _plot_serving(plt, out / f"extrapolation_{mode}{suffix}.png", plan.serving, ushaped, fixed10k, fixed2k,
                          f"{mode}, {variant}")
            summaries += [f"{label}: " + _recovered_gain(ushaped, fixed10k, fixed2k), "",
                          f"![extrapolation, {variant}](extrapolation_{mode}{suffix}.png)", ""]
    return lines + summaries


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
    return (f"gain of fixed-10k over fixed-2k: {gain10:+.4f} test mean AUC; U-shaped served at 10k recovers {share} "
            f"of it ({gain_u:+.4f}) at {cost:.2f}x the training time of fixed 10k (the paper: about 80% for "
            f"about a third).")


def _learning_rates(runs: dict, plan: Plan, prefix: str, suffix: str, archs, L) -> tuple[list[str], dict]:
    """The table of each arch's validation mean AUC (first seed) at each lr tried, and arch -> chosen lr."""
    def grid_run(arch: str, lr: float) -> dict | None:
        return runs.get(f"{lr_name(f'{prefix}-{arch}', lr, suffix)}-s{plan.seeds[0]}")

    lrs = [lr for lr in LR_LADDER if lr in plan.lrs or any(grid_run(arch, lr) for arch in archs)]
    lines = ["| arch | " + " | ".join(f"valid mean AUC, lr {lr:g}" for lr in lrs) + " | chosen lr |",
             "|---|" + "---:|" * (len(lrs) + 1)]
    chosen = {}
    for arch in archs:
        chosen[arch] = chosen_lr(runs, plan, f"{prefix}-{arch}", suffix, L)
        cells = ["n/a" if not e else "diverged" if "diverged" in e else _stat(_metric([e], L, None, "auc", "valid"))
                 for e in (grid_run(arch, lr) for lr in lrs)]
        lines.append(f"| {arch} | " + " | ".join(cells) + f" | {chosen[arch]:g} |")
    return lines + [""], chosen


def _baselines(runs: dict, plan: Plan) -> list[str]:
    """Every arch at the baseline length and its chosen lr, with its dense parameter count: as
    preset, matched, and longer."""
    L = plan.baseline_len
    tasks = _tasks(runs, "gen-")
    header, rule = _header(tasks)
    table, lrs = _learning_rates(runs, plan, "gen", f"L{L}", plan.archs, L)
    lines = [f"**Learning rate of each arch** (chosen on the validation window, seed {plan.seeds[0]}; the rows below "
             f"train every seed at it):", "", *table,
             f"**STCA against the baselines** (all the paper's forms, no extension; max history {L:,}; each arch at its "
             f"chosen lr; dense = parameters outside the embedding tables, which every arch shares; \"matched\" = "
             f"widened to about STCA's dense count by the feed-forward multiplier, the preset's is "
             f"{PRESETS[plan.preset].ffn_mult}; other runs take {plan.steps:,} steps):", "",
             _with_params(header, "dense params"), rule + "---:|"]

    def entries(prefix: str, arch: str) -> list[dict]:
        return _runs(runs, f"{lr_name(prefix, lrs[arch], f'L{L}')}-")

    for arch in plan.archs:
        lines.append(_with_params(_row(f"{arch}, lr {lrs[arch]:g}", entries(f"gen-{arch}", arch), L, tasks),
                                  f"{dense_parameters(plan.preset, arch):,}"))
    for arch in plan.matched:
        m = matched_ffn_mult(plan.preset, arch)
        lines.append(_with_params(_row(f"{arch}, matched (ffn x{m})", entries(f"gen-{arch}-matched", arch), L, tasks),
                                  f"{dense_parameters(plan.preset, arch, m):,}"))
    for arch, steps in plan.more_steps:
        lines.append(_with_params(_row(f"{arch}, {steps:,} steps", entries(f"gen-{arch}-steps{steps}", arch), L, tasks),
                                  f"{dense_parameters(plan.preset, arch):,}"))
    return lines + [""]


def _difference(runs: dict, prefix: str, reference: str, plan: Plan, L) -> str:
    """Test mean AUC of prefix's runs minus the reference's, paired by seed: mean ± stdev."""
    diffs = []
    for seed in plan.seeds:
        a, b = runs.get(f"{prefix}-s{seed}"), runs.get(f"{reference}-s{seed}")
        if a and b:
            diffs.append(_metric([a], L, None, "auc")[0] - _metric([b], L, None, "auc")[0])
    if not diffs:
        return "n/a"
    return f"{statistics.mean(diffs):+.4f}" + (f" ± {statistics.stdev(diffs):.4f}" if len(diffs) > 1 else "")


def _ablations(runs: dict, plan: Plan) -> list[str]:
    """One change each from the paper's STCA, on generated data (at baseline_len) and MovieLens."""
    if not plan.ablations:
        return []
    L = plan.baseline_len
    lines = [f"**Ablations** (one change each from the paper's STCA; generated data at max history {L:,}, MovieLens "
             f"at full history; Δ = test mean AUC minus the paper's STCA's, paired by seed, mean ± stdev; compare "
             f"it with the runs' ± 95% intervals above):", "",
             "| change | generated: test mean AUC | Δ | MovieLens: test mean AUC | Δ |", "|---|---:|---:|---:|---:|"]
    rows = [("the paper's STCA", f"gen-stca-L{L}", "ml-stca-full")]
    rows += [(ABLATIONS[slug][0], f"gen-abl-{slug}-L{L}", f"ml-abl-{slug}-full") for slug in plan.ablations]
    for label, gen, ml in rows:
        gen_auc = _stat(_metric(_runs(runs, f"{gen}-"), L, None, "auc"))
        ml_auc = _stat(_metric(_runs(runs, f"{ml}-"), None, None, "auc"))
        lines.append(f"| {label} | {gen_auc} | {_difference(runs, gen, f'gen-stca-L{L}', plan, L)} | {ml_auc} | "
                     f"{_difference(runs, ml, 'ml-stca-full', plan, None)} |")
    return lines + [""]


def _movielens(runs: dict, plan: Plan, windows: str) -> list[str]:
    """The MovieLens runs, if any were made (--skip-movielens leaves the section out)."""
    if not any(k.startswith("ml-") for k in runs):
        return []
    # full-history runs are evaluated at full length, stored under "None"
    tasks = _tasks(runs, "ml-")
    table, lrs = _learning_rates(runs, plan, "ml", "full", plan.ml_archs, None)
    lines = [f"**MovieLens latest-small** ({plan.ml_days} days; {windows}; one epoch over the training window; "
             f"each arch at the lr it chose on the validation window, seed {plan.seeds[0]}; the STCA rows at other "
             f"lengths at the default):", "", *table, *_header(tasks)]
    for arch in plan.ml_archs:
        lines.append(_row(f"{arch}, full history, lr {lrs[arch]:g}",
                          _runs(runs, f"{lr_name(f'ml-{arch}', lrs[arch], 'full')}-"), None, tasks))
    for arch in (a for a in plan.matched if a in plan.ml_archs):
        lines.append(_row(f"{arch}, matched (ffn x{matched_ffn_mult(plan.preset, arch)}), full history",
                          _runs(runs, f"{lr_name(f'ml-{arch}-matched', lrs[arch], 'full')}-"), None, tasks))
    for L in plan.ml_lengths:
        lines.append(_row(f"stca, L = {L:,}", _runs(runs, f"ml-stca-L{L}-"), L, tasks))
    return lines + [""]


def write_report(runs: dict, plan: Plan, mode: str, out: Path, command: str, windows: str = "",
                 ml_windows: str = "") -> str:
    """report_{mode}.md and its plots under `out`; returns (and prints) the markdown."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on benchmark hosts
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    lines = _preamble(plan, mode, command, windows)
    sections = {"length-scaling": lambda: _length_scaling(runs, plan, mode, plt, out),
                "extrapolation": lambda: _extrapolation(runs, plan, mode, plt, out),
                "baselines": lambda: _baselines(runs, plan), "ablations": lambda: _ablations(runs, plan),
                "movielens": lambda: _movielens(runs, plan, ml_windows)}
    for name in plan.sections:
        lines += sections[name]()
    text = "\n".join(lines)
    (out / f"report_{mode}.md").write_text(text + "\n")
    print(text)
    return text
