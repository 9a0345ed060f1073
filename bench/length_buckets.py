"""Do length buckets in the reader cost quality?

    longseq bench buckets [--quick] [--seed 0,1,2] [--work DIR] [--output FILE]

Training on sampled windows batches requests of similar window length by default
(TrainConfig bucket_pool: BUCKET_POOL requests pooled, sorted, cut into batches), which
changes what a batch holds. For each seed this trains the quality benchmark's U-shaped rows
(the paper's STCA, and with longseq's extensions: bench/quality_plan.py VARIANTS) twice, on
random batches (bucket_pool 0) and on length buckets, scores both at 2k and 10k on the
validation and test windows, and reports each pair and the mean ± sd over seeds of the
difference, with buckets minus without. Runs are cached in the work directory.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from longseq.bench import bench_parser
from longseq.bench.extrapolation import mean_sd
from longseq.bench.long_history import open_sample
from longseq.bench.quality import Results, mean_auc, plan_config, run
from longseq.bench.quality_plan import VARIANTS
from longseq.cli.arguments import add_output, add_work, comma_separated
from longseq.trainer.train_config import BUCKET_POOL

SERVE = (2_000, 10_000)  # the lengths each run is scored at; pairs are compared at the longest


def run_name(variant: str, pool: int, seed: int) -> str:
    return f"buckets-{variant}-ushaped-pool{pool}-s{seed}"


def difference(results: Results, variant: str, seed: int, window: str, L: int = SERVE[-1]) -> tuple[float, float]:
    """(mean AUC without buckets, with them) of one seed's pair, on `window` at L."""
    return tuple(mean_auc(results.runs[run_name(variant, pool, seed)]["eval"][window][str(L)])
                 for pool in (0, BUCKET_POOL))


def report(results: Results, seeds: list[int]) -> list[str]:
    """One row per variant: each seed's validation (test) mean AUC at 10k without -> with
    buckets, then the mean ± sd over seeds of with minus without."""
    lines = ["| model | " + " | ".join(f"seed {s}: valid (test)" for s in seeds)
             + " | valid: with minus without | test: with minus without | train time, with / without |",
             "|---|" + "---|" * len(seeds) + "---:|---:|---:|"]
    for variant in VARIANTS:
        if not all(run_name(variant, pool, s) in results.runs for s in seeds for pool in (0, BUCKET_POOL)):
            continue
        pairs = {w: [difference(results, variant, s, w) for s in seeds] for w in ("valid", "test")}
        cells = [f"{v0:.4f} -> {v1:.4f} ({t0:.4f} -> {t1:.4f})" for (v0, v1), (t0, t1) in zip(pairs["valid"], pairs["test"])]
        times = [results.runs[run_name(variant, BUCKET_POOL, s)]["train_seconds"]
                 / results.runs[run_name(variant, 0, s)]["train_seconds"] for s in seeds]
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {mean_sd([b - a for a, b in pairs['valid']], '+.4f')} | "
                     f"{mean_sd([b - a for a, b in pairs['test']], '+.4f')} | {statistics.mean(times):.2f} |")
    return lines


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench buckets --help`)."""
    ap.add_argument("--quick", action="store_true", help="the quality benchmark's quick sample (150 users x 10 days)")
    ap.add_argument("--seed", type=comma_separated(int), default="0,1,2", metavar="SEED,...",
                    help="training seeds, comma-separated (default: %(default)s)")
    add_work(ap, "bench-work/quality", "shared with `bench quality`")
    add_output(ap, "also write the markdown table to this file")


def main(argv: list[str]) -> int:
    args = bench_parser("buckets", __doc__, arguments).parse_args(argv)
    plan, work, data, windows, results = open_sample(args.quick, args.work, cache="results_buckets.json")
    print(f"length buckets on {plan.users} users x {plan.days} days ({windows.describe()}), {plan.steps} steps "
          f"of {plan.batch}, U-shaped windows, pools of {BUCKET_POOL}", flush=True)
    for seed in args.seed:
        for variant, model in VARIANTS.items():
            for pool in (0, BUCKET_POOL):
                run(results, run_name(variant, pool, seed), data, windows,
                    plan_config(plan, seed, truncation=True, model=model, bucket_pool=pool), SERVE, work)
    lines = report(results, args.seed)
    print("\n".join(lines))
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n")
    return 0
