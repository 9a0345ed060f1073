"""Validation, publishing and the published-data check follow the output's dataset spec
(docs/SPEC.md): the ecommerce suites check its tasks, action bits and features; the default
suites are exactly the ones from before specs; a day or a reader of another spec is refused.

The ecommerce outputs here are written by hand in the build's layout (dataset/layout.py):
DATA/spec.yaml, the records of the spec's contract, the day's report and markers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.dataset.published import PublishedDataError, published_files
from longseq.dataset.spec_record import record_spec, spec_summary
from longseq.dataset.storage import LocalStorage
from longseq.etl.gates.publish import publish
from longseq.etl.gates.validation import ValidationConfig, raw_checks, request_checks, summary_table, validate
from longseq.schemas.contracts import DEFAULT_SPEC, SUCCESS_MARKER, contracts_of, day_start_ms
from longseq.schemas.errors import LongseqError
from longseq.schemas.forms import to_arrow
from longseq.schemas.spec import SPECS_DIR, SpecError, load_spec
from longseq.sources import SAMPLE_START

ECOM = load_spec(SPECS_DIR / "ecommerce.yaml")
DAY = SAMPLE_START
MAX_LEN = 20
T0 = day_start_ms(DAY)


# ---------------------------------------------------------------- fixtures written by hand


def _record(i: int) -> dict:
    """A clean ecommerce request record: three history events, two targets."""
    ts = [T0 + 100 * i + k for k in range(3)]
    return {
        "request_id": f"r{i}", "user_id": i + 1, "request_ts": T0 + 10_000,
        "hist_item_id": [11, 12, 13], "hist_author_id": [1, 2, 1], "hist_event_ts": ts,
        "hist_action": [0, 1, 7],  # 7 = click | cart | purchase, the largest of three tasks
        "hist_category": [5, 0, 4095], "hist_price_bucket": [999.0, 0.0, 60000.0],
        "hist_dwell_ratio": [0.5, 0.0, 3.25],
        "tgt_item_id": [21, 22], "tgt_author_id": [3, 4], "tgt_category": [7, 8],
        "tgt_price_bucket": [1500.0, 250.0], "tgt_click": [1, 0], "tgt_cart": [0, 0], "tgt_purchase": [0, 0],
    }


def _records(n: int = 8) -> list[dict]:
    rows = [_record(i) for i in range(n)]
    assert set(rows[0]) == set(contracts_of(ECOM).request_record.names)  # the contract the test expects
    return rows


def _write_day(out: Path, rows: list[dict], built_with=ECOM, recorded=ECOM) -> Path:
    """A built day of DATA=out whose records are `rows`, DATA recording `recorded` and the
    day's report `built_with` (None: a report from before specs)."""
    record_spec(LocalStorage(), str(out), recorded)  # before requests/: a first build records its spec
    report = {"max_len": MAX_LEN, "run_id": "hand-made"}
    if built_with is not None:
        report["spec"] = spec_summary(built_with)
    (out / "reports" / f"ds={DAY}").mkdir(parents=True)
    (out / "reports" / f"ds={DAY}" / "build.json").write_text(json.dumps(report))
    part = out / "requests" / f"ds={DAY}"
    part.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=to_arrow(contracts_of(ECOM).request_record)),
                   part / "part-00000.parquet")
    (part / SUCCESS_MARKER).touch()
    (out / "state" / f"ds={DAY}").mkdir(parents=True)
    (out / "state" / f"ds={DAY}" / SUCCESS_MARKER).touch()
    return out


def _failed(outcome: dict) -> dict[str, str]:
    return {r["check"]: r["observed"] for r in outcome["checks"] if r["critical"] and not r["success"]}


# ---------------------------------------------------------------- the suites (no Spark)

# The default spec's suites as they were before specs (etl/gates/validation.py at 51563e7):
# (check, frame, expectation, its kwargs), for max_len 20 and the default config.
_IN_TRUE = "ExpectColumnValuesToBeInSet"
DEFAULT_REQUEST_SUITE = [
    ("request_id_unique", "records", "ExpectColumnValuesToBeUnique", {"column": "request_id"}),
    ("history_within_max_len", "records", "ExpectColumnValuesToBeBetween",
     {"column": "hist_len", "min_value": 0, "max_value": 20}),
    ("history_lists_aligned", "records", _IN_TRUE, {"column": "hist_aligned", "value_set": [True]}),
    ("target_lists_aligned", "records", _IN_TRUE, {"column": "tgt_aligned", "value_set": [True]}),
    ("has_targets", "records", "ExpectColumnValuesToBeBetween", {"column": "n_targets", "min_value": 1}),
    ("no_leakage", "records", _IN_TRUE, {"column": "leak_free", "value_set": [True]}),
    ("history_sorted", "records", _IN_TRUE, {"column": "hist_sorted", "value_set": [True]}),
    ("targets_per_request_mean", "records", "ExpectColumnMeanToBeBetween",
     {"column": "n_targets", "min_value": 1.0, "max_value": 64.0}),
    ("history_length_median", "records", "ExpectColumnMedianToBeBetween",
     {"column": "hist_len", "min_value": 0.0, "max_value": 20.0}),
    *[check for task, (lo, hi) in {"finish": (0.05, 0.95), "skip": (0.01, 0.9), "like": (0.0, 0.5),
                                   "comment": (0.0, 0.3)}.items()
      for check in [(f"labels_binary_{task}", "targets", _IN_TRUE, {"column": task, "value_set": [0, 1]}),
                    (f"label_rate_{task}", "targets", "ExpectColumnMeanToBeBetween",
                     {"column": task, "min_value": lo, "max_value": hi})]],
]
DEFAULT_RAW_SUITE = [
    *[(f"required_{c}", "raw", "ExpectColumnValuesToNotBeNull", {"column": c, "mostly": 0.99})
      for c in ("event_id", "request_id", "user_id", "request_ts", "item_id", "author_id", "position", "event_ts",
                "finish", "skip", "like", "comment")],
    *[(f"label_binary_{t}", "raw", _IN_TRUE, {"column": t, "value_set": [0, 1], "mostly": 0.99})
      for t in ("finish", "skip", "like", "comment")],
    *[(f"positive_{c}", "raw", "ExpectColumnValuesToBeBetween", {"column": c, "min_value": 1, "mostly": 0.99})
      for c in ("user_id", "item_id", "author_id")],
    ("event_not_before_request", "raw", _IN_TRUE,
     {"column": "event_not_before_request", "value_set": [True], "mostly": 0.99}),
    ("request_ts_in_day", "raw", "ExpectColumnValuesToBeBetween",
     {"column": "request_ts", "min_value": T0, "max_value": T0 + 86_400_000 - 1, "mostly": 0.99}),
    ("event_ts_within_lateness", "raw", "ExpectColumnValuesToBeBetween",
     {"column": "event_ts", "min_value": T0, "max_value": T0 + 4 * 86_400_000, "mostly": 0.99}),
]


def _described(checks) -> list[tuple]:
    return [(c.name, c.frame, type(c.expectation).__name__, dict(c.expectation.configuration.kwargs)) for c in checks]


@pytest.mark.slow
def test_the_default_suites_are_unchanged():
    cfg = ValidationConfig(max_len=MAX_LEN)
    assert _described(request_checks(cfg)) == DEFAULT_REQUEST_SUITE
    assert _described(request_checks(cfg, DEFAULT_SPEC)) == DEFAULT_REQUEST_SUITE
    assert _described(raw_checks(cfg, DAY, DEFAULT_SPEC)) == DEFAULT_RAW_SUITE


def test_the_ecommerce_suites_follow_its_tasks_inputs_and_features():
    cfg = ValidationConfig(max_len=MAX_LEN)
    names = [c.name for c in request_checks(cfg, ECOM)]
    assert names == [
        *[name for name, *_ in DEFAULT_REQUEST_SUITE[:9]],
        "history_actions_in_range",
        "nonnegative_hist_category", "finite_hist_price_bucket", "finite_hist_dwell_ratio",
        "nonnegative_tgt_category", "finite_tgt_price_bucket",
        "labels_binary_click", "label_rate_click", "labels_binary_cart", "label_rate_cart",
        "labels_binary_purchase", "label_rate_purchase",
    ]
    rate = next(c for c in request_checks(cfg, ECOM) if c.name == "label_rate_click").expectation.configuration.kwargs
    assert (rate["min_value"], rate["max_value"]) == (0.0, 1.0), "a task without a configured band: reported only"
    raw = [c.name for c in raw_checks(cfg, DAY, ECOM)]
    assert {"required_category_id", "required_price_cents", "required_click", "label_binary_purchase"} <= set(raw)
    assert not {"required_dwell_ms", "required_image_ms", "required_finish", "label_binary_finish"} & set(raw)


def test_a_label_band_of_a_task_the_spec_lacks_is_refused():
    cfg = ValidationConfig(label_rates={**ValidationConfig().label_rates, "clik": (0.0, 0.5)})
    with pytest.raises(LongseqError, match="label_rates names clik, not a task of dataset spec 'ecommerce'"):
        request_checks(cfg, ECOM)


# ---------------------------------------------------------------- validating (Spark)


@pytest.mark.spark
def test_a_clean_ecommerce_day_passes(spark, tmp_path):
    out = _write_day(tmp_path / "out", _records())
    outcome = validate(spark, str(out), DAY, "requests")
    assert outcome["passed"] and all(r["success"] for r in outcome["checks"]), summary_table(outcome)
    assert [r["check"] for r in outcome["checks"]] == [c.name for c in request_checks(ValidationConfig(), ECOM)]


def _corrupted() -> tuple[list[dict], dict[str, str]]:
    """One corruption a row, and the check each must fail (on exactly that row)."""
    rows = _records()
    rows[0]["tgt_click"] = [2, 0]
    rows[1]["hist_category"] = [5, -3, 4095]
    rows[2]["hist_dwell_ratio"] = [0.5, math.nan, 3.25]
    rows[3]["tgt_price_bucket"] = [math.inf, 250.0]
    rows[4]["hist_action"] = [0, 8, 7]  # bit 3: a fourth task ecommerce does not have
    rows[5]["tgt_category"] = [7, -1]
    rows[6]["hist_price_bucket"] = [999.0, 0.0]  # a feature list shorter than the others
    targets = len(rows) * 2
    return rows, {
        "labels_binary_click": f"1 of {targets} unexpected",
        "nonnegative_hist_category": f"1 of {len(rows)} unexpected",
        "finite_hist_dwell_ratio": f"1 of {len(rows)} unexpected",
        "finite_tgt_price_bucket": f"1 of {len(rows)} unexpected",
        "history_actions_in_range": f"1 of {len(rows)} unexpected",
        "nonnegative_tgt_category": f"1 of {len(rows)} unexpected",
        "history_lists_aligned": f"1 of {len(rows)} unexpected",
    }


@pytest.mark.spark
def test_the_ecommerce_suite_catches_a_bad_label_a_negative_category_and_a_nan(spark, tmp_path):
    rows, expected = _corrupted()
    out = _write_day(tmp_path / "out", rows)
    outcome = validate(spark, str(out), DAY, "requests")
    assert not outcome["passed"]
    assert _failed(outcome) == expected, summary_table(outcome)


def _raw_rows(n: int = 20) -> list[dict]:
    return [{
        "event_id": f"e{i}", "request_id": f"r{i // 2}", "user_id": 1 + (i // 2) % 3, "request_ts": T0 + i,
        "item_id": 100 + i, "author_id": 7, "position": i % 2, "event_ts": T0 + i + 5,
        "category_id": 40 + i, "price_cents": 1999, "dwell_ms": None, "image_ms": 800,
        "click": i % 2, "cart": 0, "purchase": 0,
    } for i in range(n)]


def _write_raw(rows: list[dict], path) -> None:
    """Raw rows under the logs' own names (the spec's `columns`: product_id, seller_id)."""
    table = pa.Table.from_pylist(rows, schema=to_arrow(contracts_of(ECOM).raw_log))
    pq.write_table(table.rename_columns([ECOM.raw_names.get(c, c) for c in table.column_names]), path)


@pytest.mark.spark
def test_the_raw_suite_of_a_spec_checks_its_required_inputs_and_labels(spark, tmp_path):
    """Raw logs are validated before DATA exists: the spec is passed in."""
    rows = _raw_rows()
    assert set(rows[0]) == set(contracts_of(ECOM).raw_log.names)
    part = tmp_path / "raw" / f"ds={DAY}"
    part.mkdir(parents=True)
    _write_raw(rows, part / "part-0.parquet")
    (part / SUCCESS_MARKER).touch()
    clean = validate(spark, str(tmp_path / "out"), DAY, "raw", raw=str(tmp_path / "raw"), spec=ECOM)
    assert clean["passed"], summary_table(clean)  # dwell_ms is optional: all null passes

    rows[3]["category_id"] = None  # 1 in 20 misses a required input: over the 1% raw_mostly allows
    rows[4]["purchase"] = 3
    _write_raw(rows, part / "part-0.parquet")
    dirty = validate(spark, str(tmp_path / "out"), DAY, "raw", raw=str(tmp_path / "raw"), spec=ECOM)
    assert set(_failed(dirty)) == {"required_category_id", "label_binary_purchase"}, summary_table(dirty)


def test_validation_refuses_a_spec_other_than_the_outputs(tmp_path):
    """Refused before Spark: from DATA/spec.yaml and the day's report alone."""
    out = _write_day(tmp_path / "out", _records())
    with pytest.raises(SpecError, match=f"holds data of dataset spec 'ecommerce' \\({ECOM.fingerprint}\\), not of "
                                        f"'default' \\({DEFAULT_SPEC.fingerprint}\\)"):
        validate(None, str(out), DAY, "requests", storage=LocalStorage(), spec=DEFAULT_SPEC)
    other = _write_day(tmp_path / "other", _records(), built_with=None)  # a report from before specs: default
    with pytest.raises(SpecError, match=f"refusing to validate ds={DAY}: it was built with dataset spec 'default'"):
        validate(None, str(other), DAY, "requests", storage=LocalStorage())


# ---------------------------------------------------------------- publishing and reading (no Spark)


def test_an_ecommerce_day_is_published_with_its_spec_and_read_only_with_it(tmp_path):
    out = _write_day(tmp_path / "out", _records())
    (manifest,) = publish(str(out), DAY, override_reason="hand-made test records", log=lambda m: None)
    assert manifest["spec"] == {"name": "ecommerce", "fingerprint": ECOM.fingerprint}
    assert manifest["rows"] == 8
    assert len(published_files(str(out), DAY)) == len(published_files(str(out), DAY, spec=ECOM)) == 1
    with pytest.raises(SpecError) as e:
        published_files(str(out), DAY, spec=DEFAULT_SPEC)
    message = str(e.value)
    assert "\n" not in message and f"ds={DAY}" in message
    assert f"'ecommerce' ({ECOM.fingerprint})" in message and f"'default' ({DEFAULT_SPEC.fingerprint})" in message


def test_publishing_refuses_a_day_built_with_another_spec_even_with_an_override(tmp_path):
    out = _write_day(tmp_path / "out", _records(), built_with=DEFAULT_SPEC)
    with pytest.raises(SpecError) as e:
        publish(str(out), DAY, override_reason="anything", log=lambda m: None)
    assert str(e.value) == (
        f"refusing to publish ds={DAY}: it was built with dataset spec 'default' ({DEFAULT_SPEC.fingerprint}), but "
        f"{out} holds spec 'ecommerce' ({ECOM.fingerprint}), which differs in tasks [finish, skip, like, comment] -> "
        f"[click, cart, purchase]; inputs.play_ms removed; inputs.duration_ms removed; inputs.category_id added; "
        f"inputs.price_cents added; inputs.dwell_ms added; and 5 more: rebuild the day with that spec")
    assert not (out / "published").exists() and not (out / "validation").exists()
    mine = _write_day(tmp_path / "mine", _records())
    with pytest.raises(SpecError, match="holds data of dataset spec 'ecommerce'"):
        publish(str(mine), DAY, override_reason="anything", log=lambda m: None, spec=DEFAULT_SPEC)


def test_a_manifest_without_a_spec_was_published_with_the_default_spec(tmp_path):
    out = _write_day(tmp_path / "out", _records())
    publish(str(out), DAY, override_reason="hand-made test records", log=lambda m: None)
    path = out / "published" / f"ds={DAY}" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["spec"]  # as published before specs
    path.write_text(json.dumps(manifest))
    with pytest.raises(PublishedDataError, match=f"ds={DAY} in .* was published with dataset spec 'default' "
                                                 f"\\({DEFAULT_SPEC.fingerprint}\\), but .* holds spec 'ecommerce'"):
        published_files(str(out), DAY, spec=ECOM)
    (out / "spec.yaml").unlink()  # an output from before specs: default throughout
    assert len(published_files(str(out), DAY)) == len(published_files(str(out), DAY, spec=DEFAULT_SPEC)) == 1
