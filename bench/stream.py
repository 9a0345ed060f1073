"""The stream (`longseq stream`) against the daily build, on this machine.

    longseq bench stream [--profile bench-1m] [--days 2] [--files 240] [--lateness 10m] [--watermark-delay 2m]
                         [--max-len 10000] [--master local[*]] [--live-for 90s] [--work DIR] [--seed 0]

1. cost: the same generated days as `longseq stream --once` over the rows cut into files,
   and as `longseq build --engine spark`, each a subprocess: wall seconds and CPU seconds of
   the whole process tree (driver, JVM, Python workers; sampled from /proc), and the stream's
   sustained events/s (rows over the time from its first micro-batch commit to its last,
   without the JVM start and the flush). The two outputs must be the same bytes.
2. latency: a continuous stream (trigger 1 s) fed by a lander that writes the last day's rows
   as files at half the sustained rate, in event-time order: event time runs k times faster
   than wall time, k chosen so. For each request: landing of its last row -> commit of the
   micro-batch that wrote its record, and -> close of its hour; p50 and p99 in wall seconds.
   The event-time waits (lateness + watermark delay, then the rest of the hour) are in them,
   divided by k.
3. state: the stream's state per user, as the Arrow blob a user's state is after the last
   day (etl/stream/state.py): p50, p99, mean, max bytes; and the RocksDB checkpoint on disk
   divided by users.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from longseq.dataset.parquet_files import read_arrow
from longseq.etl.stream.state import from_user_state
from longseq.schemas.contracts import DEFAULT_SPEC, contracts_of
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
from longseq.bench import bench_parser
from longseq.cli.arguments import add_master, add_spec, add_work, dataset_spec, duration, positive_int
from longseq.schemas.spec import DatasetSpec
from longseq.schemas.durations import format_duration

LONGSEQ = str(Path(sys.executable).with_name("longseq"))
HOUR_MS = 3_600_000


def run_measured(cmd: list[str], stop_after: float | None = None, env: dict | None = None) -> dict:
    """Run a command; wall seconds and CPU seconds of its whole process tree (sampled), in all
    and by kind of process (`by_kind`: the command's own process, the JVM, Python workers)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    cpu: dict[int, float] = {}
    kinds: dict[int, str] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        for p in tree:
            try:  # one process gone since the listing leaves the others' samples standing
                times = p.cpu_times()
                cpu[p.pid] = times.user + times.system + times.children_user + times.children_system
                # named at each sample: the JVM starts as spark-submit's shell and execs java
                kinds[p.pid] = "driver" if p.pid == root.pid else _kind(p.name())
            except psutil.Error:
                pass
        if stop_after is not None and time.perf_counter() - t0 > stop_after:
            os.killpg(proc.pid, signal.SIGTERM)
            stop_after = None
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}): {err[-2000:]}")
    by_kind: dict[str, float] = {}
    for pid, seconds in cpu.items():
        by_kind[kinds.get(pid, "other")] = by_kind.get(kinds.get(pid, "other"), 0.0) + seconds
    return {"wall_s": time.perf_counter() - t0, "cpu_s": sum(cpu.values()), "by_kind": by_kind, "stdout": out}


def _kind(name: str) -> str:
    return "JVM" if name == "java" else "Python workers" if name.startswith("python") else "other"


def arrival_files(raw: Path, days: list[dt.date], n_files: int, shuffle_ms: int, seed: int,
                  spec: DatasetSpec = DEFAULT_SPEC) -> list[tuple[int, dt.date, pa.Table]]:
    """The rows of the days in event-time order, each moved by up to 0.9 shuffle_ms, cut into
    about n_files files of one ds each: (the latest event_ts in the file, ds, rows), with the
    columns named as the logs of `spec` name them."""
    rng = random.Random(seed)
    names = contracts_of(spec).raw_log.names
    logs = [spec.raw_names.get(n, n) for n in names]
    tables = {d: read_arrow(f"{raw}/ds={d}", contracts_of(spec).raw_log, names=spec.raw_names) for d in days}
    keyed = []
    for d, table in tables.items():
        ts = table.column("event_ts").to_pylist()
        keyed += [((t or 0) + rng.uniform(0, 0.9 * shuffle_ms), d, i) for i, t in enumerate(ts)]
    keyed.sort(key=lambda k: (k[0], str(k[1]), k[2]))
    per_file = max(1, len(keyed) // n_files)
    files, run = [], []
    # consecutive runs of one ds: every file's rows come after all earlier files' in the order
    for k in keyed + [None]:
        if run and (k is None or k[1] != run[0][1] or len(run) >= per_file):
            files.append((int(run[-1][0]), run[0][1], tables[run[0][1]].take([r[2] for r in run]).select(list(names)).rename_columns(logs)))
            run = []
        if k is not None:
            run.append(k)
    return files


def _land(landing: Path, n: int, day: dt.date, table: pa.Table, mtime: float | None = None) -> Path:
    part = landing / f"ds={day}"
    part.mkdir(parents=True, exist_ok=True)
    temp, final = part / f".f-{n:06d}.parquet", part / f"f-{n:06d}.parquet"
    pq.write_table(table, temp)
    os.replace(temp, final)
    if mtime is not None:
        os.utime(final, (mtime, mtime))
    return final


def _rows(directory: Path, drop: tuple[str, ...] = ()) -> list:
    """A directory's rows in a canonical order (the Spark engine writes other files and orders)."""
    rows = [{k: v for k, v in r.items() if k not in drop}
            for f in sorted(directory.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _commits(data: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in (data / "stream" / "commits").glob("*.json")),
                  key=lambda r: r["batch"])


def _percentiles(xs: list[float]) -> dict:
    a = np.asarray(xs, dtype=float)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean()),
            "max": float(a.max()), "n": int(len(a))}


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench stream --help`)."""

    ap.add_argument("--profile", default="bench-1m", help="generator profile of the logs (default bench-1m)")
    ap.add_argument("--days", type=positive_int, default=2, help="days of logs (default 2)")
    ap.add_argument("--files", type=positive_int, default=240,
                    help="about how many files the days land as in the cost run; a file also ends at each change of "
                         "day in event-time order, so there are more (default 240)")
    ap.add_argument("--lateness", type=duration, default=10 * 60_000, metavar="DURATION",
                    help="the stream's and build's lateness bound (default 10m)")
    ap.add_argument("--watermark-delay", type=duration, default=2 * 60_000, metavar="DURATION",
                    help="the stream's watermark delay (default 2m)")
    ap.add_argument("--max-len", type=positive_int, default=10_000, metavar="EVENTS",
                    help="history events kept per request (default 10000)")
    add_master(ap)
    ap.add_argument("--live-for", type=duration, default=90_000, metavar="DURATION",
                    help="how long the lander feeds the live stream of the latency run (default 90s)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the generated logs (default 0)")
    add_spec(ap, "dataset spec of the generated logs, the stream and the build (default: the default spec)")
    add_work(ap, None, "the generated data and outputs")


def main(argv: list[str]) -> int:
    ap = bench_parser('stream', __doc__, arguments)
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="longseq-bench-stream-"))
    lateness, delay = args.lateness, args.watermark_delay
    spec = dataset_spec(args) or DEFAULT_SPEC
    profile = PROFILES[args.profile].with_sizes(users=None, days=args.days)
    days = [SAMPLE_START + dt.timedelta(days=i) for i in range(args.days)]
    spark_args = ["--master", args.master, "--driver-memory", "2g"]
    try:
        raw = work / "raw"
        if not raw.exists():
            generate(raw, profile, args.seed, SAMPLE_START, spec=spec)
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in raw.rglob("*.parquet"))

        # 1. cost: the stream over landed files against the daily build of the same days
        landing = work / "landing"
        shutil.rmtree(landing, ignore_errors=True)
        files = arrival_files(raw, days, args.files, delay, args.seed, spec)
        for n, (_, day, table) in enumerate(files):
            _land(landing, n, day, table, mtime=1_700_000_000 + n)
        for d in ("stream-data", "stream-ckpt", "batch-data"):
            shutil.rmtree(work / d, ignore_errors=True)
        common = ["--lateness", format_duration(lateness), "--max-len", str(args.max_len),
                  *(["--spec", str(args.spec)] if args.spec else [])]
        stream = run_measured([LONGSEQ, "stream", "--once", "--raw", str(landing), "--data", str(work / "stream-data"),
                               "--checkpoint", str(work / "stream-ckpt"), "--watermark-delay", format_duration(delay),
                               "--max-files-per-trigger", str(max(1, len(files) // 20)), "--state-partitions", "2",
                               *common, *spark_args])
        batch = run_measured([LONGSEQ, "build", "--engine", "spark", "--raw", str(raw), "--data", str(work / "batch-data"),
                              "--start", str(days[0]), "--end", str(days[-1]), "--shuffle-partitions", "4",
                              *common, *spark_args])
        commits = [c for c in _commits(work / "stream-data") if any(v.get("rows_read") for v in c["counts"].values())]
        span = commits[-1]["committed_at"] - commits[0]["committed_at"]
        first_rows = sum(v.get("rows_read", 0) for v in commits[0]["counts"].values())
        sustained = (rows - first_rows) / span if span > 0 else float("nan")
        # the quarantine of a day is its rows at close plus those that came after (after_close.json):
        # all in stream/quarantine/ds=D/
        same = all(_rows(work / "stream-data" / k / f"ds={d}") == _rows(work / "batch-data" / k / f"ds={d}")
                   for d in days for k in ("requests", "state")) and all(
            _rows(work / "stream-data" / "stream" / "quarantine" / f"ds={d}", drop=("ds",))
            == _rows(work / "batch-data" / "quarantine" / f"ds={d}") for d in days)

        # 3. state per user, after the last day
        states = read_arrow(f"{work}/stream-data/state/ds={days[-1]}", contracts_of(spec).user_state).to_pylist()
        blobs = [len(from_user_state(r, days[-1], spec).encode()) for r in states]
        rocks = sum(f.stat().st_size for f in (work / "stream-ckpt" / "spark" / "state").rglob("*") if f.is_file())

        # 2. latency: a live stream fed at half the sustained rate
        latency = _latency(work, raw, days, sustained / 2, lateness, delay, args, spark_args, spec)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"## Stream against the daily build ({args.profile}, {args.days} days, {rows:,} events, max_len "
          f"{args.max_len}, lateness {format_duration(lateness)}, watermark delay {format_duration(delay)}, {args.master})\n")
    print("| run | wall s | CPU s | events/s (wall) |")
    print("|---|---:|---:|---:|")
    print(f"| `longseq stream --once` ({len(files)} files, {len(commits)} micro-batches with data) | "
          f"{stream['wall_s']:.1f} | {stream['cpu_s']:.1f} | {rows / stream['wall_s']:,.0f} |")
    print(f"| `longseq build --engine spark` | {batch['wall_s']:.1f} | {batch['cpu_s']:.1f} | "
          f"{rows / batch['wall_s']:,.0f} |")
    print(f"\nstream / build: wall {stream['wall_s'] / batch['wall_s']:.2f}x, CPU {stream['cpu_s'] / batch['cpu_s']:.2f}x; "
          f"sustained {sustained:,.0f} events/s between the first and last micro-batch commits; the same records, "
          f"quarantine and state: {same}\n")
    for name, run in (("stream", stream), ("build", batch)):
        split = ", ".join(f"{kind} {seconds:.1f}" for kind, seconds in sorted(run["by_kind"].items()) if seconds >= 0.05)
        print(f"- CPU s of the {name} by process: {split}")
    print()
    b = _percentiles(blobs)
    print(f"State per user after the last day ({len(blobs):,} users): p50 {b['p50']:,.0f} B, p99 {b['p99']:,.0f} B, "
          f"mean {b['mean']:,.0f} B, max {b['max']:,.0f} B; RocksDB checkpoint {rocks / 2**20:.1f} MiB "
          f"({rocks / max(len(blobs), 1):,.0f} B per user, all versions kept)\n")
    if latency:
        print(f"Latency, a live stream (trigger 1 s) fed {latency['rate']:,.0f} events/s (half the sustained rate; "
              f"event time {latency['k']:,.0f}x wall time, so the event-time wait of lateness + delay is "
              f"{(lateness + delay) / latency['k'] / 1000:.1f} s wall), {latency['requests']:,} requests:")
        for name in ("record", "hour"):
            p = latency[name]
            print(f"- landing -> {'record committed' if name == 'record' else 'hour closed'}: p50 {p['p50']:.1f} s, "
                  f"p99 {p['p99']:.1f} s (n {p['n']:,})")
    return 0


def _latency(work: Path, raw: Path, days: list[dt.date], rate: float, lateness: int, delay: int,
             args: argparse.Namespace, spark_args: list[str], spec: DatasetSpec = DEFAULT_SPEC) -> dict | None:
    """Feed the last day to a continuous stream at `rate` events/s (event time k x wall time)."""
    day = days[-1]
    landing, data, ckpt = work / "live-landing", work / "live-data", work / "live-ckpt"
    for d in (landing, data, ckpt):
        shutil.rmtree(d, ignore_errors=True)
    (landing / f"ds={day}").mkdir(parents=True)
    files = arrival_files(raw, [day], 10**9, delay, args.seed, spec)  # one file per landing instant, grouped below
    events = sum(t.num_rows for _, _, t in files)
    t0_event = files[0][0]
    event_span_s = (files[-1][0] - t0_event) / 1000
    k = max(1.0, event_span_s * rate / events)
    feed_s = min(args.live_for / 1000, event_span_s / k)
    log = open(work / "live-stream.log", "w")
    stream = subprocess.Popen(
        [LONGSEQ, "stream", "--raw", str(landing), "--data", str(data), "--checkpoint", str(ckpt), "--trigger", "1s",
         "--lateness", format_duration(lateness), "--watermark-delay", format_duration(delay), "--max-len", str(args.max_len),
         "--state-partitions", "2", *(["--spec", str(args.spec)] if args.spec else []), *spark_args], stdout=log, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    landed: list[tuple[float, list[str]]] = []
    try:
        deadline = time.time() + 180  # the JVM starts and the query waits for files
        while "starts from" not in (work / "live-stream.log").read_text() and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(5)
        start_wall = time.time()
        n, i = 0, 0
        while i < len(files) and time.time() - start_wall < feed_s:
            now_event = t0_event + (time.time() - start_wall) * k * 1000
            batch = []
            while i < len(files) and files[i][0] <= now_event:
                batch.append(files[i][2])
                i += 1
            if batch:
                table = pa.concat_tables(batch)
                _land(landing, n, day, table)
                landed.append((time.time(), table.column("request_id").to_pylist()))
                n += 1
            time.sleep(0.25)
        time.sleep(15 + (lateness + delay) / k / 1000)  # the last landed rows' requests come due
    finally:
        os.killpg(stream.pid, signal.SIGTERM)
        try:
            stream.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(stream.pid, signal.SIGKILL)
        log.close()
    commits = _commits(data)
    if not commits:
        return None
    last_landing: dict[str, float] = {}
    for at, ids in landed:
        for rid in ids:
            if rid is not None:
                last_landing[rid] = at
    wms = np.array([c["watermark"] for c in commits])
    at = np.array([c["committed_at"] for c in commits])
    record_lat, hour_lat = [], []
    hours_dir = data / "stream" / "hours" / f"ds={day}"
    for f in sorted((data / "stream").rglob("part-b*.parquet")) + sorted(hours_dir.rglob("part-00000.parquet")):
        if "records" not in f.parts and "hours" not in f.parts:
            continue
        table = pq.read_table(f, columns=["request_id", "request_ts"])
        for rid, ts in zip(table.column("request_id").to_pylist(), table.column("request_ts").to_pylist()):
            if rid not in last_landing:
                continue
            j = int(np.searchsorted(wms, ts + lateness, side="right"))  # the first batch with wm > deadline
            if j < len(at):
                record_lat.append(at[j] - last_landing[rid])
            hour = (ts // HOUR_MS) % 24
            record = hours_dir / f"hour={hour:02d}.json"
            if record.exists():
                hour_lat.append(record.stat().st_mtime - last_landing[rid])
    if not record_lat:
        return None
    return {"rate": rate, "k": k, "requests": len(record_lat), "record": _percentiles(record_lat),
            "hour": _percentiles(hour_lat) if hour_lat else _percentiles([float("nan")])}

