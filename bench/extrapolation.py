"""Does training on short random-length windows carry over to scoring at 10k events?

    longseq bench extrapolation [--quick] [--seed 0] [--candidates embedding-match]
                                [--samplers ushaped,...] [--bucket-pool N] [--work DIR] [--output FILE]

The paper trains on random-length suffixes (mostly short, a few long) and scores full
histories: about 80% of the gain of training at full length for about a third of its cost.
For each candidate model (bench/long_history.py CANDIDATES) this trains one epoch of the
plan's training window at fixed L = 2,000 and 10,000 and with each length sampler
(SAMPLERS: LengthSampler fields), scores the sampled runs at 2,000 and 10,000, and reports
the share of the fixed-10k gain over fixed-2k that each recovers at 10k, and its training
cost against fixed 10k: history events and padded keys read (`history_work`), and seconds.
With --bucket-pool the sampled runs batch requests of similar window length (ReaderConfig
bucket_pool), so that a batch of mostly short windows no longer pads to its one long one.
Runs share bench long-history's cache (its 10k runs are the same). The share is computed on both windows; choices are made on the validation one.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from longseq.bench.long_history import CANDIDATES, LONG, add_arguments, open_sample, run_name
from longseq.bench.quality import Results, mean_auc, plan_config, run
from longseq.features.lengths import LengthSampler
from longseq.bench import bench_parser, names
from longseq.cli.arguments import dataset_spec

BASE = 2_000  # the fixed length the gain is measured from: about the default sampler's mean
# name -> LengthSampler fields (the defaults: Beta(0.1, 0.45) on [256, 10k], mean about 2k)
SAMPLERS: dict[str, dict] = {
    "ushaped": {},
    "ushaped-short": {"alpha": 0.05},  # fewer long windows: mean about 1.2k
    "ushaped-long": {"alpha": 0.2},  # more long windows: mean about 3.4k
    "short-only": {"alpha": 1.0, "beta": 1.0, "max_len": 2_000},  # uniform on [256, 2k]: never sees a long one
    # short-only, and one window in ten the whole record (up to 10k): the long-range matches and the softmax
    # over thousands of keys are seen in training, at a nominal mean of about 2k, the default sampler's
    "short+long": {"alpha": 1.0, "beta": 1.0, "max_len": 2_000, "long_share": 0.1},
    "fixed-256": {"min_len": 256, "max_len": 256},  # the sampler's shortest window, always
}


def history_work(data: Path, span, cfg) -> dict[str, int]:
    """What one epoch of a run's training batches hold, drawn as its training draws them (same
    seed, same length sampler): history events (the jagged work: embeddings, K/V projections)
    and padded keys (each batch's requests times its longest history: what attention padded to
    the batch computes). Counts, unlike seconds on a shared machine, are the same on every run."""
    from longseq.reader.readers import open_published
    from longseq.trainer.train_config import reader_config

    events = padded = 0
    for batch in open_published(str(data), *span, reader_config(cfg)).batches(0):
        n = batch.history.lengths()
        events += int(n.sum())
        padded += len(n) * int(n.max())
    return {"events": events, "padded_keys": padded}


def recovered(fixed_base: dict, fixed_long: dict, sampled: dict, window: str) -> tuple[float, float, float]:
    """(gain of fixed 10k over fixed 2k, gain of the sampled run served at 10k over fixed 2k, their ratio)."""
    base = mean_auc(fixed_base["eval"][window][str(BASE)])
    gain_long = mean_auc(fixed_long["eval"][window][str(LONG)]) - base
    gain_sampled = mean_auc(sampled["eval"][window][str(LONG)]) - base
    return gain_long, gain_sampled, gain_sampled / gain_long if gain_long > 0 else float("nan")


def mean_sd(values: list[float], fmt: str) -> str:
    """'mean ± sd' of values in fmt (a sign only on the mean); one value alone."""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt.lstrip('+'))}"


def sampled_name(candidate: str, sampler: str, seed: int, bucket_pool: int = 0) -> str:
    return f"lh-{candidate}-{sampler}" + (f"-bucket{bucket_pool}" if bucket_pool else "") + f"-s{seed}"


def report(results: Results, candidates: list[str], samplers: list[str], seeds: list[int],
           bucket_pool: int = 0) -> list[str]:
    lines = ["| candidate | training | mean length | test AUC at 2k | test AUC at 10k | test: share of the fixed-10k gain "
             "| valid: share | history events / fixed 10k | padded keys / fixed 10k | train time / fixed 10k |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in candidates:
        for s in samplers:
            rows = [(results.runs.get(run_name(c, BASE, seed, None)), results.runs.get(run_name(c, LONG, seed, None)),
                     results.runs.get(sampled_name(c, s, seed, bucket_pool))) for seed in seeds]
            rows = [r for r in rows if all(r)]
            if not rows:
                continue
            test = [recovered(*r, "test") for r in rows]
            valid = [recovered(*r, "valid") for r in rows]
            at = [[mean_auc(u["eval"]["test"][str(L)]) for _, _, u in rows] for L in (BASE, LONG)]
            cost = [u["train_seconds"] / b["train_seconds"] for _, b, u in rows]
            events, padded = ([u["work"][k] / b["work"][k] for _, b, u in rows if "work" in u and "work" in b]
                              for k in ("events", "padded_keys"))
            mean_len = LengthSampler(**SAMPLERS[s]).mean
            gains = mean_sd([g for g, _, _ in test], "+.4f")
            training = f"{s}, length buckets of {bucket_pool}" if bucket_pool else s
            lines.append(f"| {c} ({len(rows)} seed{'s' * (len(rows) > 1)}; fixed-10k gain {gains}) | {training} | "
                         f"{mean_len:,.0f} | {mean_sd(at[0], '.4f')} | {mean_sd(at[1], '.4f')} | "
                         f"{mean_sd([r for _, _, r in test], '.0%')} | {mean_sd([r for _, _, r in valid], '.0%')} | "
                         f"{mean_sd(events, '.2f') if events else 'n/a'} | {mean_sd(padded, '.2f') if padded else 'n/a'} | "
                         f"{mean_sd(cost, '.2f')} |")
    return lines


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench extrapolation --help`)."""
    add_arguments(ap, seeds="0", candidates="embedding-match")
    ap.add_argument("--samplers", default=",".join(SAMPLERS),
                    help=f"comma-separated, from: {', '.join(SAMPLERS)} (default: all)")
    ap.add_argument("--bucket-pool", type=int, default=0, metavar="N",
                    help="train the sampled runs on length buckets from pools of N requests (default 0: off, "
                         "unlike `longseq train`, so that each sampler is also measured on random batches)")


def main(argv: list[str]) -> int:
    ap = bench_parser('extrapolation', __doc__, arguments)
    args = ap.parse_args(argv)
    candidates = names(ap, "--candidates", args.candidates, CANDIDATES)
    samplers = names(ap, "--samplers", args.samplers, SAMPLERS)
    seeds = args.seed
    plan, work, data, windows, results = open_sample(args.quick, args.work, dataset_spec(args))
    print(f"extrapolation runs on {plan.users} users x {plan.days} days ({windows.describe()}), one epoch each",
          flush=True)
    for c in candidates:
        for seed in seeds:
            runs = [(run_name(c, L, seed, None), (L,),
                     plan_config(plan, seed, truncation=False, max_len=L, model=CANDIDATES[c], max_steps=None))
                    for L in (BASE, LONG)]
            runs += [(sampled_name(c, s, seed, args.bucket_pool), (BASE, LONG),
                      plan_config(plan, seed, truncation=True, length=SAMPLERS[s], model=CANDIDATES[c], max_steps=None,
                              bucket_pool=args.bucket_pool))
                     for s in samplers]
            for name, serve, cfg in runs:
                entry = run(results, name, data, windows, cfg, serve, work)
                if "work" not in entry:
                    entry["work"] = history_work(data, windows.train, cfg)
                    results.save()
    lines = report(results, candidates, samplers, seeds, args.bucket_pool)
    print("\n".join(lines))
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")
    return 0
