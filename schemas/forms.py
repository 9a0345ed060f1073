"""Backend forms of a contract: Arrow, Spark, polars, Petastorm.

Each is derived from `schemas.types.Schema`; the per-scalar table below is the only place
a backend type is named. Spark and Petastorm are imported lazily: they are slow to import
and not every caller needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from longseq.schemas.types import DType, Field, ListOf, Scalar, Schema

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl
    from petastorm.unischema import Unischema
    from pyspark.sql.types import StructType

# scalar name -> (arrow type, numpy dtype, Spark type name, polars type name)
_SCALARS: dict[str, tuple[pa.DataType, Any, str, str]] = {
    "string": (pa.string(), np.str_, "StringType", "String"),
    "int8": (pa.int8(), np.int8, "ByteType", "Int8"),
    "int32": (pa.int32(), np.int32, "IntegerType", "Int32"),
    "int64": (pa.int64(), np.int64, "LongType", "Int64"),
    "float32": (pa.float32(), np.float32, "FloatType", "Float32"),
    "float64": (pa.float64(), np.float64, "DoubleType", "Float64"),
}


# ---------------------------------------------------------------- Arrow


def arrow_type(dtype: DType) -> pa.DataType:
    if isinstance(dtype, ListOf):
        # "element" is the item name Spark and parquet-mr write for lists.
        return pa.list_(pa.field("element", arrow_type(dtype.element), nullable=dtype.element_nullable))
    return _SCALARS[dtype.name][0]


def to_arrow(schema: Schema) -> pa.Schema:
    return pa.schema(
        [pa.field(f.name, arrow_type(f.dtype), nullable=f.nullable) for f in schema],
        metadata={"longseq.contract": schema.name},
    )


def dtype_from_arrow(t: pa.DataType) -> DType | None:
    """The contract type of an Arrow type, or None if the contract has no such type."""
    if pa.types.is_large_string(t):
        t = pa.string()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        element = dtype_from_arrow(t.value_type)
        if not isinstance(element, Scalar):
            return None
        return ListOf(element, element_nullable=t.value_field.nullable)
    for name, (at, *_rest) in _SCALARS.items():
        if t == at:
            return Scalar(name)
    return None


# ---------------------------------------------------------------- Spark


def _spark_scalar(name: str) -> Any:
    from pyspark.sql import types as T

    return getattr(T, _SCALARS[name][2])()


def spark_type(dtype: DType) -> Any:
    from pyspark.sql import types as T

    if isinstance(dtype, ListOf):
        return T.ArrayType(_spark_scalar(dtype.element.name), containsNull=dtype.element_nullable)
    return _spark_scalar(dtype.name)


def to_spark(schema: Schema) -> "StructType":
    from pyspark.sql import types as T

    return T.StructType([T.StructField(f.name, spark_type(f.dtype), nullable=f.nullable) for f in schema])


def dtype_from_spark(t: Any) -> DType | None:
    from pyspark.sql import types as T

    if isinstance(t, T.ArrayType):
        element = dtype_from_spark(t.elementType)
        if not isinstance(element, Scalar):
            return None
        return ListOf(element, element_nullable=t.containsNull)
    for name, (*_a, spark_name, _p) in _SCALARS.items():
        if type(t).__name__ == spark_name:
            return Scalar(name)
    return None


# ---------------------------------------------------------------- polars


def polars_type(dtype: DType) -> Any:
    import polars as pl

    if isinstance(dtype, ListOf):
        return pl.List(polars_type(dtype.element))
    return getattr(pl, _SCALARS[dtype.name][3])


def to_polars(schema: Schema) -> "pl.Schema":
    """polars has no per-column nullability: every column may hold nulls."""
    import polars as pl

    return pl.Schema({f.name: polars_type(f.dtype) for f in schema})


def dtype_from_polars(t: Any) -> DType | None:
    import polars as pl

    if isinstance(t, pl.List):
        element = dtype_from_polars(t.inner)
        # polars lists may always hold nulls; the contract's element nullability is checked on data
        return ListOf(element) if isinstance(element, Scalar) else None
    for name, (*_a, polars_name) in _SCALARS.items():
        if t == getattr(pl, polars_name):
            return Scalar(name)
    return None


# ---------------------------------------------------------------- Petastorm


def to_unischema(schema: Schema) -> "Unischema":
    """A Petastorm Unischema for the plain Parquet layout (no codecs).

    Lists get shape (None,), as Petastorm infers for Parquet list columns; scalars ().
    """
    from petastorm.unischema import Unischema, UnischemaField

    def field(f: Field) -> UnischemaField:
        if isinstance(f.dtype, ListOf):
            return UnischemaField(f.name, _SCALARS[f.dtype.element.name][1], (None,), None, f.nullable)
        return UnischemaField(f.name, _SCALARS[f.dtype.name][1], (), None, f.nullable)

    return Unischema(schema.name, [field(f) for f in schema])
