"""Does a model use long histories? Each candidate trained and scored at L = 1,000 and 10,000.

    longseq bench long-history [--quick] [--seed 0,1,2] [--candidates paper,embedding-match]
                               [--steps N] [--no-split] [--work DIR] [--output FILE]

The generator plants its long-range signal in niche topics only (docs/GENERATOR.md): a
niche topic turns up a few times in 10k events, so a model that uses a long history gains
there from 1k to 10k, and a model that does not stays flat. Each run trains the candidate
(the paper's STCA with one change, CANDIDATES) for one epoch of the plan's training window
(or --steps batches) at a fixed history length, is evaluated on the validation and test windows
(bench/quality.py `run`, cached), and its test scores are split by target: niche-topic
and main-topic. Choices are made on the validation gain; the test gain is only reported.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from longseq.bench.quality import Results, mean_auc, plan_config, prepare_generated, run
from longseq.bench.quality_plan import PLANS, Plan, Windows, spec_suffix
from longseq.trainer.model_config import EMBEDDING_MATCH
from longseq.bench import bench_parser, names
from longseq.cli.arguments import add_output, add_spec, add_work, comma_separated, dataset_spec, positive_int

SHORT, LONG = 1_000, 10_000
# name -> model overrides of the paper's STCA; docs/TRAINER.md says what each is
CANDIDATES: dict[str, dict] = {
    "paper": {},
    "id-match": {"match_prior": 1.0},  # raw id equality: the extension this bench looks for a learned answer to
    "embedding-match": EMBEDDING_MATCH,
    "embedding-match+hashes2": {**EMBEDDING_MATCH, "hashes": 2},
    "hashes2": {"hashes": 2},
    "tables16x": {"item_buckets": 1 << 18, "author_buckets": 1 << 16},  # the small preset's tables
    "qk-norm": {"qk_norm": 10.0},
    "length-scaled": {"length_scaled": True},
    "embedding-match+length-scaled": {**EMBEDDING_MATCH, "length_scaled": True},
}


def niche_items(plan: Plan) -> np.ndarray:
    """The item ids of the generated sample's niche topics, sorted."""
    from longseq.sources.generate import PROFILES, build_catalogue

    profile = PROFILES["default"].with_sizes(plan.users, plan.days)
    catalogue = build_catalogue(profile, seed=0)  # prepare_generated's seed
    return np.sort(catalogue.item_id[catalogue.topic >= profile.main_topics])


def split_auc(run_dir: Path, data: Path, span, L: int, niche: np.ndarray) -> dict[str, float]:
    """Mean AUC over tasks of the run's test scores: all targets, niche-topic ones, main-topic ones."""
    from longseq.trainer.evaluate import load_model, scored_batches
    from longseq.trainer.metrics import weighted_auc

    model, _, _ = load_model(run_dir)
    labels, logits, is_niche = [], [], []
    for s in scored_batches(model, str(data), *span, L):
        labels.append(s.batch.labels().numpy())
        logits.append(s.logits)
        is_niche.append(np.isin(s.batch.targets["item_id"].numpy(), niche))
    y, p, n = np.concatenate(labels), np.concatenate(logits), np.concatenate(is_niche)
    out = {}
    for name, keep in (("all", np.ones_like(n)), ("niche", n), ("main", ~n)):
        out[name] = statistics.mean(weighted_auc(y[keep, k], p[keep, k], np.ones(int(keep.sum())))
                                    for k in range(y.shape[1]))
    out["niche_share"] = float(n.mean())
    return out


def _stat(values: list[float]) -> str:
    return f"{statistics.mean(values):+.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:+.4f}"


def _level(values: list[float]) -> str:
    return _stat(values).lstrip("+")


def run_name(candidate: str, L: int, seed: int, steps: int | None) -> str:
    return f"lh-{candidate}-L{L}-s{seed}" + (f"-steps{steps}" if steps else "")


def report(results: Results, candidates: list[str], seeds: list[int], steps: int | None = None) -> list[str]:
    lines = ["| candidate | test AUC, L = 1k | test AUC, L = 10k | test gain | valid gain | niche AUC 1k -> 10k "
             "| main AUC 1k -> 10k | train s at 10k |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in candidates:
        pairs = [(results.runs.get(run_name(c, SHORT, s, steps)), results.runs.get(run_name(c, LONG, s, steps)))
                 for s in seeds]
        pairs = [(a, b) for a, b in pairs if a and b]
        if not pairs:
            continue

        def auc(r, L, window="test"):
            return mean_auc(r["eval"][window][str(L)])

        short, long = [auc(a, SHORT) for a, _ in pairs], [auc(b, LONG) for _, b in pairs]
        gain = [auc(b, LONG) - auc(a, SHORT) for a, b in pairs]
        valid_gain = [auc(b, LONG, "valid") - auc(a, SHORT, "valid") for a, b in pairs]
        split = [(a, b) for a, b in pairs if "split" in a and "split" in b]  # --no-split runs have none

        def side(part: str) -> str:
            if not split:
                return "n/a"
            return (f"{statistics.mean(a['split'][part] for a, _ in split):.4f} -> "
                    f"{statistics.mean(b['split'][part] for _, b in split):.4f}"
                    + (f" ({len(split)} seed{'s' * (len(split) > 1)})" if len(split) != len(pairs) else ""))

        niche, main = side("niche"), side("main")
        seconds = statistics.mean(b["train_seconds"] for _, b in pairs)
        lines.append(f"| {c} ({len(pairs)} seed{'s' * (len(pairs) > 1)}) | {_level(short)} | {_level(long)} | "
                     f"{_stat(gain)} | {_stat(valid_gain)} | {niche} | {main} | {seconds:,.0f} |")
    return lines


def add_arguments(ap: argparse.ArgumentParser, seeds: str, candidates: str) -> None:
    """The options bench long-history and bench extrapolation share."""
    ap.add_argument("--quick", action="store_true", help="the quality benchmark's quick sample (150 users x 10 days)")
    ap.add_argument("--seed", type=comma_separated(int), default=seeds, metavar="SEED,...",
                    help="training seeds, comma-separated (default: %(default)s)")
    ap.add_argument("--candidates", default=candidates,
                    help=f"comma-separated, from: {', '.join(CANDIDATES)} (default: %(default)s)")
    add_work(ap, "bench-work/quality", "shared with `bench quality`")
    add_spec(ap, "dataset spec of the generated sample (default: the default spec); shared with `bench quality "
                 "--spec` of the same file")
    add_output(ap, "also write the markdown table to this file")


def open_sample(quick: bool, work_root: Path, spec=None, cache: str = "results_long_history.json"
                ) -> tuple[Plan, Path, Path, Windows, Results]:
    """The plan, its work directory, its sample (generated in the shape of `spec`, built and
    published once), its windows and a results cache (the work directory's file `cache`)."""
    from longseq.trainer.distributed import tune_cpu_process

    tune_cpu_process()  # as training sets its process up: the cores this process may use
    mode = "quick" if quick else "full"
    plan, work = PLANS[mode], work_root / (mode + spec_suffix(spec))
    work.mkdir(parents=True, exist_ok=True)
    data, end = prepare_generated(work, plan, spec)
    return plan, work, data, plan.windows(end), Results.load(work / cache)


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench long-history --help`)."""
    add_arguments(ap, seeds="0,1,2", candidates=",".join(CANDIDATES))
    ap.add_argument("--no-split", action="store_true", help="skip the niche/main split of test AUC (it scores the "
                                                            "test window a second time)")
    ap.add_argument("--steps", type=positive_int, help="train this many batches (crossing epochs if need be) instead of one "
                                              "epoch of the training window")


def main(argv: list[str]) -> int:
    ap = bench_parser('long-history', __doc__, arguments)
    args = ap.parse_args(argv)
    candidates = names(ap, "--candidates", args.candidates, CANDIDATES)
    seeds = args.seed
    if args.steps is not None and args.steps < 1:
        ap.error("--steps must be >= 1")
    plan, work, data, windows, results = open_sample(args.quick, args.work, dataset_spec(args))
    niche = niche_items(plan)
    length = f"{args.steps} steps" if args.steps else "one epoch"
    print(f"long-history runs on {plan.users} users x {plan.days} days ({windows.describe()}), {length} each",
          flush=True)
    for c in candidates:
        for seed in seeds:
            for L in (SHORT, LONG):
                name = run_name(c, L, seed, args.steps)
                # one epoch of the training window (max_steps None; the quick plan's 150 steps undertrain), or
                # --steps batches, on into further epochs if the window has fewer
                budget = {"max_steps": args.steps, "epochs": 100} if args.steps else {"max_steps": None}
                cfg = plan_config(plan, seed, truncation=False, max_len=L, model=CANDIDATES[c], **budget)
                entry = run(results, name, data, windows, cfg, (L,), work)
                if "split" not in entry and not args.no_split:
                    entry["split"] = split_auc(work / "runs" / name, data, windows.test, L, niche)
                    results.save()
    lines = report(results, candidates, seeds, args.steps)
    print("\n".join(lines))
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")
    return 0
