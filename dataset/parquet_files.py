"""The one check of a directory of Parquet files (a raw partition, a state) before anything
reads it, and the two reads of exactly the files it passed.

Both build engines, `validate --suite raw` and read_raw_partition go through here, so the
same input gets the same error, whichever of them reads it:

- names starting with "." or "_" are skipped, as Spark and pyarrow skip them (_SUCCESS,
  _committed_*, Hadoop's .NAME.crc checksums, hidden temp dirs);
- every other entry must be a readable Parquet file, whatever its name (Hive writes
  `000000_0`): a stray `notes.txt`, a file cut short or a directory is refused by name;
- its footer must hold the contract's columns with the contract's types and no others.
  Nullability may differ (Spark reads every column as nullable); nulls in required
  columns are the build's row rules' business. A raw log's column may also hold a type
  that reads as the contract's without loss (schemas/conversions.py: a timestamp for
  request_ts, a bool label, an int32 for an int64): each file is read with its own types,
  then converted, by both engines alike.

Readers then read the checked list itself, never the directory, so nothing unchecked
slips in, and never with Spark's mergeSchema, which turns a missing column into nulls.
"""

from __future__ import annotations

import functools
import io
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from longseq.dataset.storage import LocalStorage, Storage, is_local
from longseq.schemas.check import check_arrow_schema
from longseq.schemas.conversions import also_read, arrow_read, read_as, spark_file_type, spark_read
from longseq.schemas.errors import SchemaMismatchError
from longseq.schemas.forms import arrow_type, to_arrow, to_spark
from longseq.schemas.types import Schema

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

HIDDEN_PREFIXES = (".", "_")


def is_hidden(name: str) -> bool:
    return name.startswith(HIDDEN_PREFIXES)


def check_parquet_files(
    storage: Storage, directory: str, contract: Schema, spark: "SparkSession | None" = None,
    names: Mapping[str, str] | None = None,
) -> list[str]:
    """Every data file of `directory`, each checked against `contract` (under the files'
    `names`; see the module docstring); SchemaMismatchError naming the first file that fails.

    URIs (hdfs://, s3a://, file://) are opened through `spark`'s Hadoop FileSystem when it
    is given, so the check sees what the Spark read will see, with its credentials;
    otherwise through pyarrow.fs.
    """
    return [path for path, _ in _checked_files(storage, directory, contract, spark, names)]


FileTypes = dict[str, pa.DataType]  # a contract column's name -> its type in a file


def _checked_files(storage: Storage, directory: str, contract: Schema, spark: "SparkSession | None",
                   names: Mapping[str, str] | None) -> list[tuple[str, FileTypes]]:
    directory = directory.rstrip("/")
    files = [f"{directory}/{name}" for name in storage.list_names(directory) if not is_hidden(name)]
    return [(path, check_parquet_file(path, contract, spark, names)) for path in files]


def check_parquet_file(path: str, contract: Schema, spark: "SparkSession | None" = None,
                       names: Mapping[str, str] | None = None) -> FileTypes:
    """One data file checked against `contract` as `check_parquet_files` checks each of a
    directory's (the stream checks each raw file as it lands, etl/stream/landed.py); its
    columns' types, by the contract's names."""
    names = names or {}
    found = parquet_schema(path, spark)
    column_of = {names.get(c, c): c for c in contract.names}  # the file's name -> the contract's
    types, readable = {}, []
    for f in found:
        column = column_of.get(f.name)
        if column is not None:
            types[column] = f.type
            if read_as(column, contract[column].dtype, f.type) is not None:  # passes as the contract's type
                f = pa.field(f.name, arrow_type(contract[column].dtype))
        readable.append(f)
    notes = {names.get(f.name, f.name): note for f in contract if (note := also_read(f.name, f.dtype))}
    # inputs are checked strictly: an extra column is often a renamed or misspelt one
    check_arrow_schema(pa.schema(readable), contract.renamed(names), source=path, allow_extra=False, notes=notes)
    return types


def parquet_schema(path: str, spark: "SparkSession | None" = None) -> pa.Schema:
    """The Arrow schema in a Parquet file's footer; SchemaMismatchError naming the file if it has none."""
    try:
        with _open(path, spark) as f:
            return pq.ParquetFile(f).schema_arrow
    except (pa.ArrowException, OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise SchemaMismatchError(
            f"{path} is not a readable Parquet file ({reason}); "
            "a partition may hold only Parquet files and hidden (. or _) files"
        ) from None


def read_arrow(directory: str, contract: Schema, columns: list[str] | None = None,
               names: Mapping[str, str] | None = None) -> pa.Table:
    """The contract's columns (or `columns`) of a local directory's checked files, typed as
    the contract says and named as it names them (files may name them otherwise: `names`)."""
    checked = _checked_files(LocalStorage(), directory, contract, None, names)
    wanted = columns or contract.names
    schema = pa.schema([to_arrow(contract).field(n) for n in wanted])
    if not checked:  # a complete partition of a day without impressions
        return schema.empty_table()
    in_file = [(names or {}).get(n, n) for n in wanted]

    def read(path: str, types: FileTypes) -> pa.Table:
        table = pq.read_table(path, columns=in_file)
        values = [arrow_read(table.column(logged), _how(contract, n, types), contract[n].dtype)
                  for n, logged in zip(wanted, in_file)]
        # the cast unifies what the check allows to differ: nullability, large_string
        return pa.table(values, names=wanted).cast(schema)

    return pa.concat_tables(read(path, types) for path, types in checked)


def read_spark(spark: "SparkSession", storage: Storage, directory: str, contract: Schema,
               names: Mapping[str, str] | None = None) -> "DataFrame":
    """The contract's columns of a directory's checked files, as a Spark DataFrame named as
    the contract names them (files may name them otherwise: `names`)."""
    checked = _checked_files(storage, directory, contract, spark, names)
    if not checked:  # a complete partition of a day without impressions
        return spark.createDataFrame([], to_spark(contract))
    # one read per set of column types, each with its files' own types: a Spark read takes one
    # schema, and a Parquet column is read only as its own type
    groups: dict[tuple[pa.DataType, ...], list[str]] = {}
    for path, types in checked:
        groups.setdefault(tuple(types[n] for n in contract.names), []).append(path)
    frames = []
    for key, paths in groups.items():
        types = dict(zip(contract.names, key))
        frame = spark.read.schema(spark_file_schema(contract, names, types)).parquet(*paths)
        frames.append(frame.select(*spark_columns(contract, names, types)))
    return functools.reduce(lambda a, b: a.unionByName(b), frames)


def spark_file_schema(contract: Schema, names: Mapping[str, str] | None, types: FileTypes) -> "StructType":
    """The Spark schema to read files of these column `types` with: the files' names and types."""
    from pyspark.sql import types as T

    return T.StructType([T.StructField((names or {}).get(f.name, f.name), spark_file_type(types[f.name]))
                         for f in contract])


def spark_columns(contract: Schema, names: Mapping[str, str] | None, types: FileTypes) -> list["Column"]:
    """The contract's columns of files read with spark_file_schema: renamed, and converted
    to the contract's types."""
    from pyspark.sql import functions as F

    return [spark_read(F.col(f"`{(names or {}).get(f.name, f.name)}`"), _how(contract, f.name, types), f.dtype)
            .alias(f.name) for f in contract]


def _how(contract: Schema, column: str, types: FileTypes) -> str:
    how = read_as(column, contract[column].dtype, types[column])
    assert how is not None, "check_parquet_file passed a column that cannot be read"
    return how


@contextmanager
def _open(path: str, spark: "SparkSession | None") -> Iterator[Any]:
    if is_local(path):
        f: Any = pa.OSFile(path)
    elif spark is not None:
        f = _HadoopFile(spark, path)
    else:
        import pyarrow.fs as pafs

        fs, inner = pafs.FileSystem.from_uri(path)
        f = fs.open_input_file(inner)
    try:
        yield f
    finally:
        f.close()


class _HadoopFile(io.RawIOBase):
    """A file read through the JVM's Hadoop FileSystem as a seekable Python file, so that
    pyarrow can parse its footer: the few reads it makes cross py4j as byte arrays."""

    def __init__(self, spark: "SparkSession", path: str):
        from py4j.protocol import Py4JJavaError

        self._error = Py4JJavaError
        self._jvm = spark.sparkContext._jvm
        try:
            p = self._jvm.org.apache.hadoop.fs.Path(path)
            fs = p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
            status = fs.getFileStatus(p)
            if status.isDirectory():
                raise IsADirectoryError("it is a directory")
            self._size = int(status.getLen())
            self._stream = fs.open(p)
        except Py4JJavaError as e:
            raise OSError(_java_message(e)) from None
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        try:
            # py4j copies a byte[] argument, so the bytes must come back as a return value
            self._stream.seek(self._pos)
            data = self._jvm.org.apache.commons.io.IOUtils.toByteArray(self._stream, n)
        except self._error as e:
            raise OSError(_java_message(e)) from None
        buffer[:n] = data
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed and hasattr(self, "_stream"):
            self._stream.close()
        super().close()


def _java_message(e: Exception) -> str:
    java = getattr(e, "java_exception", None)
    return str(java.toString() if java is not None else e).splitlines()[0]
