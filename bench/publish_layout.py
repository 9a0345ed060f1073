"""Publishing layout for Petastorm: plain Parquet lists vs a Petastorm-materialized copy.

    longseq bench publish-layout --records DATA/requests/ds=YYYY-MM-DD [--limit 3000] [--repeat 3]

Spark writes the day's first --limit records in each layout, then each is read into the
trainer's RequestBatch (256 requests, file order). Measures write time, size on disk and
read throughput against a plain pyarrow floor; writes and reads alternate between
layouts, median of --repeat rounds, all in one process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from longseq.dataset.layout import ROW_GROUP_BYTES
from longseq.etl.batch.spark_engine import LIST_WRITE_OPTIONS
from longseq.etl.spark_session import SparkConfig, spark_session
from longseq.schemas.contracts import REQUEST_RECORD
from longseq.schemas.forms import spark_type, to_unischema
from longseq.reader.batch import batch_from_chunk
from longseq.reader.chunks import HIST_NAMES, REQUEST_NAMES, TGT_NAMES, RequestChunk, arrow_values
from longseq.bench import bench_parser
from longseq.cli.arguments import add_master, local_path, positive_int

if TYPE_CHECKING:  # pragma: no cover
    from petastorm.unischema import Unischema
    from pyspark.sql import DataFrame, Row, SparkSession

BATCH_SIZE = 256


# ---------------------------------------------------------------- writing


def materialized_schema(codec: Any) -> "Unischema":
    """The contract's Unischema with `codec` on every list field and Spark scalar codecs:
    materialize_dataset needs a codec on every field (to_unischema gives none)."""
    from petastorm.codecs import ScalarCodec
    from petastorm.unischema import Unischema

    base = to_unischema(REQUEST_RECORD).fields
    fields = [base[f.name]._replace(codec=codec if base[f.name].shape else ScalarCodec(spark_type(f.dtype)))
              for f in REQUEST_RECORD]
    return Unischema(REQUEST_RECORD.name, fields)


def _encode(schema: "Unischema", row: "Row") -> "Row":
    """Spark worker: a record's lists as ndarrays of their contract dtype, as the codecs demand."""
    from petastorm.unischema import dict_to_spark_row

    values = {name: np.asarray(row[name], f.numpy_dtype) if f.shape else row[name] for name, f in schema.fields.items()}
    return dict_to_spark_row(schema, values)


def write_plain(df: "DataFrame", path: Path) -> None:
    df.write.mode("overwrite").options(**LIST_WRITE_OPTIONS).parquet(str(path))  # the Spark build's own options


def write_materialized(spark: "SparkSession", df: "DataFrame", path: Path, schema: "Unischema") -> None:
    from petastorm.etl.dataset_metadata import materialize_dataset

    url = path.as_uri()
    with materialize_dataset(spark, url, schema, row_group_size_mb=ROW_GROUP_BYTES // 2**20):
        rows = df.rdd.map(partial(_encode, schema))
        spark.createDataFrame(rows, schema.as_spark_schema()).write.mode("overwrite").parquet(url)


# ---------------------------------------------------------------- reading: each returns (requests, history tokens)


def read_plain_petastorm(files: list[Path]) -> tuple[int, int]:
    """(A) the trainer's reader: make_batch_reader + the packing TransformSpec."""
    from longseq.reader.readers import ReaderConfig, open_reader

    reader = open_reader([f.as_uri() for f in files], ReaderConfig(shuffle=False, batch_size=BATCH_SIZE), "petastorm")
    requests = tokens = 0
    for batch in reader.batches(0):
        requests += batch.num_requests
        tokens += batch.num_history_tokens
    return requests, tokens


def _jagged(rows: list[Any], names: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(getattr(r, names[0])) for r in rows], out=offsets[1:])
    return offsets, {name: np.concatenate([getattr(r, name) for r in rows]) for name in names}


def read_materialized(path: Path) -> tuple[int, int]:
    """(B) make_reader's decoded rows, gathered into the same RequestBatch as (A) delivers."""
    from petastorm import make_reader

    requests = tokens = 0
    with make_reader(path.as_uri(), reader_pool_type="thread", workers_count=1, shuffle_row_groups=False) as reader:
        while rows := list(islice(reader, BATCH_SIZE)):
            hist_offsets, hist = _jagged(rows, HIST_NAMES)
            tgt_offsets, tgt = _jagged(rows, TGT_NAMES)
            request = {name: np.array([getattr(r, name) for r in rows]) for name in REQUEST_NAMES}
            batch = batch_from_chunk(RequestChunk(request, hist_offsets, hist, tgt_offsets, tgt))
            requests += batch.num_requests
            tokens += batch.num_history_tokens
    return requests, tokens


def read_floor(files: list[Path]) -> tuple[int, int]:
    """(C) (A)'s files with pyarrow alone: each list column's flat values and offsets as
    zero-copy tensors; no batching, no checks."""
    import pyarrow.parquet as pq
    import torch

    requests = tokens = 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for f in files:
            parquet = pq.ParquetFile(f)
            for g in range(parquet.metadata.num_row_groups):
                table = parquet.read_row_group(g, columns=REQUEST_RECORD.names)
                for name in (*HIST_NAMES, *TGT_NAMES):
                    column = table.column(name).combine_chunks()
                    torch.from_numpy(arrow_values(column.offsets))
                    values = torch.from_numpy(arrow_values(column.flatten()))
                    tokens += len(values) if name == HIST_NAMES[0] else 0
                requests += table.num_rows
    return requests, tokens


# ---------------------------------------------------------------- the run


def _mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _row_groups(files: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_row_groups for f in files)


def _parts(path: Path) -> list[Path]:
    return sorted(path.glob("part-*.parquet"))


LABELS = {
    "A": "(A) plain Parquet lists, make_batch_reader + packing TransformSpec",
    "B": "(B) materialize_dataset, NdarrayCodec, make_reader rows -> batches",
    "B'": "(B') materialize_dataset, CompressedNdarrayCodec, make_reader rows -> batches",
    "C": "(C) floor: A's files, pyarrow row groups -> torch",
}


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench publish-layout --help`)."""

    ap.add_argument("--records", type=local_path, required=True, metavar="DIR", help="one built day: DATA/requests/ds=YYYY-MM-DD")
    ap.add_argument("--limit", type=positive_int, default=3000, help="records to publish (keeps the Spark writes short; default 3000)")
    add_master(ap)
    ap.add_argument("--repeat", type=positive_int, default=3, help="alternating rounds; medians are reported (default 3)")


def _arguments(argv: list[str]) -> argparse.Namespace:
    ap = bench_parser('publish-layout', __doc__, arguments)
    return ap.parse_args(argv)


def _time_writes(spark: "SparkSession", args: argparse.Namespace, paths: dict[str, Path],
                 codecs: dict[str, Any]) -> tuple[int, dict[str, list[float]]]:
    """Write the first --limit records in layouts A, B and B' --repeat times each; returns the
    record count and the seconds of each write. Stops `spark`."""
    write_s: dict[str, list[float]] = {"A": [], "B": [], "B'": []}
    try:
        df = spark.read.parquet(str(args.records.resolve())).limit(args.limit).cache()
        count = df.count()  # cached first, so that the writes time writing alone
        writers = {
            "A": partial(write_plain, df, paths["A"]),
            "B": partial(write_materialized, spark, df, paths["B"], materialized_schema(codecs["B"])),
            "B'": partial(write_materialized, spark, df, paths["B'"], materialized_schema(codecs["B'"])),
        }
        for _ in range(args.repeat):
            for key, write in writers.items():  # alternating, so that warm-up and drift hit every layout alike
                t = time.perf_counter()
                write()
                write_s[key].append(time.perf_counter() - t)
    finally:
        spark.stop()  # the reads get the cores to themselves
    return count, write_s


def _time_reads(paths: dict[str, Path], repeat: int) -> tuple[dict[str, list[float]], tuple[int, int]]:
    """Read every layout (and the floor) `repeat` times, alternating; returns the seconds of each
    read and the (requests, history tokens) that every one of them delivered."""
    readers: dict[str, Callable[[], tuple[int, int]]] = {
        "A": partial(read_plain_petastorm, _parts(paths["A"])),
        "B": partial(read_materialized, paths["B"]),
        "B'": partial(read_materialized, paths["B'"]),
        "C": partial(read_floor, _parts(paths["C"])),
    }
    read_s: dict[str, list[float]] = {key: [] for key in readers}
    delivered: dict[str, tuple[int, int]] = {}
    for _ in range(repeat):
        for key, read in readers.items():
            t = time.perf_counter()
            delivered[key] = read()
            read_s[key].append(time.perf_counter() - t)
    if len(set(delivered.values())) != 1:  # rates compare only if every layout delivered the same work
        raise RuntimeError(f"layouts read different data: {delivered}")
    return read_s, delivered["C"]


def _report(argv: list[str], args: argparse.Namespace, count: int, delivered: tuple[int, int],
            write_s: dict[str, list[float]], read_s: dict[str, list[float]], paths: dict[str, Path]) -> None:
    """The markdown table on stdout: medians, sizes, and each read rate against the floor's."""
    requests, tokens = delivered
    print(f"command: longseq bench publish-layout {' '.join(argv)}\n"
          f"{count:,} records ({tokens:,} history tokens) from {args.records}; Spark {args.master}, "
          f"{ROW_GROUP_BYTES // 2**20} MB row groups, zstd; reads in {BATCH_SIZE}-request batches; "
          f"median of {args.repeat} alternating rounds\n")
    print("| layout | write s | MiB on disk | requests/s | history tokens/s | ratio to floor |")
    print("|---|---:|---:|---:|---:|---:|")
    floor = requests / statistics.median(read_s["C"])
    for key, label in LABELS.items():
        rate = requests / statistics.median(read_s[key])
        write = f"{statistics.median(write_s[key]):.1f}" if key in write_s else ""  # C reads A's files: no write
        groups = _row_groups(_parts(paths[key]))
        print(f"| {label} ({groups} row group(s)) | {write} | {_mib(paths[key]):.1f} | {rate:,.0f} | "
              f"{rate * tokens / requests / 1e6:,.1f} M | {rate / floor:.2f} |")


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    # imported before anything is started: a missing petastorm fails here, with nothing to clean up
    from petastorm.codecs import CompressedNdarrayCodec, NdarrayCodec

    codecs = {"B": NdarrayCodec(), "B'": CompressedNdarrayCodec()}
    # petastorm 0.12 calls pyarrow's deprecated legacy dataset API: a warning per call
    warnings.filterwarnings("ignore", category=FutureWarning, module="petastorm")
    # Spark's Python workers run _encode: they need this interpreter's packages, not PATH's python3
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    work = Path(tempfile.mkdtemp(prefix="longseq-bench-publish-"))
    paths = {"A": work / "plain", "B": work / "ndarray", "B'": work / "compressed", "C": work / "plain"}
    spark = spark_session(SparkConfig(master=args.master, app_name="longseq-bench-publish-layout"))
    try:
        count, write_s = _time_writes(spark, args, paths, codecs)
        read_s, delivered = _time_reads(paths, args.repeat)
        _report(argv, args, count, delivered, write_s, read_s, paths)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
