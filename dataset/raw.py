"""Finding, reading and writing raw log partitions (contract 1), with clear errors for missing data."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Collection, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from longseq.dataset.layout import ds_name, partition_path
from longseq.dataset.parquet_files import read_arrow
from longseq.dataset.storage import LocalStorage, Storage
from longseq.schemas.contracts import SUCCESS_MARKER, contracts_of
from longseq.schemas.errors import LongseqError, MissingPrerequisiteError
from longseq.schemas.spec import DatasetSpec, resolve_spec


def check_raw_partitions(storage: Storage, root: str, days: list[dt.date],
                         empty_days: Collection[dt.date] = ()) -> None:
    """Every ds=day partition exists and is complete (has its _SUCCESS marker), except the
    days declared empty (the build's --empty-days), which must have none.

    A partition holding only _SUCCESS is a day without logs; a missing one has not landed
    yet, and is refused naming every such day, unless it is declared empty."""
    if not storage.exists(root):
        raise MissingPrerequisiteError(f"raw log directory {root} does not exist")
    for day in empty_days:
        if storage.exists(path := partition_path(root, day)):
            raise LongseqError(f"--empty-days {day}: its raw partition {path} exists, so the day is not empty; "
                               f"drop {day} from --empty-days to build it from its logs")
    missing = [d for d in days if d not in empty_days and not storage.exists(partition_path(root, d))]
    if missing:
        listed = ",".join(str(d) for d in missing)
        which = f"ds={missing[0]} has" if len(missing) == 1 else f"{len(missing)} days ({listed}) have"
        raise MissingPrerequisiteError(
            f"{which} not landed: raw partition {partition_path(root, missing[0])} does not exist; wait for the logs, "
            f"or, for a day without any, write its partition with only {SUCCESS_MARKER} or build with --empty-days {listed}")
    for day in days:
        path = partition_path(root, day)
        if day not in empty_days and not storage.exists(f"{path}/{SUCCESS_MARKER}"):
            raise MissingPrerequisiteError(
                f"raw partition {path} has no {SUCCESS_MARKER} marker: it is incomplete or still being written"
            )


def read_raw_partition(
    root: Path, day: dt.date, columns: list[str] | None = None, spec: DatasetSpec | Path | str | None = None
) -> pa.Table:
    """One complete raw partition as an Arrow table, every file checked against contract 1
    of `spec` (a spec, its file, or None for the default) as the build checks it
    (dataset/parquet_files.py)."""
    check_raw_partitions(LocalStorage(), str(root), [day])
    spec = resolve_spec(spec)
    return read_arrow(partition_path(root, day), contracts_of(spec).raw_log, columns, spec.raw_names)


class RawPartitionWriter:
    """Writes one raw ds atomically: part files go to a hidden temp dir as they are made
    (memory holds one chunk), and the dir is renamed into place with its _SUCCESS marker
    at the end. Used by the generator and the dataset adapters."""

    def __init__(self, out: Path, day: dt.date, names: Mapping[str, str] | None = None):
        self.names = dict(names or {})  # longseq's name -> the logs' (a dataset spec's `columns`)
        self.final = Path(out) / ds_name(day)
        self.tmp = Path(out) / f".{self.final.name}.tmp"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.parts = 0

    def write(self, table: pa.Table) -> None:
        if self.names:
            table = table.rename_columns([self.names.get(n, n) for n in table.column_names])
        pq.write_table(table, self.tmp / f"part-{self.parts:05d}.parquet", compression="zstd", row_group_size=1 << 20)
        self.parts += 1

    def commit(self) -> None:
        if self.final.exists():
            shutil.rmtree(self.final)
        self.tmp.rename(self.final)
        (self.final / SUCCESS_MARKER).touch()
