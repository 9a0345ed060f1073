"""The compact layout against the request layout, side by side in one run.

    longseq bench compact [--profile bench-1m] [--max-len 10000] [--master local[2]]
                          [--read-days 2] [--work DIR] [--seed 0] [--reuse]

For each profile: generate its raw logs (not timed), then in one Spark session time
  floor:   a plain read + sort by (user_id, event_ts) + write of the raw logs;
  request: the daily builds of every day with --layout request;
  compact: the same with --layout compact;
  shared:  the same days built with the Spark engine's steps that both layouts run
           (quarantine, deduplication, the state, the counts) and no records written,
           which bounds how far below the request layout the compact build can go;
and count, per layout, the history values written (and so decoded by a reader: the request
layout's are the requests' histories, the compact layout's the user-days' sequences), the
bytes of the records and of the state. Then the pyarrow reader reads the last --read-days
days of each layout, alternately, twice each: at full length in file order (scoring) and
shuffled at the trainer's U-shaped lengths (training); the best of the two passes counts.
Each pass runs in a fresh process, whose peak RSS (imports included) is reported.

The reader's own buffers are measured apart, in one more pass per layout and setting
(scoring, training, training with user-days grouped), traced: the peak of pyarrow's memory
pool (decoded row groups) and of numpy + Python allocations (tracemalloc: the windows
materialised, the shuffle buffer, the batch). The same passes read one made-up user who
makes 1,000 requests in a day, each a full --max-len window, in both layouts.

--reuse reads the raw logs and builds an earlier run left in --work (the builds' seconds
are then not measured).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from longseq.bench import bench_parser
from longseq.cli.arguments import add_master, add_work, positive_int
from longseq.schemas.contracts import COMPACT_LAYOUT, LAYOUTS, REQUEST_LAYOUT
from longseq.schemas.errors import LongseqError
from longseq.sources import SAMPLE_START

START = SAMPLE_START
BUSY_REQUESTS = 1_000  # requests of the made-up busy user's day


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
    ap.add_argument("--reuse", action="store_true",
                    help="read the raw logs and builds an earlier run left in --work instead of generating and "
                         "building them (the builds are then not timed)")


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


@dataclass
class Pass:
    """One pass of the pyarrow reader, in a fresh process."""

    seconds: float
    requests: int
    tokens: int  # history events handed out
    rss_mb: float  # the process's peak RSS, imports included
    arrow_mb: float  # the peak of pyarrow's memory pool: the decoded row groups and what Arrow computes from them
    numpy_mb: float | None = None  # traced passes: the peak of numpy and Python allocations (tracemalloc)


def _read_pass(urls: list[str], cfg, traced: bool = False) -> Pass:
    """A pass of the pyarrow reader over urls, run in a fresh process (spawned, so that its
    peaks are the reader's own); traced, it also counts numpy's and Python's allocations,
    after a first batch that makes its imports (slower: not timed)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_one_pass, (urls, cfg, traced))


def _one_pass(urls: list[str], cfg, traced: bool) -> Pass:
    import resource
    import tracemalloc

    import pyarrow as pa

    from longseq.reader.readers import open_reader

    if traced:  # one batch first, untraced, for the modules a pass imports on its way (pandas: 20 MB)
        warm = open_reader(urls, cfg, "arrow").batches(0)
        next(warm, None)
        warm.close()
        tracemalloc.start()
    t = time.perf_counter()
    requests = tokens = 0
    for batch in open_reader(urls, cfg, "arrow").batches(0):
        requests += batch.num_requests
        tokens += batch.num_history_tokens
    seconds = time.perf_counter() - t
    return Pass(seconds, requests, tokens, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                pa.default_memory_pool().max_memory() / 2**20,
                tracemalloc.get_traced_memory()[1] / 2**20 if traced else None)


def write_busy_user_day(directory: Path, max_len: int, requests: int = BUSY_REQUESTS) -> dict[str, list[str]]:
    """One user's day of `requests` requests, each with a full window of max_len events (the
    windows of consecutive requests one event apart) and 3 targets, made up: as user_day rows
    (one row) and as the request records they materialise to, in row groups of the builds'
    decoded size. The file URLs of each layout."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from longseq.dataset.compact import materialize
    from longseq.dataset.layout import ROW_GROUP_BYTES
    from longseq.dataset.storage import file_url
    from longseq.schemas.contracts import DEFAULT_CONTRACTS, day_start_ms
    from longseq.schemas.forms import to_arrow

    rng = np.random.default_rng(0)
    schema = to_arrow(DEFAULT_CONTRACTS.user_day)
    events, targets = max_len + requests - 1, 3 * requests
    event_ts = day_start_ms(START) + (np.arange(events, dtype=np.int64) - max_len + 1) * 1_000  # requests on START
    hist_end = np.arange(max_len, events + 1)
    known = {"hist_event_ts": event_ts, "request_id": [f"busy-{i:04d}" for i in range(requests)],
             "request_ts": event_ts[hist_end - 1] + 500, "hist_end": hist_end, "hist_len": np.full(requests, max_len),
             "tgt_count": np.full(requests, 3)}

    def values(field: pa.Field) -> pa.Array:
        kind = field.type.value_type
        if field.name in known:
            return pa.array(known[field.name], kind)
        n = events if field.name.startswith("hist_") else targets
        return pa.array(rng.integers(0, 2 if kind.bit_width == 8 else 16 if kind.bit_width == 32 else 10**6, n), kind)

    columns = [pa.array([1], field.type) if not pa.types.is_list(field.type) else
               pa.ListArray.from_arrays(pa.array([0, len(v := values(field))], pa.int32()), v).cast(field.type)
               for field in schema]
    user_day = pa.Table.from_arrays(columns, schema=schema)
    records = materialize(user_day)
    urls = {}
    for layout, table in ((COMPACT_LAYOUT, user_day), (REQUEST_LAYOUT, records)):
        (directory / layout).mkdir(parents=True, exist_ok=True)
        path = directory / layout / "part-00000.parquet"
        pq.write_table(table, path, compression="zstd",
                       row_group_size=max(1, ROW_GROUP_BYTES * table.num_rows // max(table.nbytes, 1)))
        urls[layout] = [file_url(str(path))]
    return urls


def _built(spark, work: Path, name: str, args) -> dict:
    """Generate a profile's raw logs, time the floor and both layouts' builds, count what they wrote."""
    from longseq.bench.build_throughput import raw_floor_seconds
    from longseq.etl.batch.build import BuildConfig, build
    from longseq.etl.batch.spark_engine import SparkEngine
    from longseq.sources.generate import PROFILES, generate

    profile = PROFILES[name]
    report = generate(work / "raw", profile, args.seed, START)
    row = {"profile": name, "events": report.rows, "days": profile.days,
           "floor_s": raw_floor_seconds(spark, work / "raw", work / "floor")}
    end = START + dt.timedelta(days=profile.days - 1)
    for layout in LAYOUTS:
        t = time.perf_counter()
        reports = build(SparkEngine(spark), BuildConfig(str(work / "raw"), str(work / layout), START, end, args.max_len,
                                                        layout=layout), log=lambda m: None)
        row[f"{layout}_s"] = time.perf_counter() - t
        row["requests"] = sum(r["requests"] for r in reports)
        print(f"{name} {layout}: build {row[f'{layout}_s']:.1f} s", file=sys.stderr)
    row["shared_s"] = _shared_seconds(spark, work, profile.days, args.max_len)
    print(f"{name} shared steps: {row['shared_s']:.1f} s", file=sys.stderr)
    return row | _stored(work)


def _shared_seconds(spark, work: Path, days: int, max_len: int) -> float:
    """Seconds of every day's Spark build without its records: the steps both layouts run."""
    from longseq.dataset.layout import KINDS, partition_path
    from longseq.etl.batch.spark_engine import SparkEngine
    from longseq.schemas.forms import to_spark

    class SharedSteps(SparkEngine):
        def _write_requests(self, kept, recent, users, max_len, path, c, layout=REQUEST_LAYOUT) -> None:
            self.spark.createDataFrame([], to_spark(c.request_record)).write.parquet(path)

    engine, out, seconds = SharedSteps(spark), work / "shared", 0.0
    prev_state = None
    for i in range(days):
        day = START + dt.timedelta(days=i)
        temps = {kind: partition_path(str(out / kind), day) for kind in KINDS}
        t = time.perf_counter()
        engine.build_day(partition_path(str(work / "raw"), day), prev_state, day, max_len, temps, layout=REQUEST_LAYOUT)
        seconds += time.perf_counter() - t
        prev_state = temps["state"]
    return seconds


def _reused(work: Path, name: str) -> dict:
    """What an earlier run left in work: its raw logs' events and days, its builds' requests."""
    import json

    import pyarrow.parquet as pq

    if not all((work / d).is_dir() for d in ("raw", *LAYOUTS)):
        raise LongseqError(f"--reuse: {work} does not hold an earlier run's raw/ and builds ({', '.join(LAYOUTS)}); "
                           "run once with --work and without --reuse")
    reports = sorted((work / REQUEST_LAYOUT / "reports").glob("ds=*/build.json"))
    return {"profile": name, "events": sum(pq.ParquetFile(f).metadata.num_rows for f in (work / "raw").rglob("*.parquet")),
            "days": len(reports), "requests": sum(json.loads(f.read_text())["requests"] for f in reports)} | _stored(work)


def _stored(work: Path) -> dict:
    """Per layout the history values and MB of the records, and the state's MB."""
    row = {"state_mb": _bytes(work / REQUEST_LAYOUT / "state") / 2**20}
    for layout in LAYOUTS:
        row[f"{layout}_values"] = history_values(work / layout / "requests")
        row[f"{layout}_mb"] = _bytes(work / layout / "requests") / 2**20
    return row


def _passes(max_len: int) -> dict:
    """The reader settings measured: scoring, the trainer's, and the trainer's with user-days grouped."""
    import dataclasses

    from longseq.features.lengths import LengthSampler
    from longseq.reader.steps import ReaderConfig

    multiple = LengthSampler.multiple  # training lengths are multiples of it
    if max_len < multiple:
        raise LongseqError(f"--max-len must be at least {multiple} (the trainer's lengths are multiples of it)")
    lengths = LengthSampler(min_len=min(LengthSampler.min_len, max_len - max_len % multiple), max_len=max_len)
    training = ReaderConfig(batch_size=256, truncation=lengths)  # the trainer's U-shaped lengths
    return {"scoring": ReaderConfig(batch_size=64).for_scoring(), "training": training,
            "training, user-days grouped": dataclasses.replace(training, group_user_days=True)}


def _timed(urls: dict[str, list[str]], passes: dict) -> dict:
    """Reader requests/s and peak RSS per layout, scoring and training: two passes each,
    the layouts alternating, the faster pass counted."""
    row = {}
    for what in ("scoring", "training"):
        best: dict[str, Pass] = {}
        for _ in range(2):
            for layout in LAYOUTS:
                result = _read_pass(urls[layout], passes[what])
                if layout not in best or result.seconds < best[layout].seconds:
                    best[layout] = result
        for layout in LAYOUTS:
            row[f"{layout}_{what}_rps"] = best[layout].requests / best[layout].seconds
            row[f"{layout}_{what}_rss"] = best[layout].rss_mb
    return row


def _traced(data: str, urls: dict[str, list[str]], passes: dict) -> list[dict]:
    """The reader's own buffers per pass and layout: one traced pass each."""
    return [{"data": data, "pass": what, **{layout: _read_pass(urls[layout], cfg, traced=True) for layout in LAYOUTS}}
            for what, cfg in passes.items()]


def _day_urls(requests: Path, days: list[dt.date]) -> list[str]:
    from longseq.dataset.storage import file_url

    return [file_url(str(f)) for d in days for f in sorted((requests / f"ds={d}").glob("*.parquet"))]


def main(argv: list[str]) -> int:
    from longseq.etl.spark_session import SparkConfig, spark_session

    args = bench_parser("compact", __doc__, arguments).parse_args(argv)
    if args.reuse and args.work is None:
        raise LongseqError("--reuse reads what an earlier run left in --work: name that directory")
    work = args.work or Path(tempfile.mkdtemp(prefix="longseq-bench-compact-"))
    spark = None if args.reuse else spark_session(SparkConfig(master=args.master, app_name="longseq-bench-compact"))
    passes = _passes(args.max_len)
    rows, buffers = [], []
    try:
        for name in args.profile.split(","):
            row = _reused(work / name, name) if args.reuse else _built(spark, work / name, name, args)
            end = START + dt.timedelta(days=row["days"] - 1)
            days = [end - dt.timedelta(days=d) for d in range(args.read_days - 1, -1, -1)]
            urls = {layout: _day_urls(work / name / layout / "requests", days) for layout in LAYOUTS}
            rows.append(row | _timed(urls, passes))
            buffers += _traced(f"{name}, the last {args.read_days} day(s)", urls, passes)
        busy = write_busy_user_day(work / "busy", args.max_len)
        buffers += _traced(f"1 user, {BUSY_REQUESTS:,} requests in a day", busy, passes)
    finally:
        if spark is not None:
            spark.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"max_len {args.max_len}, master {args.master}, reader: pyarrow, the last {args.read_days} day(s)"
          f"{'; the builds of an earlier run (--reuse): not timed' if args.reuse else ''}\n")
    _print_table(COLUMNS, rows)
    print("\nThe reader's own buffers, one traced pass each (a fresh process; tracemalloc started after the "
          "imports): the peak of pyarrow's memory pool and of numpy + Python allocations, against the history the "
          "pass hands out\n")
    _print_table(BUFFER_COLUMNS, buffers)
    return 0


def _print_table(columns: list[tuple[str, Callable[[dict], str]]], rows: list[dict]) -> None:
    print("| " + " | ".join(header for header, _ in columns) + " |")
    print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(columns))) + "|")
    for row in rows:
        print("| " + " | ".join(_cell(cell, row) for _, cell in columns) + " |")


def _cell(cell: Callable[[dict], str], row: dict) -> str:
    try:
        return cell(row)
    except KeyError:  # not measured in this run (--reuse: the builds)
        return "–"


def _history_mb(p: Pass) -> float:
    """The history a pass handed out, in MB (the default spec's history columns)."""
    from longseq.schemas.contracts import DEFAULT_CONTRACTS
    from longseq.schemas.forms import to_arrow

    record = to_arrow(DEFAULT_CONTRACTS.request_record)
    per_event = sum(record.field(n).type.value_type.bit_width // 8 for n in DEFAULT_CONTRACTS.history_columns)
    return p.tokens * per_event / 2**20


RQ, CP = REQUEST_LAYOUT, COMPACT_LAYOUT
COLUMNS: list[tuple[str, Callable[[dict], str]]] = [
    ("profile", lambda r: r["profile"]), ("events", lambda r: f"{r['events']:,}"),
    ("requests", lambda r: f"{r['requests']:,}"),
    ("history values request", lambda r: f"{r[f'{RQ}_values']:,}"), ("compact", lambda r: f"{r[f'{CP}_values']:,}"),
    ("compact / request", lambda r: f"{r[f'{CP}_values'] / r[f'{RQ}_values']:.3f}"),
    ("records MB request", lambda r: f"{r[f'{RQ}_mb']:,.1f}"), ("compact", lambda r: f"{r[f'{CP}_mb']:,.1f}"),
    ("compact / request", lambda r: f"{r[f'{CP}_mb'] / r[f'{RQ}_mb']:.2f}"), ("state MB", lambda r: f"{r['state_mb']:,.1f}"),
    ("build s floor", lambda r: f"{r['floor_s']:.1f}"), ("request", lambda r: f"{r[f'{RQ}_s']:.1f}"),
    ("compact", lambda r: f"{r[f'{CP}_s']:.1f}"), ("compact / request", lambda r: f"{r[f'{CP}_s'] / r[f'{RQ}_s']:.2f}"),
    ("compact / floor", lambda r: f"{r[f'{CP}_s'] / r['floor_s']:.1f}x"),
    ("shared steps s", lambda r: f"{r['shared_s']:.1f}"),
    ("own work compact / request", lambda r: f"{(r[f'{CP}_s'] - r['shared_s']) / (r[f'{RQ}_s'] - r['shared_s']):.2f}"),
    *[(header, cell) for what, title in (("scoring", "reader req/s scoring request"), ("training", "training request"))
      for header, cell in ((title, lambda r, w=what: f"{r[f'{RQ}_{w}_rps']:,.0f}"),
                           ("compact", lambda r, w=what: f"{r[f'{CP}_{w}_rps']:,.0f}"),
                           ("ratio", lambda r, w=what: f"{r[f'{CP}_{w}_rps'] / r[f'{RQ}_{w}_rps']:.2f}"))],
    *[(header, lambda r, k=key: f"{r[k]:,.0f}") for header, key in (
        ("peak RSS MB scoring request", f"{RQ}_scoring_rss"), ("compact", f"{CP}_scoring_rss"),
        ("training request", f"{RQ}_training_rss"), ("compact", f"{CP}_training_rss"))],
]
BUFFER_COLUMNS: list[tuple[str, Callable[[dict], str]]] = [
    ("data", lambda r: r["data"]), ("pass", lambda r: r["pass"]), ("requests", lambda r: f"{r[RQ].requests:,}"),
    *[(header, cell) for layout in LAYOUTS for header, cell in (
        (f"{layout}: history MB handed out", lambda r, k=layout: f"{_history_mb(r[k]):,.0f}"),
        ("Arrow pool peak MB", lambda r, k=layout: f"{r[k].arrow_mb:,.1f}"),
        ("numpy + Python peak MB", lambda r, k=layout: f"{r[k].numpy_mb:,.1f}"))],
]
