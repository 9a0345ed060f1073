"""The raw contract check of every file the stream is to read, on the driver, before Spark
reads it: the daily build's check of each file (dataset/parquet_files.py), so a file with a
missing, extra or mistyped column, a file cut short or a stray non-Parquet file stops the
stream in one line naming it, as it stops `longseq build`.

Spark's file source would read a file without a column as nulls (its rows then quarantined
as if the column were null) and fail deep in its reader on a mistyped or truncated one. The
stream checks every file of `RAW/ds=D/` (D from its first day on) not checked before: when
it starts and at each micro-batch, before the batch is evaluated. A file that passed is noted
in the checkpoint (`_longseq/checked-files.tsv`: size, modification time, path), so a
restart checks only the files new to it, and a file rewritten since is checked again.

A stream reads every file with one schema, made when it starts, so its files must agree on
the types of their columns, where a raw column may hold a type that reads as the contract's
without loss (schemas/conversions.py): the types of the first file the stream checked are
its types (noted in `_longseq/raw-types.arrow`; the contract's if it starts before any file
lands), and a file of other types is refused like a mistyped one.

A refused file may be in a micro-batch Spark planned already; fixed, the batch reads it again
when it is run again; removed, the batch runs without it (Spark lists a planned batch's files
anew and passes over those gone: tests/test_stream_reliability.py).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pyarrow as pa

from longseq.dataset.parquet_files import FileTypes, check_parquet_file, is_hidden
from longseq.schemas.contracts import contracts_of
from longseq.schemas.forms import arrow_type
from longseq.schemas.errors import SchemaMismatchError
from longseq.schemas.spec import DatasetSpec


class LandedFiles:
    """The raw files of a stream, each checked once against the raw contract."""

    def __init__(self, raw: str, spec: DatasetSpec, start: dt.date | None, record: str):
        self.raw, self.spec, self.start, self.record = raw, spec, start, Path(record)
        self.passed: set[tuple[str, int, int]] = set()
        self.types_record = self.record.with_name("raw-types.arrow")
        self.types: FileTypes | None = None  # the raw columns' types in the stream's files
        if self.types_record.exists():
            schema = pa.ipc.read_schema(pa.py_buffer(self.types_record.read_bytes()))
            self.types = {f.name: f.type for f in schema}
        if self.record.exists():
            for line in self.record.read_text().splitlines():
                size, mtime, path = (line.split("\t", 2) + ["", ""])[:3]
                if size.isdigit() and mtime.isdigit() and path:  # a line cut short by a crash is no record
                    self.passed.add((path, int(size), int(mtime)))

    def files(self) -> list[tuple[str, int, int]]:
        """(path, size, mtime_ns) of every entry the stream reads: not hidden, in a partition
        of its first day or later."""
        found = []
        first = None if self.start is None else f"ds={self.start.isoformat()}"
        for part in sorted(os.scandir(self.raw), key=lambda e: e.name):
            if not part.is_dir() or is_hidden(part.name) or (first is not None and part.name < first):
                continue
            for entry in sorted(os.scandir(part.path), key=lambda e: e.name):
                if is_hidden(entry.name):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # removed since it was listed
                    continue
                found.append((entry.path, st.st_size, st.st_mtime_ns))
        return found

    def check(self) -> int:
        """Check each file not checked before; SchemaMismatchError naming the first that
        fails and what to do. Returns how many were checked now."""
        contract, names = contracts_of(self.spec).raw_log, self.spec.raw_names
        new = [f for f in self.files() if f not in self.passed]
        done = []
        try:
            for path, size, mtime in new:
                try:
                    types = check_parquet_file(path, contract, names=names)
                    if self.types is None:
                        self._keep_types(types)
                    elif (column := _read_otherwise(types, self.types)) is not None:
                        raise SchemaMismatchError(
                            f"{path}: column {names.get(column, column)!r} is {types[column]} here, but "
                            f"{self.types[column]} in the files the stream read before, and a stream reads all its "
                            "files with one schema")
                except SchemaMismatchError as e:
                    raise SchemaMismatchError(
                        f"{e}; the stream stopped before reading it: fix or remove the file, then start the stream "
                        f"again (it goes on from its checkpoint)") from None
                done.append((path, size, mtime))
        finally:
            if done:
                self.record.parent.mkdir(parents=True, exist_ok=True)
                with open(self.record, "a") as f:
                    f.writelines(f"{size}\t{mtime}\t{path}\n" for path, size, mtime in done)
                self.passed.update(done)
        return len(done)

    def file_types(self) -> FileTypes:
        """The raw columns' types the stream reads its files with: those of the first file it
        checked, or the contract's if none has landed yet (then every file must hold those)."""
        if self.types is None:
            self._keep_types({f.name: arrow_type(f.dtype) for f in contracts_of(self.spec).raw_log})
        assert self.types is not None
        return self.types

    def _keep_types(self, types: FileTypes) -> None:
        self.types_record.parent.mkdir(parents=True, exist_ok=True)
        partial = self.types_record.with_name(f".{self.types_record.name}.partial")
        partial.write_bytes(pa.schema(list(types.items())).serialize().to_pybytes())
        os.replace(partial, self.types_record)
        self.types = types


def _read_otherwise(types: FileTypes, kept: FileTypes) -> str | None:
    """The first column that Spark reads with another type in a file of `types` than in one of
    `kept` (timestamps of any unit or zone are all read as one type); None if there is none."""
    from longseq.schemas.conversions import spark_file_type

    return next((c for c in kept if spark_file_type(types[c]) != spark_file_type(kept[c])), None)
