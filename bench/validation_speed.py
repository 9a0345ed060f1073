"""Validation where users run it: GX on pandas (no JVM) against GX on Spark, on small real
days, side by side in one run.

    longseq bench validate [--ratings ../shared/data/movielens-latest-small/ratings.csv] [--days 215]
                           [--spark-days 5] [--master local[2]] [--work DIR]

MovieLens ratings are adapted into --days daily partitions with the MovieLens spec (a
side feature), built with the polars engine (not timed), then validated:
  pandas  both suites (requests, then raw) on every day, in this process: each day's time;
  spark   the Spark session's start, then both suites on the first --spark-days days;
  cli     `longseq validate --engine pandas` of one day, then of every day with each suite
          (its default processes), each a fresh process: its wall time, imports included
          (what a user waits for at the prompt).
Both engines' outcomes on the Spark days must agree check by check (the benchmark stops
otherwise). It prints a markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from longseq.bench import bench_parser
from longseq.cli.arguments import add_master, add_work, local_path, positive_int

REPO = Path(__file__).resolve().parents[1]
RATINGS = REPO.parent / "shared" / "data" / "movielens-latest-small" / "ratings.csv"
SUITES = ("requests", "raw")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ratings", type=local_path, default=RATINGS, metavar="FILE",
                   help=f"a MovieLens ratings.csv (default {RATINGS})")
    p.add_argument("--days", type=positive_int, default=215, help="days the ratings are spread over (default 215)")
    p.add_argument("--spark-days", type=positive_int, default=5,
                   help="days validated with Spark too, the first ones (default 5)")
    add_master(p)
    add_work(p, None, "the adapted logs and their build")


def _quiet(message: str) -> None:
    pass


def _prepare(ratings: Path, work: Path, days: int) -> tuple[Path, Path, list[dt.date]]:
    from longseq.dataset.layout import day_range
    from longseq.etl.batch.build import BuildConfig, build
    from longseq.etl.batch.polars_engine import PolarsEngine
    from longseq.sources import SAMPLE_START
    from longseq.schemas.spec import load_spec
    from longseq.sources.movielens import MOVIELENS_SPEC_FILE, MovieLensMapping, adapt_movielens

    raw, data, spec = work / "raw", work / "data", load_spec(MOVIELENS_SPEC_FILE)
    adapt_movielens(ratings, raw, mapping=MovieLensMapping(days=days), spec=spec)
    end = SAMPLE_START + dt.timedelta(days=days - 1)
    build(PolarsEngine(), BuildConfig(str(raw), str(data), SAMPLE_START, end, spec=spec), log=_quiet)
    return raw, data, day_range(SAMPLE_START, end)


def _timed_days(spark, engine: str, raw: Path, data: Path, days: list[dt.date]) -> dict[str, list[tuple[float, dict]]]:
    """suite -> [(seconds, outcome)] of each day."""
    from longseq.etl.gates.validation import validate

    results: dict[str, list[tuple[float, dict]]] = {}
    for suite in SUITES:
        results[suite] = []
        for day in days:
            t = time.perf_counter()
            outcome = validate(spark, str(data), day, suite, raw=str(raw), engine=engine)
            results[suite].append((time.perf_counter() - t, outcome))
    return results


def _rows(data: Path, days: list[dt.date]) -> list[int]:
    import json

    from longseq.dataset.layout import BuildLayout

    layout = BuildLayout(str(data))
    return [json.loads(Path(layout.report(day)).read_text())["rows_read"] for day in days]


def _cli_seconds(data: Path, raw: Path, suite: str, start: dt.date, end: dt.date) -> float:
    """Wall time of `longseq validate --engine pandas` in a fresh process, its default jobs."""
    t = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("longseq")), "validate", "--engine", "pandas", "--suite", suite,
                    "--data", str(data), "--raw", str(raw), "--start", str(start), "--end", str(end)],
                   check=True, capture_output=True)
    return time.perf_counter() - t


def _default_jobs(days: int) -> int:
    from longseq.cli.data_commands import default_validation_jobs

    return default_validation_jobs("pandas", days)


def main(argv: list[str] | None = None) -> int:
    args = bench_parser("validate", __doc__, arguments).parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="longseq-bench-validate-"))
    try:
        return _run(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> int:
    from longseq.etl.gates.validation import outcome_rows
    from longseq.etl.spark_session import SparkConfig, spark_session

    t = time.perf_counter()
    raw, data, days = _prepare(args.ratings, work, args.days)
    rows = _rows(data, days)
    print(f"adapted and built {len(days)} days ({sum(rows):,} ratings) in {time.perf_counter() - t:.1f} s",
          file=sys.stderr, flush=True)
    spark_days = days[:args.spark_days]

    pandas = _timed_days(None, "pandas", raw, data, days)
    t = time.perf_counter()
    spark = spark_session(SparkConfig(master=args.master, shuffle_partitions=2))
    spark_start = time.perf_counter() - t
    on_spark = _timed_days(spark, "spark", raw, data, spark_days)
    for suite in SUITES:  # the same outcome, or the timings compare different work
        for (_, a), (_, b) in zip(on_spark[suite], pandas[suite]):
            if outcome_rows(a) != outcome_rows(b):
                raise SystemExit(f"the engines disagree on {suite} ds={a['ds']}: {outcome_rows(a)} != {outcome_rows(b)}")
    one = days[min(range(len(days)), key=lambda i: abs(rows[i] - statistics.median(rows)))]
    cli = _cli_seconds(data, raw, "requests", one, one)
    cli_all = {suite: _cli_seconds(data, raw, suite, days[0], days[-1]) for suite in SUITES}

    def per_day(results: dict, suite: str, first: int | None = None) -> float:
        return statistics.median(s for s, _ in results[suite][:first])

    both_pandas = sum(s for suite in SUITES for s, _ in pandas[suite])
    both_spark_day = sum(per_day(on_spark, suite) for suite in SUITES)
    print(f"{len(days)} MovieLens days, median {statistics.median(rows):.0f} raw rows a day "
          f"(min {min(rows)}, max {max(rows)}); Spark {args.master} on the first {len(spark_days)}\n")
    print("| | pandas | spark | pandas / spark |")
    print("|---|---:|---:|---:|")
    for suite in SUITES:
        a, b = per_day(pandas, suite, len(spark_days)), per_day(on_spark, suite)
        print(f"| {suite} suite, s a day (median, first {len(spark_days)} days) | {a:.2f} | {b:.2f} | {a / b:.2f} |")
    print(f"| Spark session start, s | | {spark_start:.1f} | |")
    for suite in SUITES:
        print(f"| {suite} suite, all {len(days)} days, s | {sum(s for s, _ in pandas[suite]):.1f} | | |")
    print(f"| both suites, all {len(days)} days, s | {both_pandas:.1f} | {spark_start + len(days) * both_spark_day:.0f} "
          f"(estimated: start + days x a day) | {both_pandas / (spark_start + len(days) * both_spark_day):.3f} |")
    print(f"| both suites, s a day (median over all days) | {per_day(pandas, 'requests') + per_day(pandas, 'raw'):.2f} "
          f"| {both_spark_day:.2f} | |")
    print(f"| `longseq validate --engine pandas` of one {rows[days.index(one)]}-row day, process wall s | {cli:.1f} | | |")
    for suite in SUITES:
        print(f"| `longseq validate --engine pandas --suite {suite}` of all {len(days)} days ({_default_jobs(len(days))} "
              f"processes, the default here), process wall s | {cli_all[suite]:.1f} | | |")
    return 0
