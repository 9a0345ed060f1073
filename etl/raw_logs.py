"""Finding and reading raw log partitions (contract 1), with clear errors for missing data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.check import check_arrow_schema
from schemas.contracts import PARTITION_COLUMN, RAW_LOG, SUCCESS_MARKER
from schemas.errors import MissingPrerequisiteError
from schemas.forms import to_arrow


def partition_path(root: Path, day: dt.date) -> Path:
    return Path(root) / f"{PARTITION_COLUMN}={day.isoformat()}"


def complete_partition(root: Path, day: dt.date) -> Path:
    """The ds=day partition under root; an error if it is missing or has no _SUCCESS marker."""
    path = partition_path(root, day)
    if not Path(root).is_dir():
        raise MissingPrerequisiteError(f"raw log directory {root} does not exist")
    if not path.is_dir():
        raise MissingPrerequisiteError(f"raw partition {path} does not exist")
    if not (path / SUCCESS_MARKER).exists():
        raise MissingPrerequisiteError(
            f"raw partition {path} has no {SUCCESS_MARKER} marker: it is incomplete or still being written"
        )
    return path


def read_raw_partition(root: Path, day: dt.date, columns: list[str] | None = None) -> pa.Table:
    """One complete raw partition as an Arrow table; every file is checked against contract 1."""
    path = complete_partition(root, day)
    files = sorted(path.glob("*.parquet"))
    for f in files:
        check_arrow_schema(pq.read_schema(f), RAW_LOG, source=str(f))
    if not files:  # a complete partition of a day without impressions
        empty = to_arrow(RAW_LOG).empty_table()
        return empty.select(columns) if columns else empty
    return pa.concat_tables(pq.read_table(f, columns=columns) for f in files)
