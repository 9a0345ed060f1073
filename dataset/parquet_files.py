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
  columns are the build's row rules' business.

Readers then read the checked list itself, never the directory, so nothing unchecked
slips in, and never with Spark's mergeSchema, which turns a missing column into nulls.
"""

from __future__ import annotations

import dataclasses
import io
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from longseq.dataset.storage import LocalStorage, Storage, is_local
from longseq.schemas.check import check_arrow_schema
from longseq.schemas.errors import SchemaMismatchError
from longseq.schemas.forms import to_arrow, to_spark
from longseq.schemas.types import Schema

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

HIDDEN_PREFIXES = (".", "_")


def is_hidden(name: str) -> bool:
    return name.startswith(HIDDEN_PREFIXES)


def as_named(contract: Schema, names: Mapping[str, str] | None) -> Schema:
    """`contract` with its columns under the names the files give them (names: the
    contract's name -> the files'; a dataset spec's `columns`, for raw logs)."""
    if not names:
        return contract
    return Schema(contract.name, tuple(dataclasses.replace(f, name=names.get(f.name, f.name)) for f in contract),
                  contract.doc)


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
    directory = directory.rstrip("/")
    files = [f"{directory}/{name}" for name in storage.list_names(directory) if not is_hidden(name)]
    for path in files:
        check_parquet_file(path, contract, spark, names)
    return files


def check_parquet_file(path: str, contract: Schema, spark: "SparkSession | None" = None,
                       names: Mapping[str, str] | None = None) -> None:
    """One data file checked against `contract` as `check_parquet_files` checks each of a
    directory's (the stream checks each raw file as it lands, etl/stream/landed.py)."""
    # inputs are checked strictly: an extra column is often a renamed or misspelt one
    check_arrow_schema(parquet_schema(path, spark), as_named(contract, names), source=path, allow_extra=False)


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
    files = check_parquet_files(LocalStorage(), directory, contract, names=names)
    wanted = columns or contract.names
    schema = pa.schema([to_arrow(contract).field(n) for n in wanted])
    if not files:  # a complete partition of a day without impressions
        return schema.empty_table()
    in_file = [(names or {}).get(n, n) for n in wanted]
    # the cast unifies what the check allows to differ: nullability, large_string
    return pa.concat_tables(pq.read_table(f, columns=in_file).select(in_file).rename_columns(wanted).cast(schema)
                            for f in files)


def read_spark(spark: "SparkSession", storage: Storage, directory: str, contract: Schema,
               names: Mapping[str, str] | None = None) -> "DataFrame":
    """The contract's columns of a directory's checked files, as a Spark DataFrame named as
    the contract names them (files may name them otherwise: `names`)."""
    from pyspark.sql import functions as F

    files = check_parquet_files(storage, directory, contract, spark, names)
    if not files:  # a complete partition of a day without impressions
        return spark.createDataFrame([], to_spark(contract))
    # the contract's schema, not one inferred from a file or merged over all of them
    frame = spark.read.schema(to_spark(as_named(contract, names))).parquet(*files)
    return frame.select(*[F.col(f"`{(names or {}).get(n, n)}`").alias(n) for n in contract.names])


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
