"""`longseq stream` on Spark (etl/stream.py, etl/stream_sink.py): raw files landing in
micro-batches give the daily build's days; first, the facts about pyspark 3.5 the design
rests on."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from etl.build import BuildConfig, build
from etl.polars_build import PolarsEngine
from etl.stream import StreamConfig, run_stream
from schemas.contracts import DEFAULT_SPEC
from sources import SAMPLE_START
from sources.generate import PROFILES, generate
from tests.test_stream_sim import DAYS, HOUR_MS, arrivals

pytestmark = pytest.mark.spark
MAX_LEN = 16


def land(batches, landing: Path) -> int:
    """Write each file as a log shipper would (hidden temp, then rename), with modification
    times in arrival order, which is the order the file source takes them in."""
    n = 0
    t0 = 1_700_000_000
    for files in batches:
        for f in files:
            part = landing / f"ds={f.ds.isoformat()}"
            part.mkdir(parents=True, exist_ok=True)
            path = part / f"f-{n:06d}.parquet"
            pq.write_table(f.table, part / f".f-{n:06d}.parquet")
            os.replace(part / f".f-{n:06d}.parquet", path)
            os.utime(path, (t0 + n, t0 + n))
            n += 1
    return n


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.parquet"))}


def assert_same_days(data: Path, batch: Path, days: list[dt.date]) -> None:
    """The records, quarantine and state of each day are the very bytes the daily build wrote."""
    for day in days:
        ds = f"ds={day.isoformat()}"
        for kind in ("requests", "quarantine", "state"):
            assert _files(data / kind / ds) == _files(batch / kind / ds), f"{ds}: {kind}"


def test_stream_once_equals_the_daily_build(spark, tmp_path):
    raw = tmp_path / "raw"
    profile = PROFILES["tiny"].with_sizes(users=None, days=len(DAYS))
    generate(raw, profile, seed=11, start=SAMPLE_START, dirty=0.04)
    lateness, delay = 2 * HOUR_MS, 30 * 60_000
    batches = arrivals(raw, DAYS, DEFAULT_SPEC, delay, seed=3, rows_per_file=(20, 120), files_per_batch=(1, 1))
    files = land(batches, tmp_path / "landing")
    assert files > 20

    config = StreamConfig(raw=str(tmp_path / "landing"), out=str(tmp_path / "data"), checkpoint=str(tmp_path / "ckpt"),
                          max_len=MAX_LEN, lateness_ms=lateness, watermark_delay_ms=delay, mode="once",
                          max_files_per_trigger=8, state_partitions=2)
    summary = run_stream(spark, config, log=lambda m: None)
    assert summary["batches"] > 3
    assert summary["closed_days"] == [d.isoformat() for d in DAYS]

    batch = tmp_path / "batch"
    reports = build(PolarsEngine(), BuildConfig(str(raw), str(batch), DAYS[0], DAYS[-1], MAX_LEN, lateness_ms=lateness),
                    log=lambda m: None)
    for report, day in zip(reports, DAYS):
        ds = f"ds={day.isoformat()}"
        got = json.loads((tmp_path / "data" / "reports" / ds / "build.json").read_text())
        assert got["engine"] == "stream"
        for key in ("rows_read", "duplicates", "duplicates_across_days", "requests", "targets",
                    "requests_without_valid_impressions", "users_in_state", "history_length"):
            assert got[key] == report[key], f"{ds}: {key}"
        assert {k: v for k, v in got["quarantined"].items() if v} == {k: v for k, v in report["quarantined"].items() if v}
    assert_same_days(tmp_path / "data", batch, DAYS)


def test_daily_build_then_stream_then_daily_build_equal_one_range_build(spark, tmp_path):
    """The handoff both ways: the stream starts from the state a daily build left after D1,
    streams D2, and the daily build of D3 goes on from the state the stream left."""
    raw = tmp_path / "raw"
    generate(raw, PROFILES["tiny"].with_sizes(users=None, days=len(DAYS)), seed=12, start=SAMPLE_START, dirty=0.04)
    lateness, delay = 2 * HOUR_MS, 30 * 60_000
    data = tmp_path / "data"

    def daily(day: dt.date, out: Path) -> None:
        build(PolarsEngine(), BuildConfig(str(raw), str(out), day, max_len=MAX_LEN, lateness_ms=lateness),
              log=lambda m: None)

    daily(DAYS[0], data)
    land(arrivals(raw, [DAYS[1]], DEFAULT_SPEC, delay, seed=4, rows_per_file=(20, 80), files_per_batch=(1, 1)),
         tmp_path / "landing")
    logged: list[str] = []
    config = StreamConfig(raw=str(tmp_path / "landing"), out=str(data), checkpoint=str(tmp_path / "ckpt"),
                          max_len=MAX_LEN, lateness_ms=lateness, watermark_delay_ms=delay, mode="once",
                          max_files_per_trigger=8, state_partitions=2)
    summary = run_stream(spark, config, log=logged.append)
    assert any(f"starts from the state after {DAYS[0]}" in m for m in logged)
    assert summary["closed_days"] == [d.isoformat() for d in DAYS[:2]]
    assert json.loads((data / "reports" / f"ds={DAYS[1]}" / "build.json").read_text())["engine"] == "stream"
    daily(DAYS[2], data)

    ranged = tmp_path / "ranged"
    build(PolarsEngine(), BuildConfig(str(raw), str(ranged), DAYS[0], DAYS[-1], MAX_LEN, lateness_ms=lateness),
          log=lambda m: None)
    assert_same_days(data, ranged, DAYS)
