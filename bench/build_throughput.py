"""Spark build throughput against the I/O floor, side by side in one Spark session.

    longseq bench build [--profile bench-1m,bench-10m] [--max-len 10000] [--master local[*]]
                        [--work DIR] [--seed 0]

For each profile: generate its raw logs (not timed), then in the same JVM time
  floor: a plain Spark read + sort by (user_id, event_ts) + write of the same raw data;
  build: the daily builds of every generated day (etl.batch.build with the Spark engine);
  rewrite: a plain read + sort + write of the built records (the I/O floor of the output:
  records carry up to max_len events each, far more values than the raw input).
Goals: build within 3x of the floor; 10x events cost at most ~11x time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.batch.spark_engine import SparkEngine
from longseq.etl.spark_session import SparkConfig, spark_session
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
from longseq.bench import bench_parser
from longseq.cli.arguments import add_master, add_spec, add_work, dataset_spec, positive_int
from longseq.schemas.contracts import DEFAULT_SPEC

START = SAMPLE_START


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.parquet"))


def raw_floor_seconds(spark, raw: Path, out: Path, logs: dict[str, str] | None = None) -> float:
    """Seconds of a plain Spark read + sort by (user_id, event_ts) + write of the raw logs
    (`logs`: longseq's column names -> theirs), after one read that warms the JVM on this
    data, so that neither the floor nor a build timed after it pays for class loading."""
    logs = logs or {}
    spark.read.parquet(str(raw)).count()
    t = time.perf_counter()
    spark.read.parquet(str(raw)).sort(*(logs.get(c, c) for c in ("user_id", "event_ts"))).write.mode("overwrite").parquet(str(out))
    return time.perf_counter() - t


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench build --help`)."""
    ap.add_argument("--profile", default="bench-1m,bench-10m", metavar="NAME[,NAME...]",
                    help="generator profiles to build (default bench-1m,bench-10m)")
    ap.add_argument("--max-len", type=positive_int, default=10_000, metavar="EVENTS",
                    help="history events the build keeps per request (default 10000)")
    add_master(ap)
    ap.add_argument("--seed", type=int, default=0, help="random seed of the generated logs (default 0)")
    add_spec(ap, "dataset spec of the generated logs and the build (default: the default spec)")
    add_work(ap, None, "the generated data and outputs")


def main(argv: list[str]) -> int:
    ap = bench_parser('build', __doc__, arguments)
    args = ap.parse_args(argv)
    spec = dataset_spec(args)  # None: the default spec
    logs = dict((spec or DEFAULT_SPEC).columns)  # longseq's column names -> the logs'
    work = args.work or Path(tempfile.mkdtemp(prefix="longseq-bench-build-"))
    spark = spark_session(SparkConfig(master=args.master, app_name="longseq-bench-build"))
    rows = []
    try:
        for name in args.profile.split(","):
            profile = PROFILES[name]
            raw, out, floor = work / name / "raw", work / name / "out", work / name / "floor"
            report = generate(raw, profile, args.seed, START, spec=spec or DEFAULT_SPEC)
            floor_s = raw_floor_seconds(spark, raw, floor, logs)
            t = time.perf_counter()
            end = START + dt.timedelta(days=profile.days - 1)
            reports = build(SparkEngine(spark), BuildConfig(str(raw), str(out), START, end, args.max_len, spec=spec), log=lambda m: None)
            build_s = time.perf_counter() - t
            # the output floor: read + sort + write of the built records themselves
            t = time.perf_counter()
            records = spark.read.parquet(str(out / "requests"))
            records.sortWithinPartitions("user_id", "request_ts").write.mode("overwrite").parquet(str(work / name / "rewrite"))
            rewrite_s = time.perf_counter() - t
            rows.append(dict(
                profile=name, events=report.rows, days=profile.days, floor_s=floor_s, build_s=build_s, rewrite_s=rewrite_s,
                requests=sum(r["requests"] for r in reports), raw_mb=_bytes(raw) / 2**20,
                out_mb=_bytes(out / "requests") / 2**20, state_mb=_bytes(out / "state") / 2**20,
                hist_mean=sum(r["history_length"]["mean"] * r["requests"] for r in reports) / max(1, sum(r["requests"] for r in reports)),
            ))
            print(f"{name}: floor {floor_s:.1f} s, build {build_s:.1f} s", file=sys.stderr)
            shutil.rmtree(work / name, ignore_errors=True)
    finally:
        spark.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"max_len {args.max_len}, master {args.master}\n")
    print("| profile | events | days | requests | mean history | floor s | build s | build / floor | floor events/s | "
          "build events/s | rewrite records s | build / rewrite | raw MB | records MB | state MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['profile']} | {r['events']:,} | {r['days']} | {r['requests']:,} | {r['hist_mean']:,.0f} | {r['floor_s']:.1f} | "
            f"{r['build_s']:.1f} | {r['build_s'] / r['floor_s']:.1f}x | {r['events'] / r['floor_s']:,.0f} | "
            f"{r['events'] / r['build_s']:,.0f} | {r['rewrite_s']:.1f} | {r['build_s'] / r['rewrite_s']:.1f}x | {r['raw_mb']:,.0f} | {r['out_mb']:,.0f} | {r['state_mb']:,.0f} |"
        )
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"\nscaling {a['profile']} -> {b['profile']}: {b['events'] / a['events']:.1f}x events, "
              f"{b['build_s'] / a['build_s']:.1f}x build time, {b['floor_s'] / a['floor_s']:.1f}x floor time")
    return 0
