"""Operating the build: prerequisites, errors, the state chain, atomic and idempotent days,
Spark settings and spark-submit. (Record-level semantics: test_build_semantics.py.)"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.dataset.layout import BuildLayout
from longseq.dataset.storage import LocalStorage
from longseq.etl.batch.build import BuildConfig, build
from longseq.schemas.contracts import COMPACT_LAYOUT, DEFAULT_LAYOUT, RAW_LOG, REQUEST_LAYOUT, SUCCESS_MARKER
from longseq.schemas.errors import LongseqError, MissingPrerequisiteError, SchemaMismatchError
from longseq.schemas.forms import to_arrow
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
from tests.records import record_rows

START = SAMPLE_START
BIN = Path(sys.executable).parent
DAY = lambda i: START + dt.timedelta(days=i)  # noqa: E731


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """Four days of the tiny profile, 5% dirty."""
    out = tmp_path_factory.mktemp("raw")
    generate(out, PROFILES["tiny"].with_sizes(users=30, days=4), seed=2, start=START, dirty=0.05)
    return out


def polars():
    from longseq.etl.batch.polars_engine import PolarsEngine

    return PolarsEngine()


def _quiet(_: str) -> None:
    pass


def _records(out: Path, day: dt.date) -> list[dict]:
    return sorted(record_rows(Path(str(out).removeprefix("file://")) / "requests" / f"ds={day}"),
                  key=lambda r: r["request_id"])


def _layouts(out: Path) -> list[str]:
    return [json.loads(f.read_text()).get("layout") for f in sorted((out / "reports").glob("ds=*/build.json"))]


def test_a_build_told_no_layout_goes_on_in_the_layout_its_days_have(raw, tmp_path):
    """A new output gets the default layout; a chain keeps the one it was built in, so a
    daily build run without --layout never switches a request-layout output to compact."""
    assert DEFAULT_LAYOUT == COMPACT_LAYOUT
    fresh, plain = tmp_path / "fresh", tmp_path / "plain"
    build(polars(), BuildConfig(str(raw), str(fresh), DAY(0), DAY(1)), log=_quiet)
    build(polars(), BuildConfig(str(raw), str(plain), DAY(0), layout=REQUEST_LAYOUT), log=_quiet)
    build(polars(), BuildConfig(str(raw), str(plain), DAY(1), DAY(2)), log=_quiet)
    assert _layouts(fresh) == [COMPACT_LAYOUT] * 2
    assert _layouts(plain) == [REQUEST_LAYOUT] * 3
    assert pq.read_schema(next((plain / "requests" / f"ds={DAY(2)}").glob("*.parquet"))).names[0] == "request_id"
    # a days-old report without "layout" was written before there were layouts: request rows
    report = plain / "reports" / f"ds={DAY(2)}" / "build.json"
    report.write_text(json.dumps({k: v for k, v in json.loads(report.read_text()).items() if k != "layout"}))
    build(polars(), BuildConfig(str(raw), str(plain), DAY(3)), log=_quiet)
    assert _layouts(plain)[-1] == REQUEST_LAYOUT
    build(polars(), BuildConfig(str(raw), str(plain), DAY(3), layout=COMPACT_LAYOUT), log=_quiet)  # told: it switches
    assert _layouts(plain)[-1] == COMPACT_LAYOUT
    assert record_rows(plain / "requests" / f"ds={DAY(1)}") == record_rows(fresh / "requests" / f"ds={DAY(1)}")


def test_the_build_summary_lists_quarantine_reasons_only_when_there_are_some(raw, tmp_path):
    from longseq.etl.batch.build import summarize_build

    clean = tmp_path / "clean"
    generate(clean, PROFILES["tiny"].with_sizes(users=5, days=1), seed=1, start=START, dirty=0.0)
    logged: list[str] = []
    reports = build(polars(), BuildConfig(str(clean), str(tmp_path / "a"), DAY(0)), log=logged.append)
    assert sum(reports[0]["quarantined"].values()) == 0
    assert "  quarantined 0\n" in summarize_build(reports) + "\n" and "quarantined 0;" in logged[-1]
    dirty = build(polars(), BuildConfig(str(raw), str(tmp_path / "b"), DAY(0)), log=logged.append)
    total = sum(dirty[0]["quarantined"].values())
    reason, n = next((k, v) for k, v in sorted(dirty[0]["quarantined"].items()) if v)
    assert f"quarantined {total:,} ({reason} {n:,}" in summarize_build(dirty) and f"quarantined {total:,} (" in logged[-1]


def _digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.glob("*.parquet"))}


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "longseq"), *args], capture_output=True, text=True, timeout=600, env=env)


# ---------------------------------------------------------------- prerequisites


@pytest.mark.subprocess
def test_missing_partition_missing_marker_and_bad_range_are_one_line_errors(raw, tmp_path):
    r = _cli("build", "--engine", "polars", "--raw", str(raw), "--data", str(tmp_path), "--start", "2026-02-01")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "raw partition" in r.stderr and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) <= 2

    copy = tmp_path / "raw"
    (copy / "ds=2026-01-01").mkdir(parents=True)
    for f in (raw / "ds=2026-01-01").glob("*.parquet"):
        (copy / "ds=2026-01-01" / f.name).write_bytes(f.read_bytes())
    r = _cli("build", "--engine", "polars", "--raw", str(copy), "--data", str(tmp_path / "o"), "--start", "2026-01-01")
    assert r.returncode == 1 and "no _SUCCESS marker" in r.stderr and "Traceback" not in r.stderr

    r = _cli("build", "--engine", "polars", "--raw", str(raw), "--data", str(tmp_path / "o"), "--start", "2026-01-03",
             "--end", "2026-01-02")
    assert r.returncode == 1 and "before --start" in r.stderr

    r = _cli("build", "--engine", "polars", "--master", "local[1]", "--raw", str(raw), "--data", str(tmp_path / "o"),
             "--start", "2026-01-01")
    assert r.returncode == 1 and "--engine spark only" in r.stderr


def _mismatched_raw(tmp_path: Path) -> Path:
    table = to_arrow(RAW_LOG).empty_table()
    i = table.schema.get_field_index("user_id")
    table = table.set_column(i, pa.field("user_id", pa.string()), pa.array([], pa.string()))
    part = tmp_path / "bad" / "ds=2026-01-01"
    part.mkdir(parents=True)
    pq.write_table(table, part / "part-00000.parquet")
    (part / SUCCESS_MARKER).touch()
    return tmp_path / "bad"


def test_schema_mismatch_polars(tmp_path):
    bad = _mismatched_raw(tmp_path)
    with pytest.raises(SchemaMismatchError, match="'user_id': expected int64, got string"):
        build(polars(), BuildConfig(str(bad), str(tmp_path / "out"), START), log=_quiet)


@pytest.mark.spark
def test_schema_mismatch_spark(spark, tmp_path):
    from longseq.etl.batch.spark_engine import SparkEngine

    bad = _mismatched_raw(tmp_path)
    with pytest.raises(SchemaMismatchError, match="'user_id': expected int64, got string"):
        build(SparkEngine(spark), BuildConfig(str(bad), str(tmp_path / "out"), START), log=_quiet)
    assert not (tmp_path / "out" / "requests" / "ds=2026-01-01").exists()


# ---------------------------------------------------------------- the state chain


def test_gap_in_the_state_chain_is_an_error_unless_catch_up(raw, tmp_path):
    out = str(tmp_path / "out")
    build(polars(), BuildConfig(str(raw), out, DAY(0)), log=_quiet)
    with pytest.raises(MissingPrerequisiteError, match=r"state after 2026-01-02 is missing.*--catch-up"):
        build(polars(), BuildConfig(str(raw), out, DAY(2)), log=_quiet)
    messages: list[str] = []
    build(polars(), BuildConfig(str(raw), out, DAY(2), catch_up=True), log=messages.append)
    assert any("--catch-up: building 1 missing day(s)" in m for m in messages)
    assert BuildLayout(out).built_days(LocalStorage()) == [DAY(0), DAY(1), DAY(2)]


def test_max_len_cannot_grow_along_the_state_chain(raw, tmp_path):
    build(polars(), BuildConfig(str(raw), str(tmp_path), DAY(0), max_len=10), log=_quiet)
    with pytest.raises(LongseqError, match="built with --max-len 10"):
        build(polars(), BuildConfig(str(raw), str(tmp_path), DAY(1), max_len=20), log=_quiet)
    build(polars(), BuildConfig(str(raw), str(tmp_path), DAY(1), max_len=5), log=_quiet)  # shorter is fine


def test_cold_start_is_announced(raw, tmp_path):
    messages: list[str] = []
    build(polars(), BuildConfig(str(raw), str(tmp_path), DAY(1)), log=messages.append)
    assert any("cold start" in m for m in messages)


# ---------------------------------------------------------------- atomic, idempotent


def test_a_failed_run_leaves_the_previous_day_intact_and_unbuilt_days_unusable(raw, tmp_path, monkeypatch):
    out = tmp_path / "out"
    build(polars(), BuildConfig(str(raw), str(out), DAY(0), DAY(1)), log=_quiet)
    before = _records(out, DAY(1))
    report = json.loads((out / "reports" / "ds=2026-01-02" / "build.json").read_text())

    calls = {"n": 0}
    real_rename = LocalStorage.rename

    def failing_rename(self, src, dst):
        calls["n"] += 1
        if calls["n"] == 3:  # in the middle of swapping the new outputs in
            raise OSError("disk full (simulated)")
        return real_rename(self, src, dst)

    monkeypatch.setattr(LocalStorage, "rename", failing_rename)
    with pytest.raises(OSError, match="simulated"):
        build(polars(), BuildConfig(str(raw), str(out), DAY(1)), log=_quiet)
    monkeypatch.undo()

    # no half-written partition is visible, no temp dirs are left, and the day is not built
    for kind in ("requests", "quarantine", "state"):
        for d in (out / kind).iterdir():
            assert not d.name.endswith(".tmp")
            assert d.name.startswith(".") or (d / SUCCESS_MARKER).exists()
    assert not (out / "reports" / "ds=2026-01-02" / "build.json").exists()
    with pytest.raises(MissingPrerequisiteError, match="state after 2026-01-02 is missing"):
        build(polars(), BuildConfig(str(raw), str(out), DAY(2)), log=_quiet)
    # re-running the day restores exactly what it was
    build(polars(), BuildConfig(str(raw), str(out), DAY(1)), log=_quiet)
    assert _records(out, DAY(1)) == before
    again = json.loads((out / "reports" / "ds=2026-01-02" / "build.json").read_text())
    volatile = ("seconds", "run_id")
    assert {k: v for k, v in again.items() if k not in volatile} == {k: v for k, v in report.items() if k not in volatile}


def test_rerunning_a_day_gives_the_same_bytes_polars(raw, tmp_path):
    out = tmp_path / "out"
    build(polars(), BuildConfig(str(raw), str(out), DAY(0), DAY(1)), log=_quiet)
    first = {k: _digest(out / k / "ds=2026-01-02") for k in ("requests", "quarantine", "state")}
    messages: list[str] = []
    build(polars(), BuildConfig(str(raw), str(out), DAY(1)), log=messages.append)
    assert {k: _digest(out / k / "ds=2026-01-02") for k in first} == first
    build(polars(), BuildConfig(str(raw), str(out), DAY(0)), log=messages.append)
    assert any("rebuild them" in m for m in messages)  # day 2 was built on day 1's old state


# ---------------------------------------------------------------- Spark settings, Hadoop paths, spark-submit


def test_spark_config_file_and_cli_overrides(tmp_path):
    from longseq.cli.arguments import spark_config
    from longseq.cli.main import build_parser
    from longseq.etl.spark_session import SparkConfig

    f = tmp_path / "spark.yaml"
    f.write_text("master: local[1]\nshuffle_partitions: 3\nconf:\n  spark.sql.adaptive.enabled: 'false'\n")
    args = build_parser().parse_args(["build", "--raw", "r", "--data", "o", "--start", "2026-01-01",
                                      "--spark-config", str(f), "--conf", "spark.executor.cores=2", "--driver-memory", "3g"])
    config = spark_config(args)
    settings = config.settings()
    assert settings["spark.master"] == "local[1]" and settings["spark.sql.shuffle.partitions"] == "3"
    assert settings["spark.sql.adaptive.enabled"] == "false" and settings["spark.executor.cores"] == "2"
    assert settings["spark.driver.memory"] == "3g" and settings["spark.sql.session.timeZone"] == "UTC"
    f.write_text("masterr: local[1]\n")
    with pytest.raises(LongseqError, match="unknown Spark config keys"):
        SparkConfig.from_file(f)
    args = build_parser().parse_args(["build", "--raw", "r", "--data", "o", "--start", "2026-01-01", "--from-spark-submit"])
    assert "spark.master" not in spark_config(args).settings()  # spark-submit decides


@pytest.mark.spark
def test_hadoop_file_system_paths_give_the_same_records(spark, raw, tmp_path):
    """file:// URIs go through Hadoop's FileSystem API, as hdfs:// or s3a:// would."""
    from longseq.etl.batch.spark_engine import SparkEngine

    local, uri = tmp_path / "local", tmp_path / "uri"
    build(SparkEngine(spark), BuildConfig(str(raw), str(local), DAY(0), DAY(1), max_len=20), log=_quiet)
    build(SparkEngine(spark), BuildConfig(f"file://{raw}", f"file://{uri}", DAY(0), DAY(1), max_len=20), log=_quiet)
    for day in (DAY(0), DAY(1)):
        assert _records(uri, day) == _records(local, day)
        assert (uri / "reports" / f"ds={day}" / "build.json").exists()


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.subprocess
def test_spark_submit_entry_point(raw, tmp_path):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    r = subprocess.run(
        [str(BIN / "spark-submit"), "--master", "local[1]", "--driver-memory", "1g", "cli/spark_job.py",
         "--raw", str(raw), "--data", str(tmp_path), "--start", "2026-01-01", "--max-len", "20"],
        capture_output=True, text=True, timeout=600, env=env, cwd=Path(__file__).resolve().parents[1],
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ds=2026-01-01:" in r.stdout + r.stderr  # spark-submit may pass the driver's stderr to stdout
    assert (tmp_path / "requests" / "ds=2026-01-01" / SUCCESS_MARKER).exists()


@pytest.mark.spark
@pytest.mark.slow
def test_a_user_with_100k_events_builds_in_a_small_jvm(spark, tmp_path):
    """One user with 100k events in a day and 10k on the next, in the tests' 1 GB driver.

    The user's events travel as one array per user; nothing of size requests x events is
    materialised, so this fits. The histories are checked against the events directly.
    """
    from longseq.etl.batch.spark_engine import SparkEngine
    from longseq.schemas.contracts import day_start_ms

    rng = np.random.default_rng(0)
    max_len, per_request = 1_000, 10
    rows_by_day = {}
    for d, n_requests in ((0, 10_000), (1, 1_000)):
        n = n_requests * per_request
        start = day_start_ms(DAY(d))
        request_ts = np.repeat(np.sort(rng.integers(start, start + 86_000_000, n_requests)), per_request)
        event_ts = request_ts + rng.integers(1, 60_000, n)
        rows_by_day[d] = pa.table({
            "event_id": pa.array([f"e{d}-{i}" for i in range(n)]),
            "request_id": pa.array([f"r{d}-{i // per_request}" for i in range(n)]),
            "user_id": pa.array(np.full(n, 7, np.int64)),
            "request_ts": pa.array(request_ts),
            "item_id": pa.array(rng.integers(1, 10**6, n)),
            "author_id": pa.array(rng.integers(1, 10**4, n)),
            "position": pa.array(np.tile(np.arange(per_request, dtype=np.int32), n_requests)),
            "event_ts": pa.array(event_ts),
            "play_ms": pa.array(np.zeros(n, np.int32)),
            "duration_ms": pa.array(np.zeros(n, np.int32)),
            **{t: pa.array(rng.integers(0, 2, n).astype(np.int8)) for t in ("finish", "skip", "like", "comment")},
        }).cast(to_arrow(RAW_LOG))
        part = tmp_path / "raw" / f"ds={DAY(d)}"
        part.mkdir(parents=True)
        pq.write_table(rows_by_day[d], part / "part-00000.parquet")
        (part / SUCCESS_MARKER).touch()

    out = tmp_path / "out"
    reports = build(SparkEngine(spark), BuildConfig(str(tmp_path / "raw"), str(out), DAY(0), DAY(1), max_len), log=_quiet)
    assert [r["requests"] for r in reports] == [10_000, 1_000]
    assert reports[1]["history_length"]["p50"] == max_len

    # spot-check the last record of day 2 against the events themselves
    events = pa.concat_tables(rows_by_day.values()).to_pandas().sort_values(["event_ts", "event_id"])
    record = max(_records(out, DAY(1)), key=lambda r: (r["request_ts"], r["request_id"]))
    expected = events[events.event_ts < record["request_ts"]].tail(max_len)
    assert record["hist_item_id"] == expected.item_id.tolist()
    assert record["hist_event_ts"] == expected.event_ts.tolist()
    state = pq.read_table(out / "state" / f"ds={DAY(1)}").to_pylist()
    assert len(state) == 1 and max_len <= len(state[0]["hist_item_id"]) <= max_len + 10_000


# ---------------------------------------------------------------- quiet days, and the state a build reads

ENGINES = [pytest.param("polars", id="polars"), pytest.param("spark", id="spark", marks=pytest.mark.spark)]


def _engine(name: str, request):
    if name == "polars":
        return polars()
    from longseq.etl.batch.spark_engine import SparkEngine

    return SparkEngine(request.getfixturevalue("spark"))  # the one session of the run


def _raw_without(raw: Path, tmp_path: Path, gone: dt.date, empty: dt.date | None = None) -> Path:
    """A copy of the raw days without `gone`'s partition (not landed), and with `empty`'s as a
    partition holding only _SUCCESS (a day observed without logs)."""
    copy = tmp_path / "raw-copy"
    for part in raw.glob("ds=*"):
        if part.name != f"ds={gone}":
            target = copy / part.name
            target.mkdir(parents=True)
            for f in part.iterdir():
                if part.name != f"ds={empty}" or f.name == SUCCESS_MARKER:
                    (target / f.name).write_bytes(f.read_bytes())
    return copy


def _report(out: Path, day: dt.date) -> dict:
    return json.loads((out / "reports" / f"ds={day}" / "build.json").read_text())


def test_a_missing_partition_has_not_landed_and_is_refused_naming_every_such_day(raw, tmp_path):
    copy = _raw_without(raw, tmp_path, DAY(1))
    (copy / f"ds={DAY(3)}" / SUCCESS_MARKER).unlink()
    (copy / f"ds={DAY(3)}").rename(tmp_path / "elsewhere")  # two days missing
    with pytest.raises(MissingPrerequisiteError) as e:
        build(polars(), BuildConfig(str(copy), str(tmp_path / "out"), DAY(0), DAY(3)), log=_quiet)
    message = str(e.value)
    assert "\n" not in message and "2 days (2026-01-02,2026-01-04) have not landed" in message
    assert f"{copy}/ds=2026-01-02 does not exist" in message and "--empty-days 2026-01-02,2026-01-04" in message
    assert not (tmp_path / "out" / "reports").exists()  # refused before the first day of the range


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.slow_engines("spark")  # six Spark days, ~50 s here
def test_a_day_declared_empty_builds_as_a_day_without_logs_and_says_so(raw, tmp_path, engine, request):
    """--empty-days D for a day with no partition gives the records, state and counts of D
    observed without logs (ds=D/ holding only _SUCCESS); its report says it was declared, and
    the next day builds on its state."""
    eng = _engine(engine, request)
    declared, observed = tmp_path / "declared", tmp_path / "observed"
    build(eng, BuildConfig(str(_raw_without(raw, tmp_path / "a", DAY(1))), str(declared), DAY(0), DAY(2),
                           max_len=20, empty_days=(DAY(1),)), log=_quiet)
    build(eng, BuildConfig(str(_raw_without(raw, tmp_path / "b", None, empty=DAY(1))), str(observed), DAY(0), DAY(2),
                           max_len=20), log=_quiet)
    for day in (DAY(1), DAY(2)):
        for kind in ("requests", "state"):
            assert _digest(declared / kind / f"ds={day}") == _digest(observed / kind / f"ds={day}"), (kind, day)
    report, seen = _report(declared, DAY(1)), _report(observed, DAY(1))
    assert report["declared_empty"] is True and report["raw_partition"] is None and report["rows_read"] == 0
    assert seen["declared_empty"] is False and seen["raw_partition"].endswith(f"ds={DAY(1)}")
    same = {k: v for k, v in report.items() if k not in ("declared_empty", "raw_partition", "run_id", "seconds",
                                                         "previous_state")}
    assert same == {k: seen[k] for k in same}
    assert _report(declared, DAY(2))["previous_state"].endswith(f"state/ds={DAY(1)}")
    assert _records(declared, DAY(2)) == _records(observed, DAY(2))


def test_empty_days_are_refused_for_a_day_with_a_partition_or_outside_the_build(raw, tmp_path):
    with pytest.raises(LongseqError, match=r"^--empty-days 2026-01-02: its raw partition .*ds=2026-01-02 exists"):
        build(polars(), BuildConfig(str(raw), str(tmp_path), DAY(0), DAY(1), empty_days=(DAY(1),)), log=_quiet)
    with pytest.raises(LongseqError, match=r"--empty-days 2026-01-04 is not a day this build builds \(2026-01-01"):
        build(polars(), BuildConfig(str(raw), str(tmp_path), DAY(0), DAY(1), empty_days=(DAY(3),)), log=_quiet)
    assert not (tmp_path / "reports").exists()


def _half_the_users(state: Path) -> Path:
    """The state's first part file replaced by valid Parquet of half its users."""
    part = sorted(state.glob("*.parquet"))[0]
    table = pq.read_table(part)
    pq.write_table(table.slice(0, table.num_rows // 2), part)
    return part


@pytest.mark.parametrize("engine", ENGINES)
def test_a_state_whose_bytes_changed_is_refused_naming_the_file(raw, tmp_path, engine, request):
    from longseq.etl.batch.build import StateChecksumError

    eng, out = _engine(engine, request), tmp_path / "out"
    build(eng, BuildConfig(str(raw), str(out), DAY(0), max_len=20), log=_quiet)
    part = _half_the_users(out / "state" / f"ds={DAY(0)}")
    with pytest.raises(StateChecksumError) as e:
        build(eng, BuildConfig(str(raw), str(out), DAY(1), DAY(2), max_len=20), log=_quiet)
    message = str(e.value)
    assert "\n" not in message and f"{part} does not match the build report of {DAY(0)}" in message
    assert f"--start {DAY(0)} --end {DAY(2)}" in message
    assert BuildLayout(str(out)).built_days(LocalStorage()) == [DAY(0)]  # nothing built on it
    # a state file the build did not write (or one gone) is refused too
    build(eng, BuildConfig(str(raw), str(out), DAY(0), max_len=20), log=_quiet)  # the fix the message gives
    extra = out / "state" / f"ds={DAY(0)}" / "part-09999.parquet"
    extra.write_bytes(part.read_bytes())
    with pytest.raises(StateChecksumError, match=rf"the state after {DAY(0)} .* is not the one its build wrote"):
        build(eng, BuildConfig(str(raw), str(out), DAY(1), max_len=20), log=_quiet)
    extra.unlink()
    build(eng, BuildConfig(str(raw), str(out), DAY(1), max_len=20), log=_quiet)


def test_the_cli_declares_empty_days_and_refuses_in_one_line(raw, tmp_path, capsys):
    from longseq.cli.main import main

    copy, out = _raw_without(raw, tmp_path, DAY(1)), tmp_path / "out"
    argv = ["build", "--engine", "polars", "--raw", str(copy), "--data", str(out), "--start", str(DAY(0)),
            "--end", str(DAY(2)), "--max-len", "20"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("longseq build: error: ds=2026-01-02 has not landed") and "--empty-days 2026-01-02" in err
    assert main([*argv, "--empty-days", str(DAY(1))]) == 0
    captured = capsys.readouterr()
    assert "declared empty (--empty-days, no raw partition): 2026-01-02" in captured.out
    assert f"ds={DAY(1)}: declared empty (--empty-days): 0 rows" in captured.err
    _half_the_users(out / "state" / f"ds={DAY(2)}")
    assert main([*argv[:-6], "--start", str(DAY(3)), "--max-len", "20"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match the build report of 2026-01-03" in err[0], err
