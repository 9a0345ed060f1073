"""GX's two engines, Spark and pandas, run the same suites with the same outcome: on a spec
with features (every value check, the action range, renamed raw columns), clean and
corrupted. The pandas engine starts no JVM, and refuses what it cannot read.

The default spec's corruptions and the compact layout's are compared on both engines in
tests/test_validation.py and tests/test_compact.py."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from longseq.etl.gates.validation import outcome_rows, summary_table, validate
from longseq.schemas.errors import LongseqError
from longseq.schemas.contracts import SUCCESS_MARKER
from tests.test_validate_publish_spec import DAY, ECOM, _corrupted, _raw_rows, _records, _write_day, _write_raw
from tests.test_validation import validate_on_both


def _failed(outcome: dict) -> dict[str, str]:
    return {r["check"]: r["observed"] for r in outcome["checks"] if r["critical"] and not r["success"]}


@pytest.mark.spark
def test_both_engines_give_the_same_outcome_on_a_spec_with_features(spark, tmp_path):
    clean = validate_on_both(spark, _write_day(tmp_path / "clean", _records()), DAY)
    assert clean["passed"], summary_table(clean)
    rows, expected = _corrupted()  # a bad label, a negative category, NaN and inf, an action bit, a short list
    bad = validate_on_both(spark, _write_day(tmp_path / "bad", rows), DAY)
    assert _failed(bad) == expected, summary_table(bad)


@pytest.mark.spark
def test_both_engines_give_the_same_outcome_on_raw_logs_with_renamed_columns(spark, tmp_path):
    rows = _raw_rows()
    part = tmp_path / "raw" / f"ds={DAY}"
    part.mkdir(parents=True)
    _write_raw(rows, part / "part-0.parquet")  # product_id, seller_id: the logs' own names
    (part / SUCCESS_MARKER).touch()
    assert validate_on_both(spark, tmp_path / "out", DAY, "raw", raw=str(tmp_path / "raw"), spec=ECOM)["passed"]
    rows[3]["category_id"] = None
    rows[4]["purchase"] = 3
    rows[5]["event_ts"] = rows[5]["request_ts"] - 1
    _write_raw(rows, part / "part-0.parquet")
    dirty = validate_on_both(spark, tmp_path / "out", DAY, "raw", raw=str(tmp_path / "raw"), spec=ECOM)
    assert set(_failed(dirty)) == {"required_category_id", "label_binary_purchase", "event_not_before_request"}


@pytest.mark.subprocess
def test_the_pandas_engine_validates_from_the_command_line_without_a_jvm(tmp_path):
    """The CLI with --engine pandas: the same table and exit codes, and no JVM (GX imports
    pyspark where it is installed, but no Spark gateway is launched)."""
    good = _write_day(tmp_path / "good", _records())
    rows, expected = _corrupted()
    bad = _write_day(tmp_path / "bad", rows)
    script = ("import sys; from longseq.cli.main import main; code = main(sys.argv[1:]); "
              "from pyspark import SparkContext; assert SparkContext._gateway is None, 'a JVM started'; sys.exit(code)")

    def run(data: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, "validate", "--data", str(data), "--start", str(DAY),
                               "--engine", "pandas"], capture_output=True, text=True, timeout=300)

    ok = run(good)
    assert ok.returncode == 0, ok.stderr
    assert "requests suite for ds=" in ok.stdout and "PASSED" in ok.stdout
    failed = run(bad)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert all(check in failed.stderr for check in expected) and "critical expectations failed" in failed.stderr


def test_the_pandas_engine_refuses_cluster_paths_and_an_unknown_engine_in_one_line(tmp_path):
    with pytest.raises(LongseqError, match="the pandas engine validates local data only, not hdfs://nn/data: use "
                                           "--engine spark"):
        validate(None, "hdfs://nn/data", DAY, engine="pandas")
    with pytest.raises(LongseqError, match="unknown validation engine 'dask'; choose one of spark, pandas"):
        validate(None, str(tmp_path), DAY, engine="dask")


def test_spark_settings_with_the_pandas_engine_are_refused(tmp_path, capsys):
    from longseq.cli.main import main

    assert main(["validate", "--data", str(tmp_path), "--start", str(DAY), "--engine", "pandas",
                 "--master", "local[2]"]) != 0
    assert "apply to --engine spark only" in capsys.readouterr().err


def test_outcome_rows_tell_a_failed_check_from_a_passed_one():
    """The comparison the engine tests rest on sees a difference in any field of a check."""
    row = {"check": "no_leakage", "frame": "records", "critical": True, "success": True, "observed": "0 of 5 unexpected"}
    assert outcome_rows({"checks": [row]}) != outcome_rows({"checks": [{**row, "success": False}]})
    assert outcome_rows({"checks": [row]}) != outcome_rows({"checks": [{**row, "observed": "1 of 5 unexpected"}]})


@pytest.mark.subprocess
def test_the_pandas_engine_validates_days_in_processes_with_the_same_outcomes_in_day_order(tmp_path):
    from longseq.etl.batch.build import BuildConfig, build
    from longseq.etl.batch.polars_engine import PolarsEngine
    from longseq.etl.gates.validation import validate_days
    from longseq.sources import SAMPLE_START
    from longseq.sources.generate import PROFILES, generate

    days = [SAMPLE_START + dt.timedelta(days=i) for i in range(3)]
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate(raw, PROFILES["tiny"].with_sizes(users=None, days=3), seed=2, start=SAMPLE_START)
    build(PolarsEngine(), BuildConfig(str(raw), str(out), days[0], days[-1], 20), log=lambda m: None)
    shown: dict[int, list[str]] = {1: [], 2: []}
    outcomes = {jobs: validate_days(None, str(out), days, engine="pandas", jobs=jobs, show=shown[jobs].append)
                for jobs in (1, 2)}
    assert [o["ds"] for o in outcomes[2]] == [str(d) for d in days]
    assert [outcome_rows(o) for o in outcomes[2]] == [outcome_rows(o) for o in outcomes[1]]
    assert [line.split("Data Docs")[0] for line in shown[2]] == [line.split("Data Docs")[0] for line in shown[1]]


def test_jobs_are_for_the_pandas_engine_only(tmp_path):
    from longseq.etl.gates.validation import validate_days

    with pytest.raises(LongseqError, match="--jobs applies to --engine pandas only"):
        validate_days(lambda: pytest.fail("Spark must not start"), str(tmp_path), [DAY], jobs=2)
