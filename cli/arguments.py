"""What every subcommand shares: the parser, argument types, and the one vocabulary of flags.

One flag, one meaning, across every command (bench and demo included): VOCABULARY says what
each flag that more than one command takes means, and tests/test_cli_vocabulary.py walks
every parser to check that each use agrees with it, that every flag has help, and that
--device defaults to auto everywhere.

Directories may be local paths or cluster URIs (hdfs://, s3a://); files are local paths.
Durations are written one way everywhere: a number and a unit, 3d, 36h, 90m, 45s, 250ms.
Results go to stdout; progress and warnings go to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from longseq.schemas.errors import LongseqError


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one line of help, a function adding its arguments, and the
    function that runs it (returning the exit code)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus a hint), not the whole usage block, and
    a flag is only its full name (no prefixes: a retired spelling such as --out must not
    quietly mean --output)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help as written: a description or epilog keeps its line breaks."""


# flag -> its one meaning, for every flag more than one command takes
VOCABULARY: dict[str, str] = {
    "--raw": "a directory of raw impression logs (contract 1, ds=YYYY-MM-DD partitions)",
    "--data": "a build's output directory: written by build and stream, read by every later stage",
    "--run-dir": "a training run's directory: written by train, read by evaluate and score",
    "--work": "a working directory the command keeps its own files in (samples, caches, results)",
    "--output": "a file the command writes its result to",
    "--start": "the first day the command works on (YYYY-MM-DD)",
    "--end": "the last day the command works on (default: --start)",
    "--hour": "an hour (HH) of the day --start, among the stream's published hours",
    "--days": "how many days (of generated logs, or of data read)",
    "--users": "how many users to generate",
    "--seed": "the random seed, or comma-separated seeds where a benchmark repeats over several",
    "--profile": "the generator's size preset, or comma-separated presets where a benchmark sweeps them",
    "--spec": "a dataset spec file (docs/SPEC.md)",
    "--max-len": "the history a build keeps per request, in events (the records' cap)",
    "--score-len": "the history the model reads per request when scoring, in events (default: all the records hold)",
    "--lateness": "how long after a request its outcomes may be logged (a duration)",
    "--engine": "what runs the work: spark, or a local engine without a JVM (polars for a build, pandas for validation)",
    "--ratings": "a MovieLens ratings.csv (userId,movieId,rating,timestamp)",
    "--layout": "how a build or stream writes the records: one row per request, or compact (docs/CONTRACTS.md)",
    "--watermark-delay": "how far out of event-time order raw files may land (a duration)",
    "--device": "auto (the default: a GPU if there is one), cpu, cuda or cuda:N",
    "--preset": "the model size preset",
    "--arch": "the model architecture",
    "--steps": "how many training steps",
    "--lengths": "history lengths a benchmark measures at, comma-separated",
    "--batch-size": "requests per batch",
    "--repeat": "timed rounds per setting; the median is reported",
    "--quick": "the smaller plan of a benchmark",
    "--master": "the Spark master URL",
    "--conf": "a Spark setting KEY=VALUE; repeatable",
    "--spark-config": "a YAML/JSON file of Spark settings",
    "--shuffle-partitions": "spark.sql.shuffle.partitions",
    "--driver-memory": "spark.driver.memory",
    "--attention": "the target attention kernel: padded or flex",
    "--override-validation": "publish although validation failed or did not run, recording this reason",
    "--records": "one built day of request records (DATA/requests/ds=YYYY-MM-DD)",
    "--candidates": "the model variants a benchmark compares",
    "--samplers": "training-length samplers (history windows) a benchmark measures at, comma-separated",
    "--targets": "targets per request in a benchmark's synthetic batches",
    "--threads": "torch threads on the CPU; comma-separated where a benchmark compares several",
    "--bucket-pool": "training batches of similar history length from pools of N requests (0: off)",
}


# ---------------------------------------------------------------- argument types


def date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date in YYYY-MM-DD form: {text!r}") from None


def duration(text: str) -> int:
    """Milliseconds from "3d", "36h", "90m", ... (schemas/durations.py); more than zero."""
    from longseq.schemas.durations import parse_duration

    try:
        value = parse_duration(text)
    except LongseqError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than zero, got {text!r}")
    return value


def hour_of_day(text: str) -> int:
    try:
        hour = int(text)
    except ValueError:
        hour = -1
    if not 0 <= hour <= 23:
        raise argparse.ArgumentTypeError(f"not an hour of the day (0-23): {text!r}")
    return hour


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 0.5:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 0.5], got {value}")
    return value


def comma_separated(parse: Callable[[str], object] = str) -> Callable[[str], list]:
    """The type of a flag that takes one value or several, comma-separated (what a benchmark
    sweeps): each checked by `parse`."""
    def values(text: str) -> list:
        items = [v.strip() for v in text.split(",")]
        if not all(items):
            raise argparse.ArgumentTypeError(f"an empty item in {text!r}")
        return [parse(v) for v in items]

    values.element = parse  # type: ignore[attr-defined]
    values.__name__ = f"comma_separated_{getattr(parse, '__name__', 'str')}"
    return values


def local_path(text: str) -> Path:
    """A local file or directory (settings files, the demo's directory, a scores file)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return Path(os.path.expanduser(text))


def location(text: str) -> str:
    """A directory that may live on a cluster: a local path (kept as typed, ~ expanded) or a
    URI with a scheme (hdfs://, s3a://, file://), which a Path would mangle."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return text if urlparse(text).scheme else os.path.expanduser(text)


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def device(text: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a device: {text!r}; use auto, cpu, cuda or cuda:N")
    return text


# ---------------------------------------------------------------- options shared by subcommands


def add_raw(p: argparse.ArgumentParser, help: str, required: bool = True) -> None:
    p.add_argument("--raw", type=location, required=required, metavar="DIR", help=help)


def add_data(p: argparse.ArgumentParser, help: str = "the build's output directory (--data of `longseq build`)",
             required: bool = True) -> None:
    p.add_argument("--data", type=location, required=required, metavar="DIR", help=help)


def add_days(p: argparse.ArgumentParser, what: str, required: bool = True) -> None:
    p.add_argument("--start", type=date, required=required, metavar="YYYY-MM-DD", help=f"first day to {what}")
    p.add_argument("--end", type=date, metavar="YYYY-MM-DD", help=f"last day to {what} (default: --start)")


def add_work(p: argparse.ArgumentParser, default: str | None, what: str) -> None:
    """--work DIR; without a default, the command works in a temp dir that it removes."""
    p.add_argument("--work", type=local_path, default=Path(default) if default else None, metavar="DIR",
                   help=f"working directory: {what} (default {default or 'a temp dir, removed'})")


def add_output(p: argparse.ArgumentParser, help: str, required: bool = False) -> None:
    p.add_argument("--output", type=local_path, required=required, metavar="FILE", help=help)


def add_spec(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--spec", type=local_path, metavar="FILE", help=help)


def dataset_spec(args: argparse.Namespace):  # -> schemas.spec.DatasetSpec | None
    """The spec named by --spec, read and checked (None when not given)."""
    from longseq.schemas.spec import load_spec

    return load_spec(args.spec) if getattr(args, "spec", None) else None


def add_device(p: argparse.ArgumentParser) -> None:
    # no parser default: a training settings file may name the device; unset means auto
    p.add_argument("--device", type=device, help="auto (the default: a GPU if there is one), cpu, cuda, cuda:N")


def add_config(p: argparse.ArgumentParser, stage: str, help: str) -> None:
    """--<stage>-config FILE: a settings file is named for what it sets."""
    p.add_argument(f"--{stage}-config", type=local_path, dest="config", metavar="FILE", help=help)


def add_master(p: argparse.ArgumentParser) -> None:
    """--master alone, for benchmarks that start their own sessions; its default is the one
    every command has (SparkConfig.master)."""
    from longseq.etl.spark_session import SparkConfig  # no pyspark until a session starts

    default = SparkConfig().master
    p.add_argument("--master", default=default, metavar="URL", help=f"Spark master (default {default})")


def add_spark(p: argparse.ArgumentParser, title: str = "Spark settings") -> None:
    from longseq.etl.spark_session import SparkConfig  # no pyspark until a session starts

    default = SparkConfig()
    spark = p.add_argument_group(title)
    spark.add_argument("--master", metavar="URL", help=f"Spark master (default {default.master})")
    spark.add_argument("--shuffle-partitions", type=positive_int, metavar="N",
                       help=f"spark.sql.shuffle.partitions (default {default.shuffle_partitions})")
    spark.add_argument("--driver-memory", metavar="SIZE", help=f"spark.driver.memory (default {default.driver_memory})")
    spark.add_argument("--conf", action="append", metavar="KEY=VALUE", help="any Spark setting; repeatable")
    spark.add_argument("--spark-config", type=local_path, metavar="FILE",
                       help="YAML/JSON: master, shuffle_partitions, driver_memory, conf")
    spark.add_argument("--from-spark-submit", action="store_true", help=argparse.SUPPRESS)


SPARK_OPTIONS = ("master", "conf", "spark_config", "from_spark_submit", "shuffle_partitions", "driver_memory")


def refuse_spark_options(args: argparse.Namespace) -> None:
    """Spark settings given to a command told to run without Spark (--engine polars or pandas)."""
    if args.engine != "spark" and any(getattr(args, o) for o in SPARK_OPTIONS):
        raise LongseqError("Spark settings (--master, --conf, --spark-config, ...) apply to --engine spark only")


def spark_config(args: argparse.Namespace):  # -> etl.spark_session.SparkConfig
    from longseq.etl.spark_session import SparkConfig

    config = SparkConfig.from_file(args.spark_config) if args.spark_config else SparkConfig()
    if args.from_spark_submit:
        config.master = None
    elif args.master:
        config.master = args.master
    if args.shuffle_partitions:
        config.shuffle_partitions = args.shuffle_partitions
    if args.driver_memory:
        config.driver_memory = args.driver_memory
    for item in args.conf or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LongseqError(f"--conf expects KEY=VALUE, got {item!r}")
        config.conf[key] = value
    return config
