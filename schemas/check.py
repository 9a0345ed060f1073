"""Checking data that was read against a contract, with errors a person can act on."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import pyarrow as pa

from schemas.errors import SchemaMismatchError
from schemas.forms import dtype_from_arrow, dtype_from_polars, dtype_from_spark
from schemas.types import DType, ListOf, Schema


def _shape(dtype: DType) -> DType:
    # Readers differ on nullability (Spark reads every Parquet column as nullable), so a
    # type check compares types only; nulls in required columns are a data check.
    return ListOf(dtype.element) if isinstance(dtype, ListOf) else dtype


def _mismatches(
    actual: Iterable[tuple[str, Any]],
    expected: Schema,
    convert: Callable[[Any], DType | None],
) -> list[str]:
    found = dict(actual)
    problems = []
    for f in expected:
        if f.name not in found:
            problems.append(f"column {f.name!r} is missing (expected {f.dtype})")
            continue
        got = convert(found[f.name])
        if got is None or _shape(got) != _shape(f.dtype):
            shown = _shape(got) if got is not None else found[f.name]
            problems.append(f"column {f.name!r}: expected {_shape(f.dtype)}, got {shown}")
    return problems


def _raise(problems: list[str], expected: Schema, source: str) -> None:
    if problems:
        raise SchemaMismatchError(f"{source} does not match the {expected.name} contract: " + "; ".join(problems))


def check_arrow_schema(actual: pa.Schema, expected: Schema, source: str = "data") -> None:
    """Raise SchemaMismatchError naming each missing or mistyped column. Extra columns are allowed."""
    _raise(_mismatches(((f.name, f.type) for f in actual), expected, dtype_from_arrow), expected, source)


def check_spark_schema(actual: Any, expected: Schema, source: str = "data") -> None:
    _raise(_mismatches(((f.name, f.dataType) for f in actual.fields), expected, dtype_from_spark), expected, source)


def check_polars_schema(actual: Any, expected: Schema, source: str = "data") -> None:
    _raise(_mismatches(actual.items(), expected, dtype_from_polars), expected, source)
