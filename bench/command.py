"""`longseq bench NAME [ARGS]`: this package's subcommand, added to the command line through
the `longseq.commands` entry point (pyproject.toml), so that the command line, which sits
below the benchmarks, never imports them."""

from __future__ import annotations

import argparse

from longseq.bench import BENCHMARKS
from longseq.cli.arguments import Command


def bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="arguments passed to the benchmark (see `longseq bench NAME --help`)")


def run_bench(args: argparse.Namespace) -> int:
    return BENCHMARKS[args.name](args.extra)


BENCH = Command("bench", "Run a benchmark from bench/ and print its results (docs/BENCHMARKS.md).", bench_arguments, run_bench)
