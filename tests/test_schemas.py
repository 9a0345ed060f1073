"""The backend forms derived from schemas/ agree with each other and survive real round trips."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.schemas import CONTRACTS, REQUEST_RECORD, RAW_LOG, USER_STATE, SchemaMismatchError
from longseq.schemas.check import check_arrow_schema, check_polars_schema, check_spark_schema
from longseq.schemas.contracts import HISTORY_EVENT, TASKS
from longseq.schemas.forms import (
    arrow_type, dtype_from_arrow, dtype_from_spark, to_arrow, to_polars, to_spark, to_unischema,
)
from longseq.schemas.types import ListOf

ALL = sorted(CONTRACTS)


def _value(dtype, i: int):
    """A deterministic sample value of a contract type (lists of varying length, incl. empty)."""
    if isinstance(dtype, ListOf):
        return [_value(dtype.element, i * 10 + j) for j in range(i % 4)]
    if dtype.name == "string":
        return f"s{i}"
    if dtype.name == "int8":
        return i % 2
    if dtype.name.startswith("float"):
        return i / 4
    return 10**9 + i if dtype.name == "int64" else i


def _rows(schema, n=5):
    return [{f.name: _value(f.dtype, i) for f in schema} for i in range(n)]


@pytest.mark.parametrize("name", ALL)
def test_every_field_type_round_trips_through_arrow(name):
    for f in CONTRACTS[name]:
        assert dtype_from_arrow(arrow_type(f.dtype)) == f.dtype, f.name


@pytest.mark.parametrize("name", ALL)
def test_spark_form_equals_arrow_form_by_pyspark_own_conversion(name):
    from pyspark.sql.pandas.types import to_arrow_schema

    by_spark = to_arrow_schema(to_spark(CONTRACTS[name]))
    ours = to_arrow(CONTRACTS[name])
    assert by_spark.names == ours.names
    for a, b in zip(by_spark, ours):
        assert (a.name, a.type, a.nullable) == (b.name, b.type, b.nullable)
        if pa.types.is_list(a.type):  # list element type and nullability too
            assert a.type.value_field.nullable == b.type.value_field.nullable
            assert a.type.value_type == b.type.value_type


@pytest.mark.parametrize("name", ALL)
def test_polars_form_equals_what_polars_makes_of_the_arrow_form(name):
    from_arrow = pl.from_arrow(to_arrow(CONTRACTS[name]).empty_table()).schema
    assert from_arrow == to_polars(CONTRACTS[name])


@pytest.mark.parametrize("name", ALL)
def test_unischema_form_matches_fields(name):
    schema = CONTRACTS[name]
    uni = to_unischema(schema)
    assert list(uni.fields) == schema.names
    for f in schema:
        uf = uni.fields[f.name]
        assert uf.shape == ((None,) if isinstance(f.dtype, ListOf) else ())
        assert uf.nullable == f.nullable


def test_request_record_and_state_share_the_history_columns():
    hist = [f"hist_{f.name}" for f in HISTORY_EVENT]
    assert [n for n in REQUEST_RECORD.names if n.startswith("hist_")] == hist
    assert [n for n in USER_STATE.names if n.startswith("hist_")] == hist
    assert [n for n in REQUEST_RECORD.names if n.startswith("tgt_")] == (
        ["tgt_item_id", "tgt_author_id"] + [f"tgt_{t}" for t in TASKS]
    )
    assert set(RAW_LOG.required_names) == set(RAW_LOG.names) - {"play_ms", "duration_ms"}


@pytest.mark.spark
@pytest.mark.parametrize("name", ALL)
def test_spark_parquet_round_trip_keeps_the_contract(spark, tmp_path, name):
    """Spark writes with the derived StructType; pyarrow, polars, Petastorm and Spark read it back."""
    from petastorm.unischema import Unischema

    schema = CONTRACTS[name]
    rows = _rows(schema)
    path = str(tmp_path / name)
    spark.createDataFrame(rows, to_spark(schema)).coalesce(1).write.parquet(path)

    arrow = pq.read_table(path)
    assert arrow.schema.names == schema.names
    for f, af in zip(schema, arrow.schema):
        assert dtype_from_arrow(af.type) == f.dtype, f.name  # incl. list element nullability
        assert af.nullable == f.nullable, f.name
    check_arrow_schema(arrow.schema, schema)
    assert sorted(arrow.to_pylist(), key=str) == sorted(rows, key=str)  # values survive too

    frame = pl.read_parquet(f"{path}/*.parquet")
    assert frame.schema == to_polars(schema)
    check_polars_schema(frame.schema, schema)

    back = spark.read.parquet(path)
    assert [dtype_from_spark(f.dataType) for f in back.schema] == [
        ListOf(f.dtype.element, element_nullable=dtype_from_spark(b.dataType).element_nullable)
        if isinstance(f.dtype, ListOf) else f.dtype
        for f, b in zip(schema, back.schema)
    ]
    check_spark_schema(back.schema, schema)

    # Petastorm's own inference from the written files agrees with our Unischema
    inferred = Unischema.from_arrow_schema(pq.ParquetDataset(path, use_legacy_dataset=True))
    ours = to_unischema(schema)
    for f in schema:
        a, b = inferred.fields[f.name], ours.fields[f.name]
        assert (np.dtype(a.numpy_dtype), a.shape, a.nullable) == (np.dtype(b.numpy_dtype), b.shape, b.nullable)


def _bad_table():
    good = to_arrow(RAW_LOG).empty_table()
    return good.set_column(good.schema.get_field_index("user_id"), "user_id", pa.array([], pa.string())).drop(
        ["play_ms", "position"]
    )


def test_arrow_mismatch_names_column_expected_and_actual_type():
    with pytest.raises(SchemaMismatchError) as e:
        check_arrow_schema(_bad_table().schema, RAW_LOG, source="raw/ds=2026-01-01")
    msg = str(e.value)
    assert "raw/ds=2026-01-01" in msg
    assert "column 'user_id': expected int64, got string" in msg
    assert "column 'position' is missing (expected int32)" in msg
    assert "play_ms" in msg


def test_list_element_type_mismatch_is_reported():
    table = to_arrow(REQUEST_RECORD).empty_table()
    i = table.schema.get_field_index("hist_action")
    table = table.set_column(i, "hist_action", pa.array([], pa.list_(pa.float32())))
    with pytest.raises(SchemaMismatchError, match=r"'hist_action': expected list<int32>, got list<float32>"):
        check_arrow_schema(table.schema, REQUEST_RECORD)


def test_extra_columns_are_allowed():
    table = to_arrow(REQUEST_RECORD).empty_table().append_column("hist_len", pa.array([], pa.int32()))
    check_arrow_schema(table.schema, REQUEST_RECORD)


def test_polars_mismatch(tmp_path):
    pq.write_table(_bad_table(), tmp_path / "bad.parquet")
    with pytest.raises(SchemaMismatchError, match="'user_id': expected int64, got string"):
        check_polars_schema(pl.read_parquet(tmp_path / "bad.parquet").schema, RAW_LOG)


@pytest.mark.spark
def test_spark_mismatch(spark, tmp_path):
    pq.write_table(_bad_table(), tmp_path / "bad.parquet")
    with pytest.raises(SchemaMismatchError, match="'user_id': expected int64, got string"):
        check_spark_schema(spark.read.parquet(str(tmp_path / "bad.parquet")).schema, RAW_LOG)


def test_contract_docs_are_generated_from_the_schemas():
    from longseq.schemas.markdown import DOC, refresh

    text = DOC.read_text()
    assert refresh(text) == text, "docs/CONTRACTS.md is stale: run `python -m longseq.schemas.markdown --write`"


def test_spec_docs_are_generated_from_the_example_specs():
    from longseq.schemas.markdown import SPEC_DOC, refresh, spec_block

    text = SPEC_DOC.read_text()
    assert "hist_category" in spec_block() and "tgt_genre" in spec_block()
    assert refresh(text, spec_block()) == text, "docs/SPEC.md is stale: run `python -m longseq.schemas.markdown --write`"
