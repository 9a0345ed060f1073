"""Logs as they come (issue 31, "Names"): a spec's `columns` renames any raw column, and
lossless types are read as the contract's (schemas/conversions.py).

One random raw log (tests/test_build_spec.py's writer, with its traps) is written three
ways: under the spec's names with the contract's types, under camelCase names, and under
camelCase names with other types (timestamps for the times, a bool label, narrower
integers; each day's two files typed differently). Every engine must build the same
records, quarantine and state from each; quarantine files and `score --log-names` use the
logs' names.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from longseq.dataset.parquet_files import read_arrow, read_spark
from longseq.dataset.storage import LocalStorage
from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.batch.polars_engine import PolarsEngine
from longseq.etl.stream.landed import LandedFiles
from longseq.schemas.contracts import COMPACT_LAYOUT, contracts_of
from longseq.schemas.errors import SchemaMismatchError
from longseq.schemas.forms import to_arrow
from longseq.schemas.spec import SPECS_DIR, load_spec, spec_from_dict
from tests.records import record_rows
from tests.test_build_spec import DAYS, MAX_LEN, write_random_raw

_ECOMMERCE = load_spec(SPECS_DIR / "ecommerce.yaml").to_dict()
# ids, a time, a label and inputs renamed, beside the e-commerce spec's product_id and seller_id
CAMEL = spec_from_dict({**_ECOMMERCE, "columns": {
    **_ECOMMERCE["columns"], "user_id": "userId", "request_ts": "requestTime", "event_ts": "eventTime",
    "click": "isClick", "price_cents": "priceCents", "dwell_ms": "dwellMs"}}, "camel")
SNAKE = spec_from_dict({**_ECOMMERCE, "columns": {}}, "snake")
# the other types each day's two files hold, by the spec's names; both read as the contract's
RETYPED = [
    {"request_ts": pa.timestamp("ms", tz="UTC"), "event_ts": pa.timestamp("us", tz="America/New_York"),
     "click": pa.bool_(), "position": pa.int16(), "user_id": pa.int32(), "dwell_ms": pa.int16()},
    {"request_ts": pa.timestamp("us"), "event_ts": pa.timestamp("ms"), "click": pa.bool_(), "position": pa.int8(),
     "price_cents": pa.int32(), "image_ms": pa.int16()},
]


def _retyped(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """`table` with these columns of other types, the same values (a safe cast fails on a
    value the type cannot hold); a microsecond time gets 999 us more, which the read floors away."""
    for name, t in types.items():
        values = table.column(name)
        if name == "click":
            assert set(values.to_pylist()) <= {0, 1, None}, "a bool label holds 0 and 1 only"
        if pa.types.is_timestamp(t):  # the stored count is the UTC instant, whatever the zone
            scale = {"ms": 1, "us": 1000}[t.unit]
            values = pc.add(pc.multiply(values, scale), 999 if scale > 1 else 0).cast(t)
        else:
            values = values.cast(t)
        table = table.set_column(table.schema.get_field_index(name), name, values)
    return table


def _rewrite(source: Path, target: Path, names: dict[str, str], retypes: list[dict] = ()) -> None:
    """Each file of the raw log at `source` (the spec's names), renamed into `target`, the i-th
    of a day with the columns of retypes[i] (cycled) of other types."""
    for part in sorted(source.glob("ds=*")):
        (target / part.name).mkdir(parents=True)
        for i, f in enumerate(sorted(part.glob("*.parquet"))):
            table = pq.read_table(f)
            if retypes:
                table = _retyped(table, retypes[i % len(retypes)])
            pq.write_table(table.rename_columns([names.get(n, n) for n in table.column_names]), target / part.name / f.name)
        (target / part.name / "_SUCCESS").touch()


def _build(engine, raw: Path, out: Path, spec) -> list[dict]:
    config = BuildConfig(raw=str(raw), out=str(out), start=DAYS[0], end=DAYS[-1], max_len=MAX_LEN, spec=spec)
    return build(engine, config, log=lambda m: None)


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw_names")
    write_random_raw(root / "snake", SNAKE)
    _rewrite(root / "snake", root / "camel", CAMEL.raw_names)
    _rewrite(root / "snake", root / "typed", CAMEL.raw_names, RETYPED)
    _build(PolarsEngine(), root / "snake", root / "base", SNAKE)
    return root


def _rows(directory: Path) -> list[dict]:
    return [r for f in sorted(directory.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def _counted(rows: list[dict]) -> Counter:
    return Counter(tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(r.items())) for r in rows)


COUNTS = ("rows_read", "duplicates", "quarantined", "requests", "targets", "requests_without_valid_impressions",
          "users_in_state", "history_length")


def assert_same_build(out: Path, base: Path) -> None:
    """The records, state and counts of `out` (built with CAMEL) are the base build's (SNAKE),
    and its quarantine holds the same rows under the logs' names."""
    logged = contracts_of(CAMEL).quarantine_file.names
    for day in DAYS:
        ds = f"ds={day}"
        got, want = record_rows(out / "requests" / ds), record_rows(base / "requests" / ds)
        assert got and sorted(got, key=str) == sorted(want, key=str), f"{ds}: records differ"
        assert _counted(_rows(out / "state" / ds)) == _counted(_rows(base / "state" / ds)), f"{ds}: state differs"
        quarantine = _rows(out / "quarantine" / ds)
        assert pq.read_schema(next((out / "quarantine" / ds).glob("*.parquet"))).names == logged
        assert "isClick" in logged and "userId" in logged and "click" not in logged
        assert _counted(quarantine) == _counted([{CAMEL.raw_names.get(k, k): v for k, v in r.items()}
                                                 for r in _rows(base / "quarantine" / ds)]), f"{ds}: quarantine"
        reports = [json.loads((d / "reports" / ds / "build.json").read_text()) for d in (out, base)]
        assert [{k: r[k] for k in COUNTS} for r in reports][0] == {k: reports[1][k] for k in COUNTS}
    assert sum(sum(json.loads((base / "reports" / f"ds={d}" / "build.json").read_text())["quarantined"].values())
               for d in DAYS) > 0, "the traps quarantine rows"


@pytest.mark.parametrize("logs_as", ["camel", "typed"])
def test_polars_builds_renamed_and_retyped_logs_as_the_specs_own(logs, tmp_path, logs_as):
    assert pq.read_schema(next((logs / "typed").glob("ds=*/part-00000.parquet"))).field("requestTime").type \
        == pa.timestamp("ms", tz="UTC")
    _build(PolarsEngine(), logs / logs_as, tmp_path / "out", CAMEL)
    assert_same_build(tmp_path / "out", logs / "base")


@pytest.mark.parametrize("logs_as", ["camel", "typed"])
def test_spark_builds_renamed_and_retyped_logs_as_the_specs_own(logs, tmp_path, spark, logs_as):
    from longseq.etl.batch.spark_engine import SparkEngine

    _build(SparkEngine(spark), logs / logs_as, tmp_path / "out", CAMEL)
    assert_same_build(tmp_path / "out", logs / "base")


def _file(directory: Path, columns: dict[str, pa.Array], name: str = "part-0.parquet") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), directory / name)
    return directory / name


def _one_file_log(directory: Path, **changed: pa.Array) -> Path:
    """A raw file of CAMEL's contract, one row, under the logs' names, with `changed` columns
    (by the logs' names) of other types."""
    schema = to_arrow(contracts_of(CAMEL).raw_log)
    row = pa.Table.from_pylist([{n: 1 for n in schema.names} | {"event_id": "e", "request_id": "r"}], schema=schema)
    columns = {CAMEL.raw_names.get(n, n): row.column(n) for n in schema.names}
    path = _file(directory, {**columns, **changed})
    (directory / "_SUCCESS").touch()
    return path


def test_both_readers_floor_microseconds_and_read_bools_as_int8(tmp_path, spark):
    """Times before 1970 too: floored, as the contract's milliseconds (-1 us is -1 ms)."""
    micros = [-1001, -1000, -1, 0, 999, 1_767_225_600_123_999, None]
    n = len(micros)
    directory = tmp_path / "ds=2026-01-01"
    _one_file_log(directory)
    files = {"requestTime": pa.array(micros, pa.timestamp("us", tz="Asia/Tokyo")),
             "eventTime": pa.array([7] * n, pa.timestamp("ms")), "isClick": pa.array([True, False, None] + [True] * 4)}
    one = pq.read_table(directory / "part-0.parquet")
    table = pa.concat_tables([one] * n)
    for name, values in files.items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    pq.write_table(table, directory / "part-1.parquet")
    c = contracts_of(CAMEL)
    want_ts = [1, -2, -1, -1, 0, 0, 1_767_225_600_123, None]
    want_click = [1, 1, 0, None, 1, 1, 1, 1]
    arrow = read_arrow(str(directory), c.raw_log, names=CAMEL.raw_names)
    assert arrow.schema.field("request_ts").type == pa.int64() and arrow.schema.field("click").type == pa.int8()
    assert arrow.column("request_ts").to_pylist() == want_ts and arrow.column("event_ts").to_pylist() == [1] + [7] * n
    assert arrow.column("click").to_pylist() == want_click
    frame = read_spark(spark, LocalStorage(), str(directory), c.raw_log, CAMEL.raw_names)
    got = frame.select("request_ts", "event_ts", "click").collect()
    assert sorted(map(tuple, got), key=str) == sorted(zip(want_ts, [1] + [7] * n, want_click), key=str)
    assert dict(frame.dtypes)["request_ts"] == "bigint" and dict(frame.dtypes)["click"] == "tinyint"


@pytest.mark.parametrize("column, values, message", [
    ("requestTime", pa.array(["1"]), "column 'requestTime': expected int64, got string (also read as int64: int8, "
                                     "int16, int32, timestamp[s|ms|us] as ms since epoch)"),
    ("position", pa.array([1], pa.int64()), "column 'position': expected int32, got int64 (also read as int32: "
                                            "int8, int16)"),
    ("isClick", pa.array([1.0]), "column 'isClick': expected int8, got float64 (also read as int8: bool as 1 and 0)"),
    ("priceCents", pa.array([1.0]), "column 'priceCents': expected int64, got float64"),
    ("userId", pa.array([1], pa.uint32()), "column 'userId': expected int64, got uint32"),
    # nanoseconds: Spark 3.5 cannot read them; a timestamp is a time only where the contract has one
    ("eventTime", pa.array([1], pa.timestamp("ns")), "column 'eventTime': expected int64, got timestamp[ns]"),
    ("priceCents", pa.array([1], pa.timestamp("ms")), "column 'priceCents': expected int64, got timestamp[ms] "
                                                      "(also read as int64: int8, int16, int32)"),
    ("dwellMs", pa.array([1], pa.int64()), "column 'dwellMs': expected int32, got int64"),
])
def test_a_lossy_or_unrelated_type_is_refused_in_one_line_naming_the_file_and_column(tmp_path, column, values,
                                                                                     message):
    path = _one_file_log(tmp_path / "raw" / f"ds={DAYS[0]}", **{column: values})
    with pytest.raises(SchemaMismatchError) as e:
        build(PolarsEngine(), BuildConfig(raw=str(tmp_path / "raw"), out=str(tmp_path / "out"), start=DAYS[0],
                                          end=DAYS[0], max_len=MAX_LEN, spec=CAMEL), log=lambda m: None)
    assert str(path) in str(e.value) and message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_the_stream_reads_every_file_with_the_types_of_its_first(tmp_path):
    """A stream's files must agree on their types (one schema a stream), noted in its checkpoint."""
    raw, record = tmp_path / "raw", str(tmp_path / "ckpt" / "_longseq" / "checked-files.tsv")
    day = raw / f"ds={DAYS[0]}"
    _one_file_log(day, requestTime=pa.array([1], pa.timestamp("us", tz="UTC")), isClick=pa.array([True]))
    landed = LandedFiles(str(raw), CAMEL, None, record)
    assert landed.check() == 1
    assert landed.file_types()["request_ts"] == pa.timestamp("us", tz="UTC")
    # another unit or zone reads as the same Spark type: accepted
    _file(day, {**{n: pq.read_table(day / "part-0.parquet").column(n) for n in pq.read_schema(day / "part-0.parquet").names},
                "requestTime": pa.array([1], pa.timestamp("ms"))}, "part-1.parquet")
    assert landed.check() == 1
    table = pq.read_table(day / "part-0.parquet")
    pq.write_table(table.set_column(table.schema.get_field_index("isClick"), "isClick", pa.array([1], pa.int8())),
                   day / "part-2.parquet")
    again = LandedFiles(str(raw), CAMEL, None, record)  # a restart remembers the types
    with pytest.raises(SchemaMismatchError) as e:
        again.check()
    assert str(e.value).startswith(f"{day / 'part-2.parquet'}: column 'isClick' is int8 here, but bool in the files "
                                   "the stream read before, and a stream reads all its files with one schema"), str(e.value)
    assert "fix or remove the file" in str(e.value) and "\n" not in str(e.value)
    # a stream that starts before any file lands reads the contract's types
    empty = LandedFiles(str(tmp_path / "none"), CAMEL, None, str(tmp_path / "other" / "checked-files.tsv"))
    (tmp_path / "none").mkdir()
    assert empty.check() == 0 and empty.file_types()["click"] == pa.int8()


def test_a_stream_of_renamed_and_retyped_logs_writes_the_daily_builds_days(tmp_path, spark):
    """Generated logs (tests/test_build_spec.py's random traps hold cases where a stream cannot
    equal the daily build, docs/STREAMING.md), landed in event-time order as
    tests/test_stream_spark.py lands them, under the logs' names with timestamps for times."""
    from longseq.etl.stream.job import run_stream
    from longseq.etl.stream.settings import StreamConfig, StreamSettings
    from longseq.sources import SAMPLE_START
    from longseq.sources.generate import PROFILES, generate
    from tests.test_stream_sim import DAYS as STREAM_DAYS, HOUR_MS, arrivals
    from tests.test_stream_spark import assert_same_days, land

    raw = tmp_path / "raw"
    generate(raw, PROFILES["tiny"].with_sizes(users=None, days=len(STREAM_DAYS)), seed=11, start=SAMPLE_START,
             dirty=0.04, spec=CAMEL)
    lateness, delay = 2 * HOUR_MS, 30 * 60_000
    times = {"request_ts": pa.timestamp("ms", tz="UTC"), "event_ts": pa.timestamp("us", tz="America/New_York"),
             "position": pa.int16()}  # one set of types: a stream reads all its files with one schema
    batches = [[dataclasses.replace(f, table=_retyped(f.table, times).rename_columns(
                    [CAMEL.raw_names.get(n, n) for n in f.table.column_names])) for f in files]
               for files in arrivals(raw, STREAM_DAYS, CAMEL, delay, seed=3, rows_per_file=(20, 120),
                                     files_per_batch=(1, 1))]
    assert land(batches, tmp_path / "landing") > 20
    assert pq.read_schema(next((tmp_path / "landing").glob("ds=*/*.parquet"))).field("requestTime").type == \
        pa.timestamp("ms", tz="UTC")
    config = StreamConfig(raw=str(tmp_path / "landing"), out=str(tmp_path / "data"), checkpoint=str(tmp_path / "ckpt"),
                          settings=StreamSettings(max_len=MAX_LEN, lateness_ms=lateness, spec=CAMEL,
                                                  layout=COMPACT_LAYOUT),
                          watermark_delay_ms=delay, mode="once", max_files_per_trigger=8, state_partitions=2)
    assert run_stream(spark, config, log=lambda m: None)["closed_days"] == [d.isoformat() for d in STREAM_DAYS]
    batch = tmp_path / "batch"
    build(PolarsEngine(), BuildConfig(str(raw), str(batch), STREAM_DAYS[0], STREAM_DAYS[-1], MAX_LEN, spec=CAMEL,
                                      lateness_ms=lateness, layout=COMPACT_LAYOUT), log=lambda m: None)
    assert_same_days(tmp_path / "data", batch, STREAM_DAYS)
    names = pq.read_schema(next((batch / "quarantine").glob("ds=*/*.parquet"))).names
    assert names == contracts_of(CAMEL).quarantine_file.names and "requestTime" in names


def test_scores_under_the_logs_names(logs, tmp_path):
    from longseq.cli.main import main
    from longseq.etl.gates.publish import publish

    data = tmp_path / "data"
    shutil.copytree(logs / "base", data)
    publish(str(data), DAYS[0], override_reason="a test of score's names", log=lambda m: None)
    days = ["--data", str(data), "--start", DAYS[0].isoformat()]
    run = str(tmp_path / "run")
    assert main(["train", *days, "--run-dir", run, "--preset", "tiny", "--max-steps", "2", "--device", "cpu"]) == 0
    for flags, names in (([], ["request_id", "user_id", "request_ts", "item_id"]),
                         (["--log-names"], ["request_id", "userId", "requestTime", "product_id"])):
        out = tmp_path / f"scores{len(flags)}.parquet"
        # base was built with SNAKE: the names come from the spec given, which must build the same records
        assert main(["score", *days, "--run-dir", run, "--device", "cpu", "--output", str(out), "--spec",
                     str(_spec_file(tmp_path)), *flags]) == 0
        table = pq.read_table(out)
        assert table.column_names == [*names[:3], "target_index", names[3], "score_click", "score_cart",
                                      "score_purchase"]
        assert table.num_rows > 0
    plain, logged = pq.read_table(tmp_path / "scores0.parquet"), pq.read_table(tmp_path / "scores1.parquet")
    assert plain.rename_columns(logged.column_names).equals(logged)


def _spec_file(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "camel.yaml"
    path.write_text(yaml.safe_dump(CAMEL.to_dict(), sort_keys=False))
    return path
