"""`longseq stream` on Spark (etl/stream/job.py, etl/stream/sink.py): raw files landing in
micro-batches give the daily build's days; first, the facts about pyspark 3.5 the design
rests on."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.batch.polars_engine import PolarsEngine
from longseq.etl.stream.job import run_stream
from longseq.etl.stream.settings import StreamConfig, StreamSettings
from longseq.dataset.compact import materialize
from longseq.schemas.contracts import COMPACT_LAYOUT, DEFAULT_SPEC, LAYOUTS
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
from tests.reference_build import build_reference
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


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stream_once_equals_the_daily_build(spark, tmp_path, layout):
    raw = tmp_path / "raw"
    profile = PROFILES["tiny"].with_sizes(users=None, days=len(DAYS))
    generate(raw, profile, seed=11, start=SAMPLE_START, dirty=0.04)
    lateness, delay = 2 * HOUR_MS, 30 * 60_000
    batches = arrivals(raw, DAYS, DEFAULT_SPEC, delay, seed=3, rows_per_file=(20, 120), files_per_batch=(1, 1))
    files = land(batches, tmp_path / "landing")
    assert files > 20

    config = StreamConfig(raw=str(tmp_path / "landing"), out=str(tmp_path / "data"), checkpoint=str(tmp_path / "ckpt"),
                          settings=StreamSettings(max_len=MAX_LEN, lateness_ms=lateness, spec=None, layout=layout),
                          watermark_delay_ms=delay, mode="once", max_files_per_trigger=8, state_partitions=2)
    summary = run_stream(spark, config, log=lambda m: None)
    assert summary["batches"] > 3
    assert summary["closed_days"] == [d.isoformat() for d in DAYS]

    batch = tmp_path / "batch"
    reports = build(PolarsEngine(), BuildConfig(str(raw), str(batch), DAYS[0], DAYS[-1], MAX_LEN, lateness_ms=lateness,
                                                layout=layout), log=lambda m: None)
    for report, day in zip(reports, DAYS):
        ds = f"ds={day.isoformat()}"
        got = json.loads((tmp_path / "data" / "reports" / ds / "build.json").read_text())
        assert got["engine"] == "stream"
        for key in ("rows_read", "duplicates", "duplicates_across_days", "requests", "targets",
                    "requests_without_valid_impressions", "users_in_state", "history_length"):
            assert got[key] == report[key], f"{ds}: {key}"
        assert {k: v for k, v in got["quarantined"].items() if v} == {k: v for k, v in report["quarantined"].items() if v}
    assert_same_days(tmp_path / "data", batch, DAYS)
    # and against the independent reference, not only the polars engine
    ref = build_reference(raw, DAYS, MAX_LEN, lateness)
    for day in DAYS:
        got = {r["request_id"]: r for f in (tmp_path / "data" / "requests" / f"ds={day}").glob("*.parquet")
               for r in materialize(pq.read_table(f)).to_pylist()} if layout == COMPACT_LAYOUT else {
            r["request_id"]: r for f in (tmp_path / "data" / "requests" / f"ds={day}").glob("*.parquet")
            for r in pq.read_table(f).to_pylist()}
        assert got == ref.records_of(day)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_daily_build_then_stream_then_daily_build_equal_one_range_build(spark, tmp_path, layout):
    """The handoff both ways: the stream starts from the state a daily build left after D1,
    streams D2, and the daily build of D3 goes on from the state the stream left."""
    raw = tmp_path / "raw"
    generate(raw, PROFILES["tiny"].with_sizes(users=None, days=len(DAYS)), seed=12, start=SAMPLE_START, dirty=0.04)
    lateness, delay = 2 * HOUR_MS, 30 * 60_000
    data = tmp_path / "data"

    def daily(day: dt.date, out: Path, told: str | None) -> None:
        build(PolarsEngine(), BuildConfig(str(raw), str(out), day, max_len=MAX_LEN, lateness_ms=lateness, layout=told),
              log=lambda m: None)

    # only the first build is told the layout: the stream and the build after it go on in it
    daily(DAYS[0], data, layout)
    land(arrivals(raw, [DAYS[1]], DEFAULT_SPEC, delay, seed=4, rows_per_file=(20, 80), files_per_batch=(1, 1)),
         tmp_path / "landing")
    logged: list[str] = []
    config = StreamConfig(raw=str(tmp_path / "landing"), out=str(data), checkpoint=str(tmp_path / "ckpt"),
                          settings=StreamSettings(max_len=MAX_LEN, lateness_ms=lateness, spec=None, layout=None),
                          watermark_delay_ms=delay, mode="once", max_files_per_trigger=8, state_partitions=2)
    summary = run_stream(spark, config, log=logged.append)
    assert any(f"starts from the state after {DAYS[0]}" in m for m in logged)
    assert summary["closed_days"] == [d.isoformat() for d in DAYS[:2]]
    assert json.loads((data / "reports" / f"ds={DAYS[1]}" / "build.json").read_text())["engine"] == "stream"
    daily(DAYS[2], data, None)
    assert {json.loads(f.read_text())["layout"] for f in (data / "reports").glob("ds=*/build.json")} == {layout}

    ranged = tmp_path / "ranged"
    build(PolarsEngine(), BuildConfig(str(raw), str(ranged), DAYS[0], DAYS[-1], MAX_LEN, lateness_ms=lateness,
                                      layout=layout), log=lambda m: None)
    assert_same_days(data, ranged, DAYS)


def test_rows_of_a_day_that_arrive_after_it_closed_are_kept_and_counted(spark, tmp_path):
    """An outcome logged hours after its request (late_event) and a file that landed after the
    watermark passed it (late_arrival) reach the stream after their day closed: quarantined
    all the same, and counted in reports/ds=D/after_close.json, so that the day's report plus
    these equal the daily build's."""
    from tests.stream_sim import ArrivedFile
    from tests.test_build_semantics import D1, D2, NOON, imp, write_raw

    day2 = NOON + 86_400_000
    files = [
        (D1, [imp("a1", "r1", 1, NOON, NOON + 1000, 10), imp("a2", "r2", 2, NOON + 5000, NOON + 6000, 11)]),
        (D2, [imp("b1", "r3", 1, day2, day2 + 1000, 12)]),  # moves the watermark past the end of D1 + 1 h
        (D2, [imp("b3", "r7", 3, day2 + 5000, day2 + 6000, 16)]),  # D1 closes in this micro-batch
        (D1, [imp("late", "r4", 2, NOON, day2, 13),  # logged a day after its request: late_event
              imp("lost", "r5", 3, NOON + 9000, NOON + 9500, 14)]),  # valid, but landed long after: late_arrival
        (D2, [imp("b2", "r6", 2, day2 + 3 * HOUR_MS, day2 + 3 * HOUR_MS + 1000, 15)]),
    ]
    import pyarrow as pa

    from longseq.schemas.contracts import RAW_LOG
    from longseq.schemas.forms import to_arrow

    land([[ArrivedFile(d, pa.Table.from_pylist(rows, schema=to_arrow(RAW_LOG)))] for d, rows in files],
         tmp_path / "landing")
    config = StreamConfig(raw=str(tmp_path / "landing"), out=str(tmp_path / "data"), checkpoint=str(tmp_path / "ckpt"),
                          settings=StreamSettings(max_len=MAX_LEN, lateness_ms=HOUR_MS, spec=None), watermark_delay_ms=60_000, mode="once",
                          max_files_per_trigger=1, state_partitions=2)
    logged: list[str] = []
    run_stream(spark, config, log=logged.append)
    reports = tmp_path / "data" / "reports" / f"ds={D1}"
    report = json.loads((reports / "build.json").read_text())
    after = json.loads((reports / "after_close.json").read_text())
    assert (report["rows_read"], after["rows_read"]) == (2, 2)
    assert after["quarantined"] == {"late_arrival": 1, "late_event": 1}
    assert any("arrived after the day closed" in m for m in logged)
    kept = [r["event_id"] for f in after["files"] for r in pq.read_table(tmp_path / "data" / f).to_pylist()]
    assert sorted(kept) == ["late", "lost"]

    for day in (D1, D2):  # the daily build reads the same rows
        write_raw(tmp_path / "raw", day, [r for d, rows in files if d == day for r in rows])
    batch = build(PolarsEngine(), BuildConfig(str(tmp_path / "raw"), str(tmp_path / "batch"), D1, D2, MAX_LEN,
                                               lateness_ms=HOUR_MS), log=lambda m: None)
    assert batch[0]["rows_read"] == report["rows_read"] + after["rows_read"]
