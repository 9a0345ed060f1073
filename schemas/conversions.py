"""The raw logs' column types that are read as the raw contract's without loss.

Real logs often hold a narrower type than the contract's (an int32 where it says int64, a
bool label where it says int8) or a timestamp where it counts milliseconds. Each engine
reads such a column with the file's own type and converts it right after the read, so
everything downstream sees the contract's types (the table: docs/SPEC.md, "Names: the
spec's and the logs'"): a timestamp[s|ms|us] of any zone for request_ts and event_ts, as
ms since epoch; the narrower types of _WIDER, by a cast.

A microsecond timestamp is floored to its millisecond (the contract's resolution; refusing
them would refuse most real logs, and flooring only ties times within one millisecond), as
both engines floor: Spark's unix_millis and `epoch_ms` below. Nanoseconds are refused: Spark
3.5 cannot read them. Everything else (a string for a number, int64 where int32 fits,
a float for an integer) is refused by the raw check, naming the file and the column.

These are the only file types beyond schemas/types.py's vocabulary that longseq reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from longseq.schemas.forms import arrow_type, dtype_from_arrow, spark_type
from longseq.schemas.types import DType, ListOf

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column

# the contract's int64 milliseconds since epoch that a timestamp column may stand for
TIME_COLUMNS = ("request_ts", "event_ts")
TIME_UNITS = ("s", "ms", "us")
_WIDER: dict[str, tuple[pa.DataType, ...]] = {
    "int64": (pa.int8(), pa.int16(), pa.int32()),
    "int32": (pa.int8(), pa.int16()),
    "int8": (pa.bool_(),),
    "float64": (pa.float32(),),
}
_SHOWN = {pa.bool_(): "bool as 1 and 0", pa.float32(): "float32"}  # Arrow says "float"
SAME, CAST, EPOCH_MS = "same", "cast", "epoch_ms"


def read_as(column: str, dtype: DType, file_type: pa.DataType) -> str | None:
    """How a raw file's `column` (the contract's name) of `file_type` becomes the contract's
    `dtype`: SAME, CAST (a widening cast) or EPOCH_MS (a timestamp's milliseconds); None
    when it cannot without loss."""
    got = dtype_from_arrow(file_type)
    if got == dtype or isinstance(got, ListOf) and isinstance(dtype, ListOf) and got.element == dtype.element:
        return SAME  # a list's element nullability is the data check's business, as in schemas/check.py
    if file_type in _WIDER.get(str(dtype), ()):
        return CAST
    if column in TIME_COLUMNS and pa.types.is_timestamp(file_type) and file_type.unit in TIME_UNITS:
        return EPOCH_MS
    return None


def also_read(column: str, dtype: DType) -> str:
    """The other file types read as `dtype`, for an error message; "" if there are none."""
    others = [_SHOWN.get(t, str(t)) for t in _WIDER.get(str(dtype), ())]
    if column in TIME_COLUMNS:
        others.append(f"timestamp[{'|'.join(TIME_UNITS)}] as ms since epoch")
    return f"also read as {dtype}: {', '.join(others)}" if others else ""


def arrow_read(values: pa.ChunkedArray, how: str, dtype: DType) -> pa.ChunkedArray:
    """A column read with its file's type, as the contract's `dtype` (`how`: read_as's)."""
    if how == EPOCH_MS:
        return epoch_ms(values)
    return values if how == SAME else values.cast(arrow_type(dtype))


def epoch_ms(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """A timestamp column as int64 milliseconds since epoch, whatever its zone (Arrow and
    Parquet store the UTC instant); microseconds floored, as Spark's unix_millis does."""
    unit = values.type.unit
    counts = values.cast(pa.int64())
    if unit == "s":
        return pc.multiply_checked(counts, 1000)
    if unit == "us":  # integer divide truncates toward zero: step below first to floor a negative
        return pc.divide(pc.subtract(counts, pc.if_else(pc.less(counts, 0), 999, 0)), 1000)
    return counts


def spark_file_type(file_type: pa.DataType) -> Any:
    """The Spark type a raw file's column of an accepted `file_type` is read with."""
    from pyspark.sql import types as T

    if pa.types.is_timestamp(file_type):  # also zoneless ones: the value is the UTC instant
        return T.TimestampType()
    if file_type == pa.bool_():
        return T.BooleanType()
    if file_type == pa.int16():
        return T.ShortType()
    dtype = dtype_from_arrow(file_type)
    if dtype is None:
        raise ValueError(f"{file_type} is not a raw column type longseq reads")
    return spark_type(dtype)


def spark_read(column: "Column", how: str, dtype: DType) -> "Column":
    """A column read with its file's Spark type, as the contract's `dtype`."""
    from pyspark.sql import functions as F

    if how == EPOCH_MS:
        return F.unix_millis(column)  # floors microseconds, as epoch_ms does
    return column if how == SAME else column.cast(spark_type(dtype))
