"""What a lost checkpoint or a bad raw file does to `longseq stream`: refused in one line,
saying how to go on, and going on gives the daily build's days (etl/stream/job.py
`_check_commits`, etl/stream/landed.py)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.batch.polars_engine import PolarsEngine
from longseq.etl.stream import job
from longseq.etl.stream.job import run_stream
from longseq.etl.stream.landed import LandedFiles
from longseq.etl.stream.settings import StreamConfig, StreamSettings
from longseq.schemas.contracts import DEFAULT_SPEC, SUCCESS_MARKER
from longseq.schemas.errors import LongseqError, SchemaMismatchError
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
from tests.test_stream_sim import DAYS, HOUR_MS, arrivals
from tests.test_stream_spark import MAX_LEN, assert_same_days, land

pytestmark = pytest.mark.spark
LATENESS, DELAY = 2 * HOUR_MS, 30 * 60_000


def _config(tmp: Path, mode: str, checkpoint: str = "ckpt", files: int = 8) -> StreamConfig:
    return StreamConfig(raw=str(tmp / "landing"), out=str(tmp / "data"), checkpoint=str(tmp / checkpoint),
                        settings=StreamSettings(max_len=MAX_LEN, lateness_ms=LATENESS, spec=None),
                        watermark_delay_ms=DELAY, mode=mode, max_files_per_trigger=files, state_partitions=2)


def _landed(tmp: Path, days: list, seed: int) -> None:
    """`days` generated, landed in arrival order under tmp/landing (tmp/raw: the same rows)."""
    generate(tmp / "raw", PROFILES["tiny"].with_sizes(users=None, days=len(days)), seed=seed, start=SAMPLE_START,
             dirty=0.04)
    land(arrivals(tmp / "raw", days, DEFAULT_SPEC, DELAY, seed=3, rows_per_file=(20, 120), files_per_batch=(1, 1)),
         tmp / "landing")


def _daily_build_of(landing: Path, days: list, out: Path) -> None:
    """The daily build of the partitions as they landed (marked complete in a copy)."""
    raw = out.with_name(out.name + "-raw")
    shutil.copytree(landing, raw)
    for day in days:
        (raw / f"ds={day}" / SUCCESS_MARKER).touch()
    build(PolarsEngine(), BuildConfig(str(raw), str(out), days[0], days[-1], MAX_LEN, lateness_ms=LATENESS),
          log=lambda m: None)


# ---------------------------------------------------------------- a lost checkpoint


def test_a_new_checkpoint_on_another_checkpoints_commits_is_refused_and_goes_on_from_the_last_built_day(spark, tmp_path):
    """Days 1-2 streamed (day 1 closed), the checkpoint deleted, day 3 landed: the new
    checkpoint's batches 0.. would be taken for the old ones' and skipped. Refused in one line
    naming the old checkpoint and how to go on; gone on that way, the days equal the daily build."""
    _landed(tmp_path, DAYS, seed=21)
    later = tmp_path / "later"
    later.mkdir()
    os.replace(tmp_path / "landing" / f"ds={DAYS[2]}", later / f"ds={DAYS[2]}")  # a rename keeps the mtimes

    first = run_stream(spark, _config(tmp_path, "available-now"), log=lambda m: None)
    assert first["closed_days"] == [str(DAYS[0])] and first["batches"] > 1
    shutil.rmtree(tmp_path / "ckpt")
    os.replace(later / f"ds={DAYS[2]}", tmp_path / "landing" / f"ds={DAYS[2]}")

    commits = tmp_path / "data" / "stream" / "commits"
    with pytest.raises(LongseqError) as refused:
        run_stream(spark, _config(tmp_path, "once"), log=lambda m: None)
    message = str(refused.value)
    assert "\n" not in message
    assert f"{commits} holds micro-batches 0..{first['batches'] - 1} of checkpoint {tmp_path / 'ckpt'}" in message
    assert f"mv {commits} {commits}.lost" in message and f"from the state after {DAYS[0]}, the last built day" in message
    assert not (tmp_path / "ckpt" / "_longseq" / "stream.json").exists()  # a refused new checkpoint stays new

    os.replace(commits, tmp_path / "data" / "stream" / "commits.lost")  # as the message says
    logged: list[str] = []
    summary = run_stream(spark, _config(tmp_path, "once"), log=logged.append)
    assert any(f"starts from the state after {DAYS[0]}" in m for m in logged)
    assert summary["closed_days"] == [str(d) for d in DAYS]
    daily = tmp_path / "daily"
    build(PolarsEngine(), BuildConfig(str(tmp_path / "raw"), str(daily), DAYS[0], DAYS[-1], MAX_LEN,
                                      lateness_ms=LATENESS), log=lambda m: None)
    assert_same_days(tmp_path / "data", daily, DAYS)


# ---------------------------------------------------------------- a bad raw file


def _missing(path: Path, table: pa.Table) -> str:
    pq.write_table(table.drop_columns(["position"]), path)
    return "column 'position' is missing"


def _mistyped(path: Path, table: pa.Table) -> str:
    i = table.schema.get_field_index("user_id")
    pq.write_table(table.set_column(i, "user_id", pc.cast(table["user_id"], pa.string())), path)
    return "column 'user_id': expected int64, got string"


def _truncated(path: Path, table: pa.Table) -> str:
    pq.write_table(table, path)
    path.write_bytes(path.read_bytes()[:200])
    return "is not a readable Parquet file"


BAD = {"missing": _missing, "mistyped": _mistyped, "truncated": _truncated}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_raw_file_is_refused_before_spark_reads_it_with_the_daily_builds_message(case, spark, tmp_path):
    """The stream's check is the daily build's (dataset/parquet_files.py): the same words,
    naming the file, and what to do."""
    _landed(tmp_path, DAYS[:1], seed=22)
    bad = sorted((tmp_path / "landing" / f"ds={DAYS[0]}").glob("*.parquet"))[3]
    problem = BAD[case](bad, pq.read_table(bad))
    with pytest.raises(SchemaMismatchError) as daily:
        _daily_build_of(tmp_path / "landing", DAYS[:1], tmp_path / "daily")
    with pytest.raises(SchemaMismatchError) as refused:
        run_stream(spark, _config(tmp_path, "once"), log=lambda m: None)
    message = str(refused.value)
    assert "\n" not in message and str(bad) in message and problem in message
    assert message.startswith(str(daily.value).replace(str(tmp_path / "daily-raw"), str(tmp_path / "landing")))
    assert message.endswith("fix or remove the file, then start the stream again (it goes on from its checkpoint)")
    assert not (tmp_path / "data" / "stream" / "commits").exists()


@pytest.mark.parametrize("case, remedy", [("missing", "fix"), ("truncated", "remove")])
def test_a_bad_raw_file_landed_mid_stream_stops_it_in_one_line_and_a_rerun_after_the_fix_gives_the_daily_build(
        case, remedy, spark, tmp_path, monkeypatch):
    """Day 1 streamed; then day 2 lands with one bad file, after the stream started, so
    Spark plans it into a micro-batch: the batch is refused before it is evaluated. Fixed or
    removed, the rerun replays the batch and the days equal the daily build of what landed."""
    _landed(tmp_path, DAYS[:2], seed=23)
    day2 = tmp_path / "landing" / f"ds={DAYS[1]}"
    later = tmp_path / "later"
    later.mkdir()
    os.replace(day2, later / day2.name)
    run_stream(spark, _config(tmp_path, "available-now"), log=lambda m: None)

    held = sorted((later / day2.name).glob("*.parquet"))[0]  # day 2's first file: the first of the next batch
    good, mtime = pq.read_table(held), held.stat().st_mtime
    held.unlink()
    os.replace(later / day2.name, day2)
    bad = day2 / held.name

    class LandsAfterTheFirstCheck(LandedFiles):
        def check(self) -> int:
            n = super().check()
            if not bad.exists():  # after the check at the start: only the micro-batch can see it
                problem[0] = BAD[case](bad, good)
                os.utime(bad, (mtime, mtime))
            return n

    problem = [""]
    monkeypatch.setattr(job, "LandedFiles", LandsAfterTheFirstCheck)
    with pytest.raises(SchemaMismatchError) as refused:
        run_stream(spark, _config(tmp_path, "once", files=1000), log=lambda m: None)
    message = str(refused.value)
    assert "\n" not in message and str(bad) in message and problem[0] in message
    spark_checkpoint = tmp_path / "ckpt" / "spark"
    planned = max(int(p.name) for p in (spark_checkpoint / "offsets").glob("[0-9]*"))
    assert str(bad) in "".join(p.read_text() for p in (spark_checkpoint / "sources").rglob("[0-9]*") if p.is_file())  # Spark planned it
    assert not (tmp_path / "data" / "stream" / "commits" / f"{planned}.json").exists()  # and nothing of it is written

    monkeypatch.undo()
    if remedy == "fix":
        pq.write_table(good, bad)
    else:
        bad.unlink()
    summary = run_stream(spark, _config(tmp_path, "once", files=1000), log=lambda m: None)
    assert summary["closed_days"] == [str(d) for d in DAYS[:2]]
    _daily_build_of(tmp_path / "landing", DAYS[:2], tmp_path / "daily")
    assert_same_days(tmp_path / "data", tmp_path / "daily", DAYS[:2])


# ---------------------------------------------------------------- the same directories by other paths


def test_a_checkpoint_restarted_with_its_raw_and_data_through_a_symlink_is_the_same_stream(tmp_path):
    """--raw and --data given by another path to the same directories (a symlink) are the
    checkpoint's own; another directory is refused, naming the setting."""
    (tmp_path / "landing").mkdir()
    (tmp_path / "data").mkdir()
    config = _config(tmp_path, "once")
    config = dataclasses.replace(config, settings=dataclasses.replace(config.settings, spec=DEFAULT_SPEC))
    meta = tmp_path / "ckpt" / "_longseq"
    job._pin_checkpoint(config, meta)
    (tmp_path / "landlink").symlink_to(tmp_path / "landing")
    (tmp_path / "datalink").symlink_to(tmp_path / "data")
    job._check_checkpoint(dataclasses.replace(config, raw=str(tmp_path / "landlink"), out=str(tmp_path / "datalink")),
                          meta)
    (tmp_path / "other").mkdir()
    with pytest.raises(LongseqError, match="was started with raw="):
        job._check_checkpoint(dataclasses.replace(config, raw=str(tmp_path / "other")), meta)


def test_a_stream_taking_over_from_a_daily_build_checks_the_state_it_starts_from(spark, tmp_path):
    """The state after the last built day, replaced after its build (half its users), is
    refused as a daily build of the next day refuses it, before the stream reads anything."""
    _landed(tmp_path, DAYS[:2], seed=5)
    _daily_build_of(tmp_path / "landing", DAYS[:1], tmp_path / "data")
    state = tmp_path / "data" / "state" / f"ds={DAYS[0]}" / "part-00000.parquet"
    table = pq.read_table(state)
    pq.write_table(table.slice(0, table.num_rows // 2), state)
    with pytest.raises(LongseqError, match="does not match the build report") as e:
        run_stream(spark, dataclasses.replace(_config(tmp_path, "once"), start=DAYS[1]), log=lambda m: None)
    assert str(state) in str(e.value) and not (tmp_path / "data" / "stream" / "commits").exists()
