"""`longseq demo`: the whole pipeline on a generated sample, printing what each stage did.

Stages so far: generate raw logs (with 1% dirty rows), build request records with the
Spark engine, validate each built day with Great Expectations, publish the days that
passed and read them back through the trainer's Petastorm reader, train a small STCA on
all days but the last and evaluate it on the last at full history length.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.compute as pc

from etl.generate import PROFILES, generate
from etl.raw_logs import read_raw_partition
from schemas.contracts import TASKS

DEMO_START = dt.date(2026, 1, 1)


def summarize_raw(raw: Path, start: dt.date, days: int) -> list[str]:
    """A few lines about raw logs, read back through the contract check."""
    tables = [read_raw_partition(raw, start + dt.timedelta(days=d)) for d in range(days)]
    rows = sum(t.num_rows for t in tables)
    users = np.concatenate([t.column("user_id").drop_null().to_numpy() for t in tables])
    _, per_user = np.unique(users, return_counts=True)
    requests = sum(len(pc.unique(t.column("request_id"))) for t in tables)
    rates = {task: sum(pc.sum(pc.equal(t.column(task), 1)).as_py() or 0 for t in tables) / max(rows, 1) for task in TASKS}
    pct = np.percentile(per_user, [50, 90, 99]).astype(int) if len(per_user) else [0, 0, 0]
    return [
        f"raw logs: {rows:,} impressions, {requests:,} requests, {len(per_user):,} users over {days} days",
        f"  events per user: p50 {pct[0]:,}  p90 {pct[1]:,}  p99 {pct[2]:,}  max {per_user.max() if len(per_user) else 0:,}",
        "  label rates: " + "  ".join(f"{t} {r:.3f}" for t, r in rates.items()),
    ]


def run_demo(out: Path, seed: int = 0, profile: str = "small", progress: Callable[[str], None] = print) -> int:
    from etl.build import BuildConfig, build
    from etl.engines import make_engine
    from etl.spark_session import SparkConfig

    out = Path(out)
    raw, built = out / "raw", out / "built"
    p = PROFILES[profile]
    progress(f"[1/5] generate: profile {profile}, {p.users} users, {p.days} days, seed {seed} -> {raw}")
    report = generate(raw, p, seed, DEMO_START, dirty=0.01, progress=progress)
    lines = summarize_raw(raw, DEMO_START, p.days)
    lines.append("  dirty rows written: " + ", ".join(f"{k} {v}" for k, v in report.dirty.items()))
    print("\n".join(lines))

    end = DEMO_START + dt.timedelta(days=p.days - 1)
    progress(f"[2/5] build: Spark engine, max_len 10000, {DEMO_START}..{end} -> {built}")
    engine = make_engine("spark", SparkConfig(master="local[*]", shuffle_partitions=4, driver_memory="2g"))
    reports = build(engine, BuildConfig(str(raw), str(built), DEMO_START, end), log=progress)
    print(summarize_build(reports))

    from etl.validation import validate

    progress(f"[3/5] validate: the requests suite on each built day -> {built}/validation/")
    failed = []
    for report in reports:
        day = dt.date.fromisoformat(report["ds"])
        outcome = validate(engine.spark, str(built), day, "requests")
        warnings = sum(1 for r in outcome["checks"] if not r["success"] and not r["critical"])
        print(f"validate ds={day}: {'PASSED' if outcome['passed'] else 'FAILED'} "
              f"({len(outcome['checks'])} expectations, {warnings} warnings); Data Docs: {outcome['docs']}")
        failed += [] if outcome["passed"] else [day]
    if failed:
        return 1

    from etl.publish import publish

    progress(f"[4/5] publish {DEMO_START}..{end}, then read it back as request batches")
    publish(str(built), DEMO_START, end, log=print)
    print(summarize_reader(built, DEMO_START, end))

    from trainer.evaluate import evaluate
    from trainer.train import TrainConfig, train

    run = out / "run"
    train_end = end - dt.timedelta(days=1)
    progress(f"[5/5] train STCA (preset small) on {DEMO_START}..{train_end}, evaluate on {end} at full length -> {run}")
    cfg = TrainConfig(preset="small", epochs=2, batch_size=64, seed=seed, checkpoint_every=1_000)
    shutil.rmtree(run, ignore_errors=True)  # the demo's own directory: a fresh run each time
    summary = train(str(built), DEMO_START, train_end, run, cfg, log=progress)
    print(f"train: {summary['steps']} steps, {summary['parameters']:,} parameters; checkpoint {summary['checkpoint']}")
    evaluate(run, str(built), end, log=print)
    return 0


def summarize_reader(built: Path, start: dt.date, end: dt.date) -> str:
    """One training epoch's worth of batches through the Petastorm reader, counted."""
    from features.lengths import LengthSampler
    from trainer.reader import ReaderConfig, open_published

    cfg = ReaderConfig(batch_size=64, shuffle=True, truncation=LengthSampler())
    requests = tokens = targets = batches = 0
    for batch in open_published(str(built), start, end, cfg).batches(epoch=0):
        batches += 1
        requests, tokens, targets = requests + batch.num_requests, tokens + batch.num_history_tokens, targets + batch.num_targets
    return (f"reader: {requests:,} requests in {batches} shuffled batches, {targets:,} targets, "
            f"{tokens:,} history tokens after training truncation (U-shaped lengths, mean about {cfg.truncation.mean:,.0f})")


def summarize_build(reports: list[dict]) -> str:
    rows = sum(r["rows_read"] for r in reports)
    quarantined: dict[str, int] = {}
    for r in reports:
        for k, v in r["quarantined"].items():
            quarantined[k] = quarantined.get(k, 0) + v
    last = reports[-1]["history_length"]
    return "\n".join([
        f"build: {rows:,} rows -> {sum(r['requests'] for r in reports):,} request records, "
        f"{sum(r['targets'] for r in reports):,} targets",
        f"  quarantined {sum(quarantined.values()):,}: " + ", ".join(f"{k} {v}" for k, v in sorted(quarantined.items()) if v),
        f"  duplicates removed {sum(r['duplicates'] for r in reports):,}; requests with no valid impression "
        f"{sum(r['requests_without_valid_impressions'] for r in reports):,}",
        f"  history length on the last day: p50 {last['p50']:,.0f}  p90 {last['p90']:,.0f}  p99 {last['p99']:,.0f}  "
        f"max {last['max']:,.0f}",
    ])
