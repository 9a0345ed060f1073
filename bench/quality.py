"""Quality evidence on our own pipeline: length scaling, extrapolation, STCA vs baselines,
on generated data and on MovieLens.

    longseq bench quality [--quick] [--work DIR] [--report-dir docs/quality]

Each setting is the whole path: data generated (or adapted) -> built (polars) ->
published -> `train` on the training window -> `evaluate` on the validation window (where
choices are made) and on the test window (only reported), the last days, each with 95%
bootstrap intervals (bench/quality_plan.py `Windows`). The paper's STCA and STCA with
longseq's extensions run side by side (`VARIANTS`). Results are cached per
setting in WORK/results.json with the training settings they were run with, so an
interrupted run continues where it stopped and a setting whose settings changed (a new
default) is run again; the report (markdown tables and PNG plots) goes to --report-dir.

Baselines run at the preset's size, widened (a larger feed-forward multiplier) to about
STCA's dense parameter count, and with more steps (DIN's about STCA's training time), so
neither capacity nor compute alone decides the comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from longseq.bench.quality_plan import (
    ABLATIONS, LR, MOVIELENS, PLANS, SECTIONS, START, VARIANTS, Plan, Windows, ablation, chosen_lr, lr_name, matched_model,
    mean_auc, narrowed, next_lr, spec_suffix, validation_aucs,
)
from longseq.cli.arguments import add_device, add_spec, add_work, comma_separated, dataset_spec, local_path
from longseq.schemas.errors import LongseqError
from longseq.trainer.model_config import ARCHS, PRESETS
from longseq.bench import bench_parser, names


@dataclass
class Results:
    path: Path
    runs: dict = field(default_factory=dict)

    @staticmethod
    def load(path: Path) -> "Results":
        return Results(path, json.loads(path.read_text()) if path.exists() else {})

    def save(self) -> None:
        self.path.write_text(json.dumps(self.runs, indent=2))


def prepare_generated(work: Path, plan: Plan, spec=None) -> tuple[Path, dt.date]:
    """The plan's generated sample (in the shape of `spec`, a DatasetSpec or None for the
    default), built and published once under work/gen."""
    from longseq.pipelines.sample import prepare_generated as prepare
    from longseq.sources.generate import PROFILES

    sample = prepare(work / "gen", PROFILES["default"].with_sizes(plan.users, plan.days), seed=0, start=START, reuse=True,
                     spec=spec, override_reason="quality benchmark: generated data")
    return sample.data, sample.end


def prepare_movielens(work: Path, ratings: Path, days: int = 30) -> tuple[Path, dt.date]:
    from longseq.pipelines.sample import prepare_movielens as prepare
    from longseq.sources.movielens import MovieLensMapping

    sample = prepare(work / "ml", ratings, MovieLensMapping(days=days, start=START), reuse=True,
                     override_reason="quality benchmark: MovieLens")
    return sample.data, sample.end


def run(results: Results, name: str, data: Path, windows: Windows, cfg, serve: tuple[int | None, ...],
        work: Path) -> dict:
    """Train one setting on the training window, evaluate it on the validation and test
    windows at each serving length; cached by name and settings (a cached result whose
    training settings differ, e.g. after a default changed, is redone)."""
    from longseq.trainer.train import train

    cached = results.runs.get(name)
    if cached is not None and cfg.same_settings(cached.get("config", "")):
        return cached
    run_dir = work / "runs" / name
    seconds = _trained_seconds(run_dir, cfg)
    if seconds is None:  # not trained yet, or trained with other settings
        shutil.rmtree(run_dir, ignore_errors=True)  # a stale run of other settings would be refused
        t = time.perf_counter()
        train(str(data), *windows.train, run_dir, cfg, log=lambda m: None)
        seconds = time.perf_counter() - t
        # a run killed while evaluating (hours at 10k on a CPU) resumes there, not at training
        (run_dir / TRAINED).write_text(json.dumps({"train_seconds": seconds}))
    evals = {window: _evaluate(run_dir, data, span, serve, cfg.device)
             for window, span in (("valid", windows.valid), ("test", windows.test))}
    results.runs[name] = {"config": cfg.to_json(), "train_seconds": seconds, "eval": evals}
    results.save()
    print(f"  {name}: trained in {seconds:.0f} s; " + "; ".join(
        f"L={L}: mean AUC valid {mean_auc(evals['valid'][L]):.4f} test {mean_auc(e):.4f}"
        for L, e in evals["test"].items()), flush=True)
    return results.runs[name]


TRAINED = "trained.json"  # written once training finished: its wall time


def _trained_seconds(run_dir: Path, cfg) -> float | None:
    """The training time of a finished run in run_dir with exactly cfg's settings, else None."""
    try:
        same = cfg.same_settings((run_dir / "config.json").read_text())
        return json.loads((run_dir / TRAINED).read_text())["train_seconds"] if same else None
    except (OSError, ValueError, KeyError):
        return None


def _evaluate(run_dir: Path, data: Path, span: tuple[dt.date, dt.date], serve: tuple[int | None, ...],
              device: str) -> dict:
    """{str(L): tasks, mean history and 95% AUC intervals} over the days of span."""
    from longseq.trainer.evaluate import evaluate

    out = {}
    for L in serve:
        e = evaluate(run_dir, str(data), *span, max_len=L, device=device, log=lambda m: None)
        out[str(L)] = {"tasks": e["tasks"], "mean_history": e["mean_history"], "auc_intervals": e["auc_intervals"]}
    return out


def plan_config(plan: Plan, seed: int, **kw):
    from longseq.trainer.train_config import TrainConfig

    base = dict(preset=plan.preset, epochs=1, batch_size=plan.batch, max_steps=plan.steps, seed=seed, warmup_steps=10,
                checkpoint_every=10**9, log_every=10**9, lr=LR, device=plan.device)
    # only the overrides that change the preset: one setting, one cache key, however it is spelt
    preset = PRESETS[plan.preset]
    model = {k: v for k, v in kw.pop("model", {}).items() if getattr(preset, k) != v}
    return TrainConfig(**{**base, **kw}, model=model)


def _length_scaling_runs(results: Results, plan: Plan, data: Path, windows: Windows, work: Path) -> None:
    print("1. length scaling (each STCA variant trained and evaluated at the same max history)", flush=True)
    for variant in plan.variants:
        for L in plan.lengths:
            for seed in plan.seeds:
                run(results, f"gen-{variant}-L{L}-s{seed}", data, windows,
                    plan_config(plan, seed, truncation=False, max_len=L, model=VARIANTS[variant]), (L,), work)


def _extrapolation_runs(results: Results, plan: Plan, data: Path, windows: Windows, work: Path) -> None:
    print("2. extrapolation (U-shaped training lengths, mean about 2k; served at several lengths)", flush=True)
    for variant in plan.variants:
        for seed in plan.seeds:
            run(results, f"gen-{variant}-ushaped-s{seed}", data, windows,
                plan_config(plan, seed, truncation=True, model=VARIANTS[variant]), tuple(sorted({*plan.serving, 10_000})),
                work)


def _learning_rate_runs(results: Results, plan: Plan, data: Path, windows: Windows, work: Path,
                        prefix: str, suffix: str, model: dict, L: int | None, **kw) -> float:
    """One arch trained on the first seed at each of plan.lrs, and further along LR_LADDER while
    the best is at an end (quality_plan.next_lr); returns the lr with the best validation mean
    AUC, which then trains every seed of that arch's rows. A run that diverges is kept in the
    results as such and never chosen."""
    from longseq.trainer.run import TrainingDiverged

    tried = list(plan.lrs)
    todo = list(plan.lrs)
    while todo:
        for lr in todo:
            name = f"{lr_name(prefix, lr, suffix)}-s{plan.seeds[0]}"
            cfg = plan_config(plan, plan.seeds[0], truncation=False, max_len=L, model=model, lr=lr, **kw)
            if cfg.same_settings(results.runs.get(name, {}).get("config", "")) and "diverged" in results.runs[name]:
                continue
            try:
                run(results, name, data, windows, cfg, (L,), work)
            except TrainingDiverged as e:
                results.runs[name] = {"config": cfg.to_json(), "diverged": str(e)}
                results.save()
                print(f"  {name}: diverged ({e})", flush=True)
        further = next_lr(tried, validation_aucs(results.runs, plan, prefix, suffix, L))
        todo = [further] if further is not None else []
        tried += todo
    return chosen_lr(results.runs, plan, prefix, suffix, L)


def _baseline_runs(results: Results, plan: Plan, data: Path, windows: Windows, work: Path) -> None:
    L = plan.baseline_len
    print(f"3. STCA against the baselines at max history {L}, each arch at the learning rate it chose on the "
          f"validation window (of {', '.join(f'{lr:g}' for lr in plan.lrs)})", flush=True)
    lrs = {arch: _learning_rate_runs(results, plan, data, windows, work, f"gen-{arch}", f"L{L}", {"arch": arch}, L)
           for arch in plan.archs}
    print("   chosen: " + ", ".join(f"{arch} {lr:g}" for arch, lr in lrs.items()), flush=True)
    settings = [(f"gen-{arch}", {"arch": arch}, {}) for arch in plan.archs]
    settings += [(f"gen-{arch}-matched", matched_model(plan.preset, arch), {}) for arch in plan.matched]
    # max_steps ends these; more steps than one epoch's batches go on into the next epoch
    settings += [(f"gen-{arch}-steps{steps}", {"arch": arch}, {"max_steps": steps, "epochs": 100})
                 for arch, steps in plan.more_steps]
    for prefix, model, kw in settings:
        lr = lrs[model["arch"]]
        for seed in plan.seeds:
            run(results, f"{lr_name(prefix, lr, f'L{L}')}-s{seed}", data, windows,
                plan_config(plan, seed, truncation=False, max_len=L, model=model, lr=lr, **kw), (L,), work)


def _ablation_runs(results: Results, plan: Plan, data: Path, windows: Windows, work: Path) -> None:
    L = plan.baseline_len
    print(f"4. ablations of the paper's STCA at max history {L}, one change each", flush=True)
    for seed in plan.seeds:  # the reference each change is paired with (length scaling's run at L, when it ran)
        run(results, f"gen-stca-L{L}-s{seed}", data, windows,
            plan_config(plan, seed, truncation=False, max_len=L, model=VARIANTS["stca"]), (L,), work)
    for slug in plan.ablations:
        for seed in plan.seeds:
            run(results, f"gen-abl-{slug}-L{L}-s{seed}", data, windows,
                plan_config(plan, seed, truncation=False, max_len=L, model=ablation(slug, plan.preset)), (L,), work)


def _movielens_runs(results: Results, plan: Plan, ratings: Path, work: Path) -> None:
    ml, ml_end = prepare_movielens(work, ratings, plan.ml_days)
    windows = plan.ml_windows_ending(ml_end)
    print(f"5. MovieLens latest-small ({windows.describe()}; one epoch over the training window; each arch at the "
          f"learning rate it chose on the validation window)", flush=True)
    # a whole epoch of the training window, not plan.steps: enough training requests
    epoch = {"max_steps": None}
    lrs = {arch: _learning_rate_runs(results, plan, ml, windows, work, f"ml-{arch}", "full", {"arch": arch}, None,
                                     **epoch) for arch in plan.ml_archs}
    print("   chosen: " + ", ".join(f"{arch} {lr:g}" for arch, lr in lrs.items()), flush=True)
    settings = [(lr_name(f"ml-{arch}", lrs[arch], "full"), {"arch": arch}, None, lrs[arch]) for arch in plan.ml_archs]
    settings += [(lr_name(f"ml-{arch}-matched", lrs[arch], "full"), matched_model(plan.preset, arch), None, lrs[arch])
                 for arch in plan.matched if arch in plan.ml_archs]
    # the paper's STCA at the default lr is the reference of the ablations and of the history lengths
    settings += [("ml-stca-full", {}, None, LR)]
    settings += [(f"ml-abl-{slug}-full", ablation(slug, plan.preset), None, LR) for slug in plan.ablations]
    settings += [(f"ml-stca-L{n}", {}, n, LR) for n in plan.ml_lengths]
    for name, model, n, lr in settings:
        for seed in plan.seeds:
            cfg = plan_config(plan, seed, truncation=False, max_len=n, model=model, lr=lr, **epoch)
            run(results, f"{name}-s{seed}", ml, windows, cfg, (n,), work)


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench quality --help`)."""

    ap.add_argument("--quick", action="store_true",
                    help="the small plan: one seed, smaller sizes (its recorded durations: docs/BENCHMARKS.md, Quality)")
    add_work(ap, "bench-work/quality", "the samples, trained runs and results, kept between runs")
    ap.add_argument("--report-dir", type=local_path, default=Path("docs/quality"), metavar="DIR",
                    help="where the report is written (default docs/quality)")
    ap.add_argument("--movielens", type=local_path, default=MOVIELENS, metavar="FILE",
                    help="a MovieLens ratings.csv (default: %(default)s)")
    ap.add_argument("--skip-movielens", action="store_true", help="leave the MovieLens part out")
    ap.add_argument("--sections", type=comma_separated(str), metavar="NAME,...",
                    help=f"run only these parts of the plan, from: {', '.join(SECTIONS)} (default: all); runs keep "
                         "their names, so parts run apart share the cache and the report")
    ap.add_argument("--archs", type=comma_separated(str), metavar="ARCH,...",
                    help=f"the baselines' archs, from: {', '.join(ARCHS)} (default: the plan's); their matched and "
                         "longer rows follow, and STCA always runs")
    ap.add_argument("--ablations", type=comma_separated(str), metavar="NAME,...",
                    help=f"the ablations, from: {', '.join(ABLATIONS)} (default: all)")
    ap.add_argument("--report-only", action="store_true",
                    help="write the report from the runs done so far, running nothing")
    ap.add_argument("--preset", choices=list(PRESETS), help="model size of every run (default: the plan's, tiny)")
    add_spec(ap, "dataset spec of the generated sample (default: the default spec); another spec's sample, runs "
                 "and report are kept apart from the default one's (MovieLens is adapted to the default spec)")
    add_device(ap)


def main(argv: list[str]) -> int:
    ap = bench_parser('quality', __doc__, arguments)
    args = ap.parse_args(argv)
    if not args.skip_movielens and not args.report_only and not args.movielens.exists():
        raise LongseqError(f"MovieLens ratings not found at {args.movielens}: pass --movielens PATH/ratings.csv "
                           "(MovieLens latest-small, https://grouplens.org/datasets/movielens/) or --skip-movielens")
    from longseq.trainer.distributed import resolve_device, tune_cpu_process

    tune_cpu_process()  # as training sets its process up: the cores this process may use
    plan = PLANS["quick" if args.quick else "full"]
    mode = "quick" if args.quick else "full"
    for flag, values, known in (("--sections", args.sections, SECTIONS), ("--archs", args.archs, ARCHS),
                                ("--ablations", args.ablations, ABLATIONS)):
        names(ap, flag, values, known)
    if args.skip_movielens:
        args.sections = [s for s in (args.sections or SECTIONS) if s != "movielens"]
    plan = narrowed(plan, args.sections and tuple(args.sections), args.archs and tuple(args.archs),
                    args.ablations and tuple(args.ablations))
    if args.preset and args.preset != plan.preset:
        plan, mode = dataclasses.replace(plan, preset=args.preset), f"{mode}-{args.preset}"
    if args.device and args.device != "auto":
        resolve_device(args.device)  # a GPU that is not there stops the run here, in one line
        plan, mode = dataclasses.replace(plan, device=args.device), f"{mode}-{args.device.replace(':', '')}"
    spec = dataset_spec(args)
    mode += spec_suffix(spec)
    work = args.work / mode
    work.mkdir(parents=True, exist_ok=True)
    results = Results.load(work / "results.json")
    t0 = time.perf_counter()
    print(f"command: longseq bench quality {' '.join(argv)}\nplan: {dataclasses.asdict(plan)}", flush=True)

    if args.report_only:
        windows = plan.windows(START + dt.timedelta(days=plan.days - 1))
    else:
        data, end = prepare_generated(work, plan, spec)
        windows = plan.windows(end)
        print(f"generated data: {windows.describe()}", flush=True)
        for name, section in zip(SECTIONS, (_length_scaling_runs, _extrapolation_runs, _baseline_runs, _ablation_runs)):
            if name in plan.sections:
                section(results, plan, data, windows, work)
        if "movielens" in plan.sections:
            _movielens_runs(results, plan, args.movielens, work)
    from longseq.bench.quality_report import write_report

    ml_windows = plan.ml_windows_ending(START + dt.timedelta(days=plan.ml_days - 1)).describe()
    write_report(results.runs, plan, mode, args.report_dir, " ".join(["longseq bench quality", *argv]),
                 windows.describe(), ml_windows)
    print(f"done in {time.perf_counter() - t0:.0f} s; report in {args.report_dir}", flush=True)
    return 0
