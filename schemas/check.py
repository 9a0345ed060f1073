"""Checking data that was read against a contract, with errors a person can act on."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import pyarrow as pa

from longseq.schemas.errors import SchemaMismatchError
from longseq.schemas.forms import dtype_from_arrow, dtype_from_polars, dtype_from_spark
from longseq.schemas.types import DType, ListOf, Schema


def _shape(dtype: DType) -> DType:
    # Readers differ on nullability (Spark reads every Parquet column as nullable), so a
    # type check compares types only; nulls in required columns are a data check.
    return ListOf(dtype.element) if isinstance(dtype, ListOf) else dtype


def _mismatches(
    actual: Iterable[tuple[str, Any]],
    expected: Schema,
    convert: Callable[[Any], DType | None],
    allow_extra: bool = True,
    notes: Mapping[str, str] | None = None,
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
            note = (notes or {}).get(f.name)
            problems.append(f"column {f.name!r}: expected {_shape(f.dtype)}, got {shown}" + (f" ({note})" if note else ""))
    for name in found if not allow_extra else ():
        if name not in expected.names:
            extra = convert(found[name])
            problems.append(f"column {name!r} ({_shape(extra) if extra else found[name]}) is not in the contract")
    return problems


def _raise(problems: list[str], expected: Schema, source: str) -> None:
    if problems:
        raise SchemaMismatchError(f"{source} does not match the {expected.name} contract: " + "; ".join(problems))


def check_arrow_schema(actual: pa.Schema, expected: Schema, source: str = "data", allow_extra: bool = True,
                       notes: Mapping[str, str] | None = None) -> None:
    """Raise SchemaMismatchError naming each missing or mistyped column (with its `notes`,
    where given), and each extra one unless `allow_extra` (outputs may carry more columns;
    inputs are checked strictly)."""
    found = ((f.name, f.type) for f in actual)
    _raise(_mismatches(found, expected, dtype_from_arrow, allow_extra, notes), expected, source)


def check_spark_schema(actual: Any, expected: Schema, source: str = "data", allow_extra: bool = True) -> None:
    found = ((f.name, f.dataType) for f in actual.fields)
    _raise(_mismatches(found, expected, dtype_from_spark, allow_extra), expected, source)


def check_polars_schema(actual: Any, expected: Schema, source: str = "data", allow_extra: bool = True) -> None:
    _raise(_mismatches(actual.items(), expected, dtype_from_polars, allow_extra), expected, source)
