"""`longseq demo`: the whole pipeline on a generated sample, printing what each stage did.

Generate raw logs (with 1% dirty rows); build request records with the Spark engine,
validate each built day with Great Expectations and publish them (pipelines/sample.py); read
them back through the trainer's Petastorm reader; train a small STCA on all days but the
last and evaluate it on the last at full history length.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.compute as pc

from longseq.cli.arguments import Command, add_spec, add_work, dataset_spec
from longseq.cli.arguments import progress as cli_progress
from longseq.pipelines.sample import Sample, build_and_publish
from longseq.dataset.raw import read_raw_partition
from longseq.schemas.contracts import DEFAULT_MAX_LEN, DEFAULT_SPEC
from longseq.schemas.spec import DatasetSpec
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate


def summarize_raw(raw: Path, start: dt.date, days: int, spec: DatasetSpec = DEFAULT_SPEC) -> list[str]:
    """A few lines about raw logs, read back through the contract check."""
    tables = [read_raw_partition(raw, start + dt.timedelta(days=d), spec=spec) for d in range(days)]
    rows = sum(t.num_rows for t in tables)
    users = np.concatenate([t.column("user_id").drop_null().to_numpy() for t in tables])
    _, per_user = np.unique(users, return_counts=True)
    requests = sum(len(pc.unique(t.column("request_id"))) for t in tables)
    rates = {task: sum(pc.sum(pc.equal(t.column(task), 1)).as_py() or 0 for t in tables) / max(rows, 1) for task in spec.tasks}
    pct = np.percentile(per_user, [50, 90, 99]).astype(int) if len(per_user) else [0, 0, 0]
    return [
        f"raw logs: {rows:,} impressions, {requests:,} requests, {len(per_user):,} users over {days} days",
        f"  events per user: p50 {pct[0]:,}  p90 {pct[1]:,}  p99 {pct[2]:,}  max {per_user.max() if len(per_user) else 0:,}",
        "  label rates: " + "  ".join(f"{t} {r:.3f}" for t, r in rates.items()),
    ]


def run_demo(out: Path, seed: int = 0, profile: str = "small", progress: Callable[[str], None] = print,
             spec: DatasetSpec | None = None, preset: str = "small") -> int:
    """Every stage on a generated sample under `out` in the shape of `spec` (None: the default
    spec); results to stdout, progress to `progress`."""
    from longseq.etl.batch.engines import make_engine
    from longseq.etl.spark_session import SparkConfig

    p = PROFILES[profile]
    sample = Sample(Path(out) / "raw", Path(out) / "data", SAMPLE_START, SAMPLE_START + dt.timedelta(days=p.days - 1))
    progress(f"[1/4] generate: profile {profile}, {p.users} users, {p.days} days, seed {seed} -> {sample.raw}")
    report = generate(sample.raw, p, seed, sample.start, dirty=0.01, progress=progress, spec=spec or DEFAULT_SPEC)
    lines = summarize_raw(sample.raw, sample.start, p.days, spec or DEFAULT_SPEC)
    lines.append("  dirty rows written: " + ", ".join(f"{k} {v}" for k, v in report.dirty.items()))
    print("\n".join(lines))

    progress(f"[2/4] build (Spark engine, max_len {DEFAULT_MAX_LEN}), validate each day, publish: "
             f"{sample.start}..{sample.end} -> {sample.data}")
    engine = make_engine("spark", SparkConfig(master="local[*]", shuffle_partitions=4, driver_memory="2g"))
    build_and_publish(sample.raw, sample.data, sample.start, sample.end, engine=engine, validate=True, spec=spec,
                      log=progress, show=print)

    progress("[3/4] read the published days back as request batches")
    print(summarize_reader(sample.data, sample.start, sample.end))

    from longseq.trainer.evaluate import evaluate
    from longseq.trainer.train_config import TrainConfig
    from longseq.trainer.train import train

    run = Path(out) / "run"
    train_end = sample.end - dt.timedelta(days=1)
    progress(f"[4/4] train STCA (preset {preset}) on {sample.start}..{train_end}, evaluate on {sample.end} "
             f"at full length -> {run}")
    cfg = TrainConfig(preset=preset, epochs=2, batch_size=64, seed=seed, checkpoint_every=1_000)
    shutil.rmtree(run, ignore_errors=True)  # the demo's own directory: a fresh run each time
    summary = train(str(sample.data), sample.start, train_end, run, cfg, log=progress)
    print(f"train: {summary['steps']} steps, {summary['parameters']:,} parameters; checkpoint {summary['checkpoint']}")
    evaluate(run, str(sample.data), sample.end, log=print)
    return 0


def summarize_reader(data: Path, start: dt.date, end: dt.date) -> str:
    """One training epoch's worth of batches through the Petastorm reader, counted."""
    from longseq.features.lengths import LengthSampler
    from longseq.reader.readers import ReaderConfig, open_published

    cfg = ReaderConfig(batch_size=64, shuffle=True, truncation=LengthSampler())
    requests = tokens = targets = batches = 0
    for batch in open_published(str(data), start, end, cfg).batches(epoch=0):
        batches += 1
        requests, tokens, targets = requests + batch.num_requests, tokens + batch.num_history_tokens, targets + batch.num_targets
    return (f"reader: {requests:,} requests in {batches} shuffled batches, {targets:,} targets, "
            f"{tokens:,} history tokens after training truncation (U-shaped lengths, mean about {cfg.truncation.mean:,.0f})")


def demo_arguments(p: argparse.ArgumentParser) -> None:
    add_work(p, "demo-run", "the sample's raw logs, data and training run; replaced on each run")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sample and the training run (default 0)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="small", help="sample size (default: small)")
    add_spec(p, "dataset spec whose shape the sample takes (docs/SPEC.md; default: the default spec)")
    from longseq.trainer.model_config import PRESETS  # no torch

    p.add_argument("--preset", choices=list(PRESETS), default="small", help="size of the model trained (default small)")


def run_demo_command(args: argparse.Namespace) -> int:
    return run_demo(args.work, seed=args.seed, profile=args.profile, progress=cli_progress, spec=dataset_spec(args), preset=args.preset)


DEMO = Command("demo", "Run the pipeline on a generated sample and print what each stage did.", demo_arguments, run_demo_command)
