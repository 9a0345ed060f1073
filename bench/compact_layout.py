"""The compact layout against the request layout, side by side in one run.

    longseq bench compact [--profile bench-1m] [--max-len 10000] [--master local[2]]
                          [--read-days 2] [--work DIR] [--seed 0]

For each profile: generate its raw logs (not timed), then in one Spark session time
  floor:   a plain read + sort by (user_id, event_ts) + write of the raw logs;
  request: the daily builds of every day with --layout request;
  compact: the same with --layout compact;
and count, per layout, the history values written (and so decoded by a reader: the request
layout's are the requests' histories, the compact layout's the user-days' sequences), the
bytes of the records and of the state. Then the pyarrow reader reads the last --read-days
days of each layout, alternately, twice each: at full length in file order (scoring) and
shuffled at the trainer's U-shaped lengths (training); the best of the two passes counts.
Each pass runs in a fresh process, whose peak RSS (imports included) is reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

from longseq.bench import bench_parser
from longseq.cli.arguments import add_master, add_work, positive_int
from longseq.schemas.contracts import COMPACT_LAYOUT, LAYOUTS, REQUEST_LAYOUT
from longseq.sources import SAMPLE_START

START = SAMPLE_START


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench compact --help`)."""
    ap.add_argument("--profile", default="bench-1m", metavar="NAME[,NAME...]",
                    help="generator profiles to build (default bench-1m)")
    ap.add_argument("--max-len", type=positive_int, default=10_000, metavar="EVENTS",
                    help="history events the build keeps per request (default 10000)")
    ap.add_argument("--read-days", type=positive_int, default=2, metavar="DAYS",
                    help="the last DAYS days are read by the reader (default 2)")
    add_master(ap)
    ap.add_argument("--seed", type=int, default=0, help="random seed of the generated logs (default 0)")
    add_work(ap, None, "the generated data and outputs")


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.parquet"))


def history_values(requests: Path) -> int:
    """History events stored in a requests directory, in either layout: the lengths of its
    hist_event_ts lists (a record's history, or a user-day's sequence)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    total = 0
    for f in sorted(requests.rglob("*.parquet")):
        column = pq.read_table(f, columns=["hist_event_ts"]).column("hist_event_ts")
        total += int(pc.sum(pc.list_value_length(column)).as_py() or 0)
    return total


def _read_pass(urls: list[str], cfg) -> tuple[float, int, int, float]:
    """(seconds, requests, history tokens, peak RSS in MB) of one pass of the pyarrow reader,
    run in a fresh process (spawned, so that its peak is the reader's and its imports')."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_one_pass, (urls, cfg))


def _one_pass(urls: list[str], cfg) -> tuple[float, int, int, float]:
    import resource

    from longseq.reader.readers import open_reader

    t = time.perf_counter()
    requests = tokens = 0
    for batch in open_reader(urls, cfg, "arrow").batches(0):
        requests += batch.num_requests
        tokens += batch.num_history_tokens
    return time.perf_counter() - t, requests, tokens, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> int:
    from longseq.dataset.storage import file_url
    from longseq.bench.build_throughput import raw_floor_seconds
    from longseq.etl.batch.build import BuildConfig, build
    from longseq.etl.batch.spark_engine import SparkEngine
    from longseq.etl.spark_session import SparkConfig, spark_session
    from longseq.features.lengths import LengthSampler
    from longseq.reader.steps import ReaderConfig
    from longseq.sources.generate import PROFILES, generate

    args = bench_parser("compact", __doc__, arguments).parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="longseq-bench-compact-"))
    spark = spark_session(SparkConfig(master=args.master, app_name="longseq-bench-compact"))
    rows = []
    try:
        for name in args.profile.split(","):
            profile = PROFILES[name]
            raw = work / name / "raw"
            report = generate(raw, profile, args.seed, START)
            row = {"profile": name, "events": report.rows, "days": profile.days,
                   "floor_s": raw_floor_seconds(spark, raw, work / name / "floor")}
            end = START + dt.timedelta(days=profile.days - 1)
            for layout in LAYOUTS:
                out = work / name / layout
                t = time.perf_counter()
                reports = build(SparkEngine(spark), BuildConfig(str(raw), str(out), START, end, args.max_len, layout=layout),
                                log=lambda m: None)
                row[f"{layout}_s"] = time.perf_counter() - t
                row["requests"] = sum(r["requests"] for r in reports)
                row[f"{layout}_values"] = history_values(out / "requests")
                row[f"{layout}_mb"] = _bytes(out / "requests") / 2**20
                row["state_mb"] = _bytes(out / "state") / 2**20
                print(f"{name} {layout}: build {row[f'{layout}_s']:.1f} s", file=sys.stderr)
            days = [end - dt.timedelta(days=d) for d in range(args.read_days - 1, -1, -1)]
            scoring = ReaderConfig(batch_size=64).for_scoring()
            lengths = LengthSampler(min_len=min(LengthSampler.min_len, args.max_len), max_len=args.max_len)
            training = ReaderConfig(batch_size=256, truncation=lengths)  # the trainer's U-shaped lengths
            for what, cfg in (("scoring", scoring), ("training", training)):
                best: dict[str, tuple[float, int, int, float]] = {}
                for _ in range(2):
                    for layout in LAYOUTS:
                        urls = [file_url(str(f)) for d in days
                                for f in sorted((work / name / layout / "requests" / f"ds={d}").glob("*.parquet"))]
                        result = _read_pass(urls, cfg)
                        if layout not in best or result[0] < best[layout][0]:
                            best[layout] = result
                for layout in LAYOUTS:
                    seconds, requests, tokens, rss = best[layout]
                    row[f"{layout}_{what}_rps"] = requests / seconds
                    row[f"{layout}_{what}_rss"] = rss
                    row[f"{what}_tokens"] = tokens / max(requests, 1)
            rows.append(row)
    finally:
        spark.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"max_len {args.max_len}, master {args.master}, reader: pyarrow, the last {args.read_days} day(s)\n")
    print("| profile | events | requests | history values request | compact | compact / request | records MB request "
          "| compact | compact / request | state MB | build s floor | request | compact | compact / request | "
          "compact / floor | reader req/s scoring request | compact | ratio | training request | compact | ratio | "
          "peak RSS MB scoring request | compact | training request | compact |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
          "---:|---:|---:|---:|")
    for r in rows:
        rq, cp = REQUEST_LAYOUT, COMPACT_LAYOUT
        print(f"| {r['profile']} | {r['events']:,} | {r['requests']:,} | {r[f'{rq}_values']:,} | {r[f'{cp}_values']:,} | "
              f"{r[f'{cp}_values'] / r[f'{rq}_values']:.3f} | {r[f'{rq}_mb']:,.1f} | {r[f'{cp}_mb']:,.1f} | "
              f"{r[f'{cp}_mb'] / r[f'{rq}_mb']:.2f} | {r['state_mb']:,.1f} | {r['floor_s']:.1f} | {r[f'{rq}_s']:.1f} | "
              f"{r[f'{cp}_s']:.1f} | {r[f'{cp}_s'] / r[f'{rq}_s']:.2f} | {r[f'{cp}_s'] / r['floor_s']:.1f}x | "
              f"{r[f'{rq}_scoring_rps']:,.0f} | {r[f'{cp}_scoring_rps']:,.0f} | "
              f"{r[f'{cp}_scoring_rps'] / r[f'{rq}_scoring_rps']:.2f} | {r[f'{rq}_training_rps']:,.0f} | "
              f"{r[f'{cp}_training_rps']:,.0f} | {r[f'{cp}_training_rps'] / r[f'{rq}_training_rps']:.2f} | "
              f"{r[f'{rq}_scoring_rss']:,.0f} | {r[f'{cp}_scoring_rss']:,.0f} | {r[f'{rq}_training_rss']:,.0f} | "
              f"{r[f'{cp}_training_rss']:,.0f} |")
    return 0
