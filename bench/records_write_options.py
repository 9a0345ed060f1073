"""Parquet write options for request records: time and size of one day's records.

    longseq bench write-options --records DATA/requests/ds=YYYY-MM-DD [--master local[2]]

Reads the day's records and writes them back with each option set (best of 2), so the
options are compared on the same data in one run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from longseq.etl.spark_session import SparkConfig, spark_session
from longseq.bench import bench_parser
from longseq.cli.arguments import add_master, local_path

OPTION_SETS = {
    "default (dictionary, zstd)": {},
    "no dictionary": {"parquet.enable.dictionary": "false"},
    "zstd level 1": {"parquet.compression.codec.zstd.level": "1"},
    "Parquet v2 pages": {"parquet.writer.version": "PARQUET_2_0"},
    "lz4": {"compression": "lz4"},
    "uncompressed": {"compression": "none"},
}


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench write-options --help`)."""

    ap.add_argument("--records", type=local_path, required=True, metavar="DIR", help="one built day: DATA/requests/ds=YYYY-MM-DD")
    add_master(ap)


def main(argv: list[str]) -> int:
    ap = bench_parser('write-options', __doc__, arguments)
    args = ap.parse_args(argv)
    spark = spark_session(SparkConfig(master=args.master, app_name="longseq-bench-write-options"))
    work = Path(tempfile.mkdtemp(prefix="longseq-bench-wopt-"))
    df = spark.read.parquet(str(args.records))
    df.write.format("noop").mode("overwrite").save()  # warm up
    t = time.perf_counter()
    df.write.format("noop").mode("overwrite").save()
    read_s = time.perf_counter() - t
    print(f"{df.count():,} records from {args.records}; reading alone {read_s:.2f} s\n")
    print("| options | read + write s (best of 2) | MB |")
    print("|---|---:|---:|")
    try:
        for name, options in OPTION_SETS.items():
            best = float("inf")
            target = work / str(len(name))
            for _ in range(2):
                t = time.perf_counter()
                df.write.mode("overwrite").options(**options).parquet(str(target))
                best = min(best, time.perf_counter() - t)
            size = sum(f.stat().st_size for f in target.rglob("*.parquet")) / 2**20
            print(f"| {name} | {best:.2f} | {size:.1f} |")
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0
