"""No silent corruption at the door: one check of a partition's files before any engine
reads them (dataset/parquet_files.py). Each bad input gives both engines, and `validate
--suite raw`, the same one-line error naming the file; a valid partition gives both the
same rows, whatever its file names and hidden files."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from longseq.cli.main import main
from longseq.schemas.contracts import SUCCESS_MARKER
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate

DAY = SAMPLE_START
PART = f"ds={DAY}"
# the in-process CLI's Spark session is the `spark` fixture's (getOrCreate): same settings
SPARK = ["--engine", "spark", "--master", "local[2]", "--shuffle-partitions", "2", "--driver-memory", "1g"]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> pa.Table:
    """One generated day, a few hundred valid rows."""
    out = tmp_path_factory.mktemp("gen")
    generate(out, PROFILES["tiny"].with_sizes(users=12, days=1), seed=3, start=DAY)
    return pq.read_table(out / PART)


def _halves(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    n = table.num_rows // 2
    return table.slice(0, n), table.slice(n)


def _missing(part: Path, table: pa.Table) -> str:
    good, bad = _halves(table)
    pq.write_table(good, part / "part-00000.parquet")
    pq.write_table(bad.drop_columns(["like"]), part / "part-00001.parquet")  # mergeSchema would fill nulls
    return "part-00001.parquet does not match the raw_log contract: column 'like' is missing (expected int8)"


def _extra(part: Path, table: pa.Table) -> str:
    good, bad = _halves(table)
    pq.write_table(good, part / "part-00000.parquet")
    pq.write_table(bad.append_column("country", pa.array(["fr"] * bad.num_rows)), part / "part-00001.parquet")
    return "part-00001.parquet does not match the raw_log contract: column 'country' (string) is not in the contract"


def _mistyped(part: Path, table: pa.Table) -> str:
    i = table.schema.get_field_index("user_id")
    bad = table.set_column(i, "user_id", pc.cast(table["user_id"], pa.string()))
    pq.write_table(bad, part / "part-00000.parquet")
    return ("part-00000.parquet does not match the raw_log contract: column 'user_id': expected int64, got string "
            "(also read as int64: int8, int16, int32)")


def _truncated(part: Path, table: pa.Table) -> str:
    pq.write_table(table, part / "part-00000.parquet")
    data = (part / "part-00000.parquet").read_bytes()
    (part / "part-00000.parquet").write_bytes(data[: len(data) // 2])  # a copy cut short: no footer
    return ("part-00000.parquet is not a readable Parquet file (Parquet magic bytes not found in footer. Either the "
            "file is corrupted or this is not a parquet file.); a partition may hold only Parquet files and hidden "
            "(. or _) files")


def _stray(part: Path, table: pa.Table) -> str:
    pq.write_table(table, part / "part-00000.parquet")
    (part / "notes.txt").write_text("rows from the 2am replay are missing, see ticket 123\n")
    return ("notes.txt is not a readable Parquet file (Parquet magic bytes not found in footer. Either the file is "
            "corrupted or this is not a parquet file.); a partition may hold only Parquet files and hidden "
            "(. or _) files")


BAD: dict[str, Callable[[Path, pa.Table], str]] = {
    "missing": _missing, "extra": _extra, "mistyped": _mistyped, "truncated": _truncated, "stray": _stray,
}


def _raw(root: Path, write: Callable[[Path, pa.Table], str], table: pa.Table) -> str:
    """A complete partition of DAY under root; returns the error expected for it (path-less)."""
    part = root / PART
    part.mkdir(parents=True)
    tail = write(part, table)
    (part / SUCCESS_MARKER).touch()
    return tail


def _error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """The one error line of a failed in-process command (after any progress lines), without
    its 'longseq CMD: error: ' prefix."""
    capsys.readouterr()
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    prefix = f"longseq {argv[0]}: error: "
    assert [line for line in lines if "error" in line or "Traceback" in line] == lines[-1:], lines
    assert lines[-1].startswith(prefix), lines
    return lines[-1][len(prefix):]


def _build(raw: Path | str, data: Path, *engine: str, end: dt.date = DAY) -> list[str]:
    return ["build", *engine, "--raw", str(raw), "--data", str(data), "--start", str(DAY), "--end", str(end)]


@pytest.mark.parametrize("case", ["extra", "truncated", "stray"])  # all five: the spark test below
def test_polars_refuses_a_bad_partition_naming_the_file(case, table, tmp_path, capsys):
    tail = _raw(tmp_path / "raw", BAD[case], table)
    got = _error(capsys, _build(tmp_path / "raw", tmp_path / "data", "--engine", "polars"))
    assert got == f"{tmp_path}/raw/{PART}/{tail}"
    assert not (tmp_path / "data" / "requests" / PART).exists()


@pytest.mark.parametrize("case", BAD)
def test_spark_and_validate_give_the_polars_error(case, spark, table, tmp_path, capsys):
    tail = _raw(tmp_path / "raw", BAD[case], table)
    expected = f"{tmp_path}/raw/{PART}/{tail}"
    assert _error(capsys, _build(tmp_path / "raw", tmp_path / "data", "--engine", "polars")) == expected
    assert _error(capsys, _build(tmp_path / "raw", tmp_path / "data", *SPARK)) == expected
    assert not (tmp_path / "data" / "requests" / PART).exists()
    validate = ["validate", "--suite", "raw", "--raw", str(tmp_path / "raw"), "--data", str(tmp_path / "data"),
                "--start", str(DAY), "--master", "local[2]", "--shuffle-partitions", "2", "--driver-memory", "1g"]
    assert _error(capsys, validate) == expected


@pytest.mark.parametrize("case", ["missing", "truncated"])
def test_spark_checks_uri_partitions_through_hadoop(case, spark, table, tmp_path, capsys):
    """A URI (here file://; hdfs://, s3a:// alike) is read through Spark's Hadoop FileSystem."""
    tail = _raw(tmp_path / "raw", BAD[case], table)
    got = _error(capsys, _build(f"file://{tmp_path}/raw", tmp_path / "data", *SPARK))
    assert got == f"file://{tmp_path}/raw/{PART}/{tail}"


def _valid_days(root: Path, table: pa.Table) -> int:
    """DAY: complete but empty (only hidden files); DAY + 1: the table in a file without a
    .parquet suffix (as Hive names them), an empty one and hidden checksum/commit files."""
    empty = root / PART
    empty.mkdir(parents=True)
    (empty / ".part-00000.parquet.crc").write_bytes(b"crc")
    (empty / SUCCESS_MARKER).touch()
    full = root / f"ds={DAY + dt.timedelta(days=1)}"
    full.mkdir()
    shifted = table.set_column(  # moved one day on, so the rows belong to ds=DAY+1
        table.schema.get_field_index("request_ts"), "request_ts", pc.add(table["request_ts"], 86_400_000)
    ).set_column(table.schema.get_field_index("event_ts"), "event_ts", pc.add(table["event_ts"], 86_400_000))
    pq.write_table(shifted, full / "000000_0")
    pq.write_table(shifted.slice(0, 0), full / "part-00001.parquet")
    (full / ".000000_0.crc").write_bytes(b"crc")
    (full / "_committed_1234").write_text("{}")
    (full / SUCCESS_MARKER).touch()
    return shifted.num_rows


def _rows_read(data: Path) -> list[int]:
    return [json.loads(p.read_text())["rows_read"] for p in sorted(data.glob("reports/ds=*/build.json"))]


def test_valid_partitions_read_every_data_file_polars(table, tmp_path):
    n = _valid_days(tmp_path / "raw", table)
    assert main(_build(tmp_path / "raw", tmp_path / "data", "--engine", "polars", end=DAY + dt.timedelta(days=1))) == 0
    assert _rows_read(tmp_path / "data") == [0, n]


def test_valid_partitions_give_both_engines_every_row(spark, table, tmp_path):
    n = _valid_days(tmp_path / "raw", table)
    day = str(DAY + dt.timedelta(days=1))  # the full day only: a Spark build costs ~40 s here
    for name, engine in (("polars", ["--engine", "polars"]), ("spark", SPARK)):
        argv = ["build", *engine, "--raw", str(tmp_path / "raw"), "--data", str(tmp_path / name), "--start", day]
        assert main(argv) == 0
    assert _rows_read(tmp_path / "polars") == _rows_read(tmp_path / "spark") == [n]


@pytest.mark.parametrize("engine", [pytest.param(["--engine", "polars"], id="polars"),
                                    pytest.param(SPARK, id="spark", marks=pytest.mark.spark)])
def test_a_corrupt_state_is_named(engine, request, table, tmp_path, capsys):
    """The state after a day is read with the same check: a damaged one is named, not a traceback."""
    if "spark" in engine:
        request.getfixturevalue("spark")
    day2 = table.set_column(table.schema.get_field_index("request_ts"), "request_ts",
                            pc.add(table["request_ts"], 86_400_000))
    day2 = day2.set_column(day2.schema.get_field_index("event_ts"), "event_ts", pc.add(day2["event_ts"], 86_400_000))
    raw = tmp_path / "raw"
    for day, t in ((DAY, table), (DAY + dt.timedelta(days=1), day2)):
        (raw / f"ds={day}").mkdir(parents=True)
        pq.write_table(t, raw / f"ds={day}" / "part-00000.parquet")
        (raw / f"ds={day}" / SUCCESS_MARKER).touch()
    assert main(_build(raw, tmp_path / "data", "--engine", "polars")) == 0
    state = tmp_path / "data" / "state" / PART
    for f in state.iterdir():
        if not f.name.startswith((".", "_")):
            f.write_bytes(f.read_bytes()[:100])
    [damaged] = [f for f in state.iterdir() if not f.name.startswith((".", "_"))]
    argv = ["build", *engine, "--raw", str(raw), "--data", str(tmp_path / "data"), "--start", str(DAY + dt.timedelta(days=1))]
    # first its checksum, in the day's report (tests/test_build_operations.py); without one
    # (a report from before checksums) the engines' read names it
    assert _error(capsys, argv).startswith(f"{damaged} does not match the build report of {DAY}")
    report = tmp_path / "data" / "reports" / PART / "build.json"
    report.write_text(json.dumps({k: v for k, v in json.loads(report.read_text()).items() if k != "checksums"}))
    assert _error(capsys, argv).startswith(f"{damaged} is not a readable Parquet file (")


def test_read_raw_partition_uses_the_same_check(table, tmp_path):
    from longseq.dataset.raw import read_raw_partition
    from longseq.schemas.errors import SchemaMismatchError

    tail = _raw(tmp_path / "raw", _extra, table)
    with pytest.raises(SchemaMismatchError) as e:
        read_raw_partition(tmp_path / "raw", DAY)
    assert str(e.value) == f"{tmp_path}/raw/{PART}/{tail}"
    shutil.rmtree(tmp_path / "raw")
    _valid_days(tmp_path / "raw", table)
    assert read_raw_partition(tmp_path / "raw", DAY + dt.timedelta(days=1)).num_rows == table.num_rows


def test_uris_without_spark_are_checked_through_pyarrow_fs(table, tmp_path):
    from longseq.dataset.parquet_files import check_parquet_files
    from longseq.dataset.storage import ArrowStorage
    from longseq.schemas.contracts import RAW_LOG
    from longseq.schemas.errors import SchemaMismatchError

    tail = _raw(tmp_path / "raw", _missing, table)
    uri = f"file://{tmp_path}/raw/{PART}"
    with pytest.raises(SchemaMismatchError) as e:
        check_parquet_files(ArrowStorage(uri), uri, RAW_LOG)
    assert str(e.value) == f"{uri}/{tail}"
