"""The value of each of a spec's features on one raw row, defined once for both engines.

A feature reads its source s (f.source, or its own name):
- an input: a categorical feature stores it as int64, a numeric one as float32; null -> 0;
- a derived ratio (a, b): float64(a) / float64(b), then float32; 0.0 when a or b is null
  or b <= 0 (a ratio of nothing, or of a zero or negative length, says nothing).

Records and the user state store these plain values; the model hashes, buckets or
normalises them (schemas/spec.py), so one build serves other transforms. As in
etl/batch/row_rules.py, Spark Columns and polars Exprs share the operators (| <= /), and
`ValueOps` supplies the few calls that differ. tests/reference_build.py re-implements the
values by hand, as the independent check of both engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from longseq.schemas.spec import DatasetSpec, Feature
from longseq.schemas.types import Scalar


@dataclass(frozen=True)
class ValueOps:
    """Engine adapter: column access, null test, a cast and a literal of a contract scalar
    type (int64, float32, ...), and a two-way CASE."""

    col: Callable[[str], Any]
    is_null: Callable[[Any], Any]
    cast: Callable[[Any, str], Any]
    lit: Callable[[Any, str], Any]
    if_else: Callable[[Any, Any, Any], Any]  # (condition, then, otherwise)


def feature_value(f: Feature, spec: DatasetSpec, ops: ValueOps) -> Any:
    """Expression: feature f's value on a raw row (the module docstring has the semantics)."""
    source = f.source or f.name
    zero = ops.lit(0, f.stored_type)
    ratio = next((d.ratio for d in spec.derived if d.name == source), None)
    if ratio is None:
        value = ops.col(source)
        return ops.if_else(ops.is_null(value), zero, ops.cast(value, f.stored_type))
    a, b = (ops.col(c) for c in ratio)
    undefined = ops.is_null(a) | ops.is_null(b) | (b <= 0)
    quotient = ops.cast(a, "float64") / ops.cast(b, "float64")
    return ops.if_else(undefined, zero, ops.cast(quotient, f.stored_type))


def feature_columns(spec: DatasetSpec, ops: ValueOps) -> dict[str, Any]:
    """name -> expression of every feature of the spec (on history events, targets or both).

    Meant for one simultaneous select (polars with_columns, Spark withColumns): a feature
    may take the name of the input it reads, and each must read the raw input, not another
    feature's value."""
    return {f.name: feature_value(f, spec, ops) for f in spec.features}


def spark_value_ops() -> ValueOps:
    from pyspark.sql import functions as F

    from longseq.schemas.forms import spark_type

    return ValueOps(
        col=F.col,
        is_null=lambda e: e.isNull(),
        cast=lambda e, t: e.cast(spark_type(Scalar(t))),
        lit=lambda v, t: F.lit(v).cast(spark_type(Scalar(t))),
        if_else=lambda c, then, otherwise: F.when(c, then).otherwise(otherwise),
    )


def polars_value_ops() -> ValueOps:
    import polars as pl

    from longseq.schemas.forms import polars_type

    return ValueOps(
        col=pl.col,
        is_null=lambda e: e.is_null(),
        cast=lambda e, t: e.cast(polars_type(Scalar(t))),
        lit=lambda v, t: pl.lit(v, dtype=polars_type(Scalar(t))),
        if_else=lambda c, then, otherwise: pl.when(c).then(then).otherwise(otherwise),
    )
