"""What every subcommand shares: the parser, argument types, and the options that mean the
same thing everywhere.

    --raw DIR          raw impression logs (contract 1): written by generate/adapt, read by build
    --data DIR         a build's output directory: written by build, read by every later stage
    --run-dir DIR      a training run: written by train, read by evaluate and score
    --start/--end D    the days a command works on (--end defaults to --start)
    --device D         auto (a GPU if there is one), cpu, cuda, cuda:N
    --spark-config F   Spark settings; each stage's own settings file is --<stage>-config
    --spec FILE        the dataset spec (docs/SPEC.md): given to generate and to the first build
                       of an output; later stages read the one the output records (DATA/spec.yaml)

Directories may be local paths or cluster URIs (hdfs://, s3a://); files are local paths.
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
from typing import Any, Callable, Sequence
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
    """argparse, but a usage error is one line (plus a hint), not the whole usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Help that lists an option by its current spelling only (old spellings still parse)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        old = getattr(action, "deprecated", ())
        if not old:
            return super()._format_action_invocation(action)
        current = argparse.Action([s for s in action.option_strings if s not in old], action.dest,
                                  nargs=action.nargs, metavar=action.metavar)
        return super()._format_action_invocation(current)


class Store(argparse.Action):
    """Store a value; an old spelling (`deprecated`) still works and says what replaces it."""

    def __init__(self, option_strings: list[str], dest: str, deprecated: Sequence[str] = (), **kw: Any):
        super().__init__(option_strings, dest, **kw)
        self.deprecated = tuple(deprecated)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if option_string in self.deprecated:
            current = next(s for s in self.option_strings if s not in self.deprecated)
            print(f"{parser.prog}: warning: {option_string} is deprecated; use {current}", file=sys.stderr)
        setattr(namespace, self.dest, values)


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


def add_raw(p: argparse.ArgumentParser, help: str, required: bool = True, deprecated: Sequence[str] = ()) -> None:
    p.add_argument("--raw", *deprecated, action=Store, deprecated=deprecated, type=location, required=required,
                   metavar="DIR", help=help)


def add_data(p: argparse.ArgumentParser, help: str = "the build's output directory (--data of `longseq build`)",
             deprecated: Sequence[str] = ()) -> None:
    p.add_argument("--data", *deprecated, action=Store, deprecated=deprecated, type=location, required=True,
                   metavar="DIR", help=help)


def add_days(p: argparse.ArgumentParser, what: str, deprecated_start: Sequence[str] = ()) -> None:
    p.add_argument("--start", *deprecated_start, action=Store, deprecated=deprecated_start, type=date, required=True,
                   metavar="YYYY-MM-DD", help=f"first day to {what}")
    p.add_argument("--end", type=date, metavar="YYYY-MM-DD", help=f"last day to {what} (default: --start)")


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
    """--<stage>-config FILE; the old spelling --config still works."""
    p.add_argument(f"--{stage}-config", "--config", action=Store, deprecated=("--config",), type=local_path,
                   dest="config", metavar="FILE", help=help)


def add_spark(p: argparse.ArgumentParser, title: str = "Spark settings") -> None:
    from longseq.etl.spark_session import SparkConfig  # no pyspark until a session starts

    default = SparkConfig()
    spark = p.add_argument_group(title)
    spark.add_argument("--master", help=f"Spark master (default {default.master})")
    spark.add_argument("--shuffle-partitions", type=positive_int,
                       help=f"spark.sql.shuffle.partitions (default {default.shuffle_partitions})")
    spark.add_argument("--driver-memory", help=f"spark.driver.memory (default {default.driver_memory})")
    spark.add_argument("--conf", action="append", metavar="KEY=VALUE", help="any Spark setting; repeatable")
    spark.add_argument("--spark-config", type=local_path, metavar="FILE",
                       help="YAML/JSON: master, shuffle_partitions, driver_memory, conf")
    spark.add_argument("--from-spark-submit", action="store_true", help=argparse.SUPPRESS)


SPARK_OPTIONS = ("master", "conf", "spark_config", "from_spark_submit", "shuffle_partitions", "driver_memory")


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
