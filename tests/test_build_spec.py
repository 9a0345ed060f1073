"""The build follows its dataset spec: rules, feature values, record columns, refusals.

A small random raw-log writer below makes logs for ANY spec (its raw-log contract says
which columns and types), with the traps the spec adds: duplicates whose copies differ in
an input a feature reads, nulls in optional inputs, zero and negative denominators, a null
in each required input, a label 2, a redelivery on a later day. The polars engine is compared record by record with the
independent reference (tests/reference_build.py), and the Spark engine with polars.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.dataset.spec_record import recorded_spec, spec_summary
from longseq.dataset.storage import LocalStorage
from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.batch.row_rules import categorical_inputs, feature_inputs, float_feature_inputs
from longseq.schemas.contracts import DEFAULT_SPEC, contracts_of, day_start_ms
from longseq.schemas.errors import LongseqError, SchemaMismatchError
from longseq.schemas.forms import to_arrow
from longseq.schemas.spec import SPECS_DIR, DatasetSpec, load_spec, spec_from_dict
from longseq.sources import SAMPLE_START
from tests.records import record_rows
from tests.reference_build import build_reference

ECOMMERCE = load_spec(SPECS_DIR / "ecommerce.yaml")
# Names that the engines' working columns once had (rank, k, logged, recent, targets), a
# feature named as its own input, a float and an int8 input, a feature on one side only.
TRICKY = spec_from_dict({
    "name": "tricky",
    "tasks": ["k", "rank", "targets"],
    "inputs": {"price": {"type": "float32"}, "units": {"type": "int8"}, "logged": {"type": "int32", "required": True}},
    "derived": {"per_unit": {"ratio": ["price", "units"]}},
    "features": {
        "price": {"kind": "numeric"},
        "logged": {"kind": "categorical", "sides": ["history"]},
        "per_unit": {"kind": "numeric", "transform": "log", "sides": ["target"]},
        "recent": {"kind": "numeric", "source": "units", "sides": ["history"]},
    },
}, "tricky")
SPECS = [pytest.param(ECOMMERCE, id="ecommerce"), pytest.param(TRICKY, id="tricky"),
         pytest.param(DEFAULT_SPEC, id="default")]
DAYS = [SAMPLE_START + dt.timedelta(days=d) for d in range(3)]
MAX_LEN = 6  # below the busier users' histories, so truncation happens


# ---------------------------------------------------------------- a raw log for any spec


def _input_value(rng: np.random.Generator, dtype: str) -> int | float:
    """A small value of the input's type, sometimes zero or negative (a ratio's denominator)."""
    if dtype.startswith("float"):
        return round(float(rng.normal(20, 30)), 2)
    return int(rng.integers(-2, 20 if dtype == "int8" else 1000))


def random_rows(spec: DatasetSpec, day: dt.date, rng: np.random.Generator, earlier: list[dict],
                users: int = 4, requests: int = 12) -> list[dict]:
    """One ds partition's rows for `spec`, valid ones and the traps, in shuffled order;
    `earlier`: the rows of the day before (one is delivered again today)."""
    rows = []
    start = day_start_ms(day)
    for r in range(requests):
        user = int(rng.integers(1, users + 1))
        request_ts = start + int(rng.integers(0, 24 * 3600)) * 1000  # late ones log after midnight
        for position in range(int(rng.integers(1, 5))):
            row = {
                "event_id": f"{day:%m%d}-{r}-{position}", "request_id": f"{day:%m%d}-r{r}", "user_id": user,
                "request_ts": request_ts, "item_id": int(rng.integers(1, 30)), "author_id": int(rng.integers(1, 8)),
                "position": position, "event_ts": request_ts + int(rng.integers(0, 2 * 3600)) * 1000,
                **{t: int(rng.integers(0, 2)) for t in spec.tasks},
            }
            for i in spec.inputs:
                row[i.name] = None if not i.required and rng.random() < 0.25 else _input_value(rng, i.type)
            rows.append(row)
    rows += _traps(spec, rows, earlier)
    return [rows[i] for i in rng.permutation(len(rows))]


def _traps(spec: DatasetSpec, rows: list[dict], earlier: list[dict]) -> list[dict]:
    """Duplicates (one identical; one differing in the optional inputs a feature reads, so
    that only the dedup order and its null placement decide which copy is kept), a
    redelivery of an earlier day's event, a null in each required input, a label 2, a zero
    and a negative denominator of each ratio."""
    differing = dict(rows[1])
    read = feature_inputs(spec) or tuple(i.name for i in spec.inputs)
    optional = [name for name in read if not spec.input(name).required]
    for name in optional or read:  # optional ones only, if any: their null placement decides
        value = rows[1][name]
        differing[name] = value + 1 if name not in optional else None if value is not None else 1
    traps = [dict(rows[0]), differing]
    if earlier:  # a valid event_id of the day before, under one of today's requests
        today, again = rows[6], next(r for r in earlier if r["event_id"][0].isdigit())
        traps.append(dict(again, **{k: today[k] for k in ("request_id", "user_id", "request_ts")},
                          event_ts=today["event_ts"] + 1000, position=99))
    for name in [i.name for i in spec.inputs if i.required] or ["item_id"]:
        traps.append(dict(rows[3], event_id=f"null-{name}", **{name: None}))
    traps.append(dict(rows[4], event_id="label-2", **{spec.tasks[-1]: 2}))
    for name in categorical_inputs(spec):  # a feature's bad value: the row's quarantine, not the day's
        traps.append(dict(rows[4], event_id=f"negative-{name}", **{name: -3}))
    for name in float_feature_inputs(spec):  # (NaN too, but NaN != NaN would defeat the row comparisons)
        traps += [dict(rows[4], event_id=f"{sign}inf-{name}", **{name: float(f"{sign}inf")}) for sign in "+-"]
    for d in spec.derived:
        for denominator in (0, -1):
            traps.append(dict(rows[5], event_id=f"{d.name}-over-{denominator}", **{d.ratio[1]: denominator}))
    return traps


def write_random_raw(raw: Path, spec: DatasetSpec, days: list[dt.date] = DAYS, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    schema = to_arrow(contracts_of(spec).raw_log)
    rows: list[dict] = []
    for day in days:
        rows = random_rows(spec, day, rng, earlier=rows)
        part = raw / f"ds={day.isoformat()}"
        part.mkdir(parents=True, exist_ok=True)
        half = len(rows) // 2  # two files: the engines read a partition's files in any order
        for i, chunk in enumerate((rows[:half], rows[half:])):
            table = pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in chunk], schema=schema)
            table = table.rename_columns([spec.raw_names.get(c, c) for c in schema.names])  # the logs' own names
            pq.write_table(table, part / f"part-{i:05d}.parquet")
        (part / "_SUCCESS").touch()


# ---------------------------------------------------------------- building and reading


def _build(engine, raw: Path, out: Path, spec: DatasetSpec, start: dt.date = DAYS[0],
           end: dt.date | None = DAYS[-1]) -> list[dict]:
    config = BuildConfig(raw=str(raw), out=str(out), start=start, end=end, max_len=MAX_LEN, spec=spec)
    return build(engine, config, log=lambda m: None)


def _rows(directory: Path) -> list[dict]:
    return [row for f in sorted(directory.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def _records(out: Path, day: dt.date) -> dict[str, dict]:
    return {r["request_id"]: r for r in record_rows(out / "requests" / f"ds={day}")}


def _quarantine(out: Path, day: dt.date) -> Counter:
    return Counter(tuple(sorted(r.items())) for r in _rows(out / "quarantine" / f"ds={day}"))


def _state(out: Path, day: dt.date) -> list[tuple]:
    return sorted(tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(r.items()))
                  for r in _rows(out / "state" / f"ds={day}"))


def _report(out: Path, day: dt.date) -> dict:
    return json.loads((out / "reports" / f"ds={day}" / "build.json").read_text())


def _polars():
    from longseq.etl.batch.polars_engine import PolarsEngine

    return PolarsEngine()


COUNTS = ("rows_read", "duplicates", "duplicates_across_days", "quarantined", "requests", "targets",
          "requests_without_valid_impressions", "history_length", "users_in_state")


@pytest.fixture(scope="module")
def ecommerce_builds(tmp_path_factory):
    """The ecommerce raw log and one polars build of it, shared by the comparisons below."""
    root = tmp_path_factory.mktemp("ecommerce")
    write_random_raw(root / "raw", ECOMMERCE)
    _build(_polars(), root / "raw", root / "polars", ECOMMERCE)
    return root


# ================================================================ the engines against the reference


@pytest.mark.parametrize("spec", SPECS)
def test_polars_matches_the_reference(spec, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_random_raw(raw, spec)
    reports = _build(_polars(), raw, out, spec)
    ref = build_reference(raw, DAYS, MAX_LEN, spec=spec)
    # the data must exercise the traps, or matching it proves little
    assert sum(d.duplicates for d in ref.days.values()) > 0
    assert sum(d.duplicates_across_days for d in ref.days.values()) > 0
    assert sum(d.quarantined["label_out_of_range"] for d in ref.days.values()) > 0
    for name in (i.name for i in spec.inputs if i.required):
        assert sum(d.quarantined[f"missing_{name}"] for d in ref.days.values()) > 0
    for reason in [f"negative_{n}" for n in categorical_inputs(spec)] + [f"nonfinite_{n}" for n in float_feature_inputs(spec)]:
        assert sum(d.quarantined[reason] for d in ref.days.values()) > 0
    lengths = [len(r["hist_item_id"]) for r in ref.records.values()]
    assert lengths.count(MAX_LEN) > 0 and lengths.count(0) > 0
    for day, report in zip(DAYS, reports):
        got, want = _records(out, day), ref.records_of(day)
        assert sorted(got) == sorted(want), f"ds={day}: request ids differ"
        wrong = [rid for rid in want if got[rid] != want[rid]]
        assert not wrong, f"ds={day}: {len(wrong)} records differ, e.g. {got[wrong[0]]} != {want[wrong[0]]}"
        exp = ref.days[day]
        assert report["quarantined"] == exp.quarantined
        assert (report["rows_read"], report["duplicates"], report["targets"]) == (exp.rows, exp.duplicates, exp.targets)
        logged = [{spec.raw_names.get(k, k): v for k, v in r.items()} for r in exp.quarantine_rows]  # the logs' names
        assert _quarantine(out, day) == Counter(tuple(sorted(r.items())) for r in logged)
        assert report["spec"] == spec_summary(spec)
    assert recorded_spec(LocalStorage(), str(out)) == spec


def test_ecommerce_features_reach_the_records(ecommerce_builds):
    """The ecommerce records carry each feature on its sides, with the values the traps make."""
    records = [r for day in DAYS for r in _records(ecommerce_builds / "polars", day).values()]
    columns = set(records[0])
    assert {"hist_category", "hist_price_bucket", "hist_dwell_ratio", "tgt_category", "tgt_price_bucket"} <= columns
    assert "tgt_dwell_ratio" not in columns and "tgt_click" in columns and "hist_click" not in columns
    ratios = [v for r in records for v in r["hist_dwell_ratio"]]
    assert 0.0 in ratios and any(v > 0 for v in ratios)  # null or non-positive image_ms: 0


def test_feature_values_by_hand():
    """The polars expressions on rows whose values are worked out here."""
    import polars as pl

    from longseq.etl.batch.feature_values import feature_columns, polars_value_ops

    frame = pl.DataFrame(
        {"category_id": [7, 8, 9, 10], "price_cents": [1999, 0, 5, 3], "dwell_ms": [1, None, 5, 6],
         "image_ms": [3, 4, 0, -2]},
        schema={"category_id": pl.Int64, "price_cents": pl.Int64, "dwell_ms": pl.Int32, "image_ms": pl.Int32},
    )
    values = frame.select(**feature_columns(ECOMMERCE, polars_value_ops()))
    assert values.schema == {"category": pl.Int64, "price_bucket": pl.Float32, "dwell_ratio": pl.Float32}
    assert values["category"].to_list() == [7, 8, 9, 10]
    assert values["price_bucket"].to_list() == [1999.0, 0.0, 5.0, 3.0]
    assert values["dwell_ratio"].to_list() == [float(np.float32(1 / 3)), 0.0, 0.0, 0.0]


def test_spark_matches_polars(ecommerce_builds, spark):
    from longseq.etl.batch.spark_engine import SparkEngine

    polars_out, spark_out = ecommerce_builds / "polars", ecommerce_builds / "spark"
    _build(SparkEngine(spark), ecommerce_builds / "raw", spark_out, ECOMMERCE)
    for day in DAYS:
        s, p = _records(spark_out, day), _records(polars_out, day)
        assert sorted(s) == sorted(p)
        differ = [rid for rid in s if s[rid] != p[rid]]
        assert not differ, f"ds={day}: {len(differ)} records differ, e.g. {s[differ[0]]} != {p[differ[0]]}"
        assert {k: _report(spark_out, day)[k] for k in COUNTS} == {k: _report(polars_out, day)[k] for k in COUNTS}
        assert _quarantine(spark_out, day) == _quarantine(polars_out, day)
        assert _state(spark_out, day) == _state(polars_out, day)


# ================================================================ refusals


def test_a_build_into_an_output_of_another_spec_is_refused(tmp_path):
    default_raw, ecommerce_raw, out = tmp_path / "default", tmp_path / "ecommerce", tmp_path / "out"
    write_random_raw(default_raw, DEFAULT_SPEC, DAYS[:1])
    write_random_raw(ecommerce_raw, ECOMMERCE, DAYS[:2])
    _build(_polars(), default_raw, out, DEFAULT_SPEC, DAYS[0], DAYS[0])
    with pytest.raises(LongseqError) as refused:
        _build(_polars(), ecommerce_raw, out, ECOMMERCE, DAYS[1], DAYS[1])
    message = str(refused.value)
    assert "\n" not in message and str(out) in message and "'default'" in message and "'ecommerce'" in message
    assert not (out / "reports" / f"ds={DAYS[1]}").exists()
    assert recorded_spec(LocalStorage(), str(out)) == DEFAULT_SPEC


def test_a_data_file_missing_a_spec_input_is_refused_naming_file_and_column(tmp_path):
    from longseq.dataset.raw import read_raw_partition

    raw = tmp_path / "raw"
    write_random_raw(raw, ECOMMERCE, DAYS[:1])
    bad = raw / f"ds={DAYS[0]}" / "part-00001.parquet"
    pq.write_table(pq.read_table(bad).drop(["dwell_ms"]), bad)
    with pytest.raises(SchemaMismatchError) as refused:
        _build(_polars(), raw, tmp_path / "out", ECOMMERCE, DAYS[0], DAYS[0])
    message = str(refused.value)
    assert "\n" not in message and str(bad) in message and "'dwell_ms' is missing" in message
    assert not (tmp_path / "out" / "spec.yaml").exists()  # nothing recorded for a refused build
    with pytest.raises(SchemaMismatchError, match="dwell_ms"):
        read_raw_partition(raw, DAYS[0], spec=ECOMMERCE)
