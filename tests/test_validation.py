"""The Great Expectations gate: clean days pass, each corruption of real built records fails
the right expectation and blocks publishing, overrides need and record a reason. The suites
run on both of GX's engines, Spark and pandas, with the same outcome."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.gates.validation import (
    ENGINES, ValidationConfig, ValidationFailed, outcome_rows, require_publishable, summary_table, validate,
)
from longseq.schemas.contracts import REQUEST_LAYOUT, REQUEST_RECORD, SUCCESS_MARKER
from longseq.schemas.forms import to_arrow
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate

pytestmark = pytest.mark.spark

START = SAMPLE_START
DAY2 = START + dt.timedelta(days=1)
MAX_LEN = 20


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    from longseq.etl.batch.polars_engine import PolarsEngine

    root = tmp_path_factory.mktemp("validation")
    raw, out = root / "raw", root / "out"
    generate(raw, PROFILES["tiny"], seed=4, start=START)
    build(PolarsEngine(), BuildConfig(str(raw), str(out), START, DAY2, MAX_LEN, layout=REQUEST_LAYOUT), log=lambda m: None)
    return raw, out


def _rows(out: Path) -> list[dict]:
    return pq.read_table(out / "requests" / f"ds={DAY2}").to_pylist()


def _with_records(tmp_path: Path, rows: list[dict], built_out: Path | None = None) -> Path:
    """A copy of the built day whose records are `rows`, with a build report that records
    the history bound it was built with (validation reads it from there)."""
    out = tmp_path / "out"
    report = out / "reports" / f"ds={DAY2}"
    report.mkdir(parents=True)
    (report / "build.json").write_text(json.dumps({"max_len": MAX_LEN}))
    part = out / "requests" / f"ds={DAY2}"
    part.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=to_arrow(REQUEST_RECORD)), part / "part-00000.parquet")
    (part / SUCCESS_MARKER).touch()
    return out


def _failed(outcome: dict) -> set[str]:
    return {r["check"] for r in outcome["checks"] if r["critical"] and not r["success"]}


def validate_on_both(spark, out, day: dt.date, suite: str = "requests", **kwargs) -> dict:
    """Validate with Spark, then with pandas (no Spark session); the outcomes must agree
    check by check. Returns the second, whose files the day keeps."""
    outcomes = [validate(spark if engine == "spark" else None, str(out), day, suite, engine=engine, **kwargs)
                for engine in ENGINES]
    assert outcome_rows(outcomes[0]) == outcome_rows(outcomes[1]), (summary_table(outcomes[0]), summary_table(outcomes[1]))
    return outcomes[1]


def test_a_clean_built_day_passes_and_is_publishable(spark, built):
    _, out = built
    outcome = validate_on_both(spark, out, DAY2, "requests", cfg=ValidationConfig(max_len=MAX_LEN))
    assert outcome["passed"], summary_table(outcome)
    assert all(r["success"] for r in outcome["checks"])
    written = json.loads((out / "validation" / f"ds={DAY2}" / "requests.json").read_text())
    assert written["passed"] and len(written["gx_results"]) == len(outcome["checks"])
    assert (out / "validation" / f"ds={DAY2}" / "docs" / "index.html").exists()
    require_publishable(str(out), DAY2)  # no error
    table = summary_table(outcome)
    assert "request_id_unique" in table and "PASSED" in table


def _older_events(row: dict, n: int) -> dict:
    """Prepend n aligned, sorted, older events: a history longer than max_len, nothing else wrong."""
    first = row["hist_event_ts"][0]
    row = dict(row)
    for column in ("hist_item_id", "hist_author_id", "hist_action"):
        row[column] = [row[column][0]] * n + row[column]
    row["hist_event_ts"] = [first - n + i for i in range(n)] + row["hist_event_ts"]
    return row


def _corrupt(kind: str, rows: list[dict]) -> list[dict]:
    rows = [dict(r) for r in rows]
    i = next(k for k, r in enumerate(rows) if len(r["hist_event_ts"]) >= 3 and len(set(r["hist_event_ts"])) >= 2)
    r = rows[i]
    if kind == "leak":
        r["hist_event_ts"] = r["hist_event_ts"][:-1] + [r["request_ts"] + 1]
    elif kind == "misaligned":
        r["hist_item_id"] = r["hist_item_id"][:-1]
    elif kind == "duplicate":
        rows.append(dict(rows[0]))
    elif kind == "no_targets":
        for column in [f.name for f in REQUEST_RECORD if f.name.startswith("tgt_")]:
            r[column] = []
    elif kind == "label":
        r["tgt_finish"] = [2] + r["tgt_finish"][1:]
    elif kind == "overlong":
        rows[i] = _older_events(r, MAX_LEN)
    elif kind == "unsorted":
        ts = r["hist_event_ts"]
        j = next(k for k in range(len(ts) - 1) if ts[k] != ts[k + 1])
        r["hist_event_ts"] = ts[:j] + [ts[j + 1], ts[j]] + ts[j + 2:]
    return rows


@pytest.mark.parametrize(
    "kind, check",
    [
        ("leak", "no_leakage"),
        ("misaligned", "history_lists_aligned"),
        ("duplicate", "request_id_unique"),
        ("no_targets", "has_targets"),
        ("label", "labels_binary_finish"),
        ("overlong", "history_within_max_len"),
        ("unsorted", "history_sorted"),
    ],
)
def test_each_corruption_fails_its_expectation_and_blocks_publishing(spark, built, tmp_path, kind, check):
    """No config: the history bound comes from the build report (overlong fails at MAX_LEN)."""
    _, out = built
    bad = _with_records(tmp_path, _corrupt(kind, _rows(out)))
    outcome = validate_on_both(spark, bad, DAY2, "requests")
    assert not outcome["passed"]
    assert _failed(outcome) == {check}, summary_table(outcome)
    with pytest.raises(ValidationFailed, match=f"refusing to publish: ds={DAY2} failed validation \\({check}\\)"):
        require_publishable(str(bad), DAY2)


def test_publishing_needs_a_validation_and_an_override_needs_a_reason(tmp_path):
    with pytest.raises(ValidationFailed, match="has not been validated"):
        require_publishable(str(tmp_path), DAY2)
    with pytest.raises(ValidationFailed, match="override with a reason"):
        require_publishable(str(tmp_path), DAY2, override_reason="   ")
    require_publishable(str(tmp_path), DAY2, override_reason="backfill of a known-bad day, ticket 123")
    record = json.loads((tmp_path / "validation" / f"ds={DAY2}" / "override.json").read_text())
    assert record["reason"] == "backfill of a known-bad day, ticket 123"
    assert "has not been validated" in record["problem"] and record["by"] and record["at"]


def test_an_uncommitted_day_is_not_validated(spark, built, tmp_path):
    """Records without the build's report (a crash mid-commit) are not a built day."""
    _, out = built
    bad = _with_records(tmp_path, _rows(out))
    (bad / "reports" / f"ds={DAY2}" / "build.json").unlink()
    with pytest.raises(Exception, match="no built request records"):
        validate(spark, str(bad), DAY2, "requests")


def test_critical_overrides_a_warn_glob():
    cfg = ValidationConfig(critical_only=("label_rate_like",))
    assert cfg.critical("label_rate_like") and not cfg.critical("label_rate_finish")


def test_severity_is_configurable(spark, built, tmp_path):
    _, out = built
    bad = _with_records(tmp_path, _corrupt("duplicate", _rows(out)))
    cfg = ValidationConfig(max_len=MAX_LEN, warn_only=("request_id_unique",))
    outcome = validate(spark, str(bad), DAY2, "requests", cfg=cfg)
    assert outcome["passed"]
    assert any(r["check"] == "request_id_unique" and not r["success"] and not r["critical"] for r in outcome["checks"])
    cfg = ValidationConfig(max_len=MAX_LEN, label_rates={t: (0.9, 1.0) for t in ("finish", "skip", "like", "comment")},
                           warn_only=())
    outcome = validate(spark, str(out), DAY2, "requests", cfg=cfg)
    assert _failed(outcome) >= {"label_rate_like", "label_rate_comment"}


def test_raw_suite_passes_clean_logs_and_fails_dirty_ones(spark, built, tmp_path):
    raw, out = built
    assert validate_on_both(spark, out, DAY2, "raw", raw=str(raw))["passed"]
    dirty = tmp_path / "dirty"
    generate(dirty, PROFILES["tiny"], seed=4, start=START, dirty=0.2)
    outcome = validate_on_both(spark, tmp_path / "o", DAY2, "raw", raw=str(dirty))
    assert not outcome["passed"]
    assert "event_not_before_request" in _failed(outcome)
    # the raw suite does not make a day publishable; publish says what it found
    with pytest.raises(ValidationFailed, match=f"ds={DAY2}'s raw logs failed the raw suite \\(.*event_not_before_request"
                                               f".*\\) and its records have not been validated"):
        require_publishable(str(tmp_path / "o"), DAY2)
    validate(None, str(tmp_path / "clean"), DAY2, "raw", raw=str(raw), engine="pandas")
    with pytest.raises(ValidationFailed, match=f"ds={DAY2}'s records have not been validated \\(its raw logs passed"):
        require_publishable(str(tmp_path / "clean"), DAY2)


def test_a_day_without_impressions_builds_validates_and_publishes(spark, tmp_path):
    """A complete raw partition with no rows (only _SUCCESS): the build reports 0 rows, both
    suites pass (GX gives no counts on an empty frame; validate used to crash formatting
    them), and the day publishes with 0 requests."""
    from longseq.dataset.raw import RawPartitionWriter
    from longseq.etl.batch.polars_engine import PolarsEngine
    from longseq.etl.gates.publish import publish_day

    raw, out = tmp_path / "raw", tmp_path / "out"
    generate(raw, PROFILES["tiny"].with_sizes(users=None, days=1), seed=4, start=START)
    RawPartitionWriter(raw, DAY2).commit()  # a day without logs: its marker, no rows
    reports = build(PolarsEngine(), BuildConfig(str(raw), str(out), START, DAY2, MAX_LEN, layout=REQUEST_LAYOUT),
                    log=lambda m: None)
    assert reports[-1]["rows_read"] == 0 and reports[-1]["requests"] == 0
    for suite in ("raw", "requests"):
        outcome = validate_on_both(spark, out, DAY2, suite, raw=str(raw), cfg=ValidationConfig(max_len=MAX_LEN))
        assert outcome["passed"], summary_table(outcome)
        assert "no rows" in summary_table(outcome)
    assert publish_day(str(out), DAY2)["rows"] == 0


def test_the_raw_suite_of_a_day_declared_empty_says_so(spark, tmp_path):
    """A day built with --empty-days has no raw partition: the raw suite says the day was
    declared empty and has no logs to validate (not that its logs have not landed), and the
    requests suite validates it."""
    from longseq.etl.batch.polars_engine import PolarsEngine
    from longseq.schemas.errors import MissingPrerequisiteError

    raw, out = tmp_path / "raw", tmp_path / "out"
    generate(raw, PROFILES["tiny"].with_sizes(users=None, days=1), seed=4, start=START)
    build(PolarsEngine(), BuildConfig(str(raw), str(out), START, DAY2, MAX_LEN, empty_days=(DAY2,)), log=lambda m: None)
    with pytest.raises(MissingPrerequisiteError, match="declared the day empty") as e:
        validate(spark, str(out), DAY2, "raw", raw=str(raw))
    assert "not landed" not in str(e.value)
    assert validate(spark, str(out), DAY2, "requests", cfg=ValidationConfig(max_len=MAX_LEN))["passed"]


@pytest.mark.subprocess
def test_cli_exit_codes(built, tmp_path):
    import subprocess
    import sys

    _, out = built
    longseq = str(Path(sys.executable).with_name("longseq"))
    bad = _with_records(tmp_path, _corrupt("leak", _rows(out)))
    r = subprocess.run([longseq, "validate", "--data", str(bad), "--start", str(DAY2),
                        "--master", "local[1]", "--driver-memory", "1g"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1
    assert "no_leakage" in r.stdout and "FAIL" in r.stdout
    assert f"critical expectations failed: ds={DAY2} (no_leakage)" in r.stderr and "Traceback" not in r.stderr
    assert "Calculating Metrics" not in r.stdout + r.stderr  # GX's progress bars stay out
    shutil.rmtree(bad)
    r = subprocess.run([longseq, "validate", "--data", str(bad), "--start", str(DAY2)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 1 and "no built request records" in r.stderr


def test_config_file(tmp_path):
    f = tmp_path / "v.yaml"
    f.write_text("label_rates:\n  like: [0.01, 0.2]\nwarn_only: [history_sorted]\n")
    cfg = ValidationConfig.from_file(str(f), max_len=50)
    assert cfg.label_rates["like"] == (0.01, 0.2) and cfg.label_rates["finish"] == ValidationConfig().label_rates["finish"]
    assert cfg.max_len == 50 and not cfg.critical("history_sorted") and cfg.critical("label_rate_like")
    f.write_text("max_lenn: 3\n")
    from longseq.schemas.errors import LongseqError

    with pytest.raises(LongseqError, match="unknown validation config keys"):
        ValidationConfig.from_file(str(f))


def test_relative_output_paths_work(spark, built, tmp_path, monkeypatch):
    """The demo passes a relative OUT; GX's Data Docs need an absolute directory."""
    _, out = built
    for kind in ("requests", "reports"):
        shutil.copytree(out / kind, tmp_path / "rel" / kind)
    monkeypatch.chdir(tmp_path)
    outcome = validate(spark, "rel", DAY2, "requests", cfg=ValidationConfig(max_len=MAX_LEN))
    assert outcome["passed"] and Path(outcome["docs"]).is_absolute()
    assert (tmp_path / "rel" / "validation" / f"ds={DAY2}" / "docs" / "index.html").exists()
