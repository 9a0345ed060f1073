"""`longseq bench NAME [ARGS]`: this package's subcommand, added to the command line through
the `longseq.commands` entry point (pyproject.toml), so that the command line, which sits
below the benchmarks, never imports them."""

from __future__ import annotations

import argparse

from longseq.bench import BENCHMARKS, run_benchmark
from longseq.cli.arguments import Command


def bench_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = "benchmarks:\n" + "\n".join(f"  {name:<15} {what}" for name, (_, what) in sorted(BENCHMARKS.items()))
    p.add_argument("name", choices=sorted(BENCHMARKS), metavar="NAME", help="which benchmark (listed below)")
    p.add_argument("extra", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="the benchmark's flags (see `longseq bench NAME --help`)")


def run_bench(args: argparse.Namespace) -> int:
    return run_benchmark(args.name, args.extra)


BENCH = Command("bench", "Run a benchmark from bench/ and print its results (docs/BENCHMARKS.md).", bench_arguments, run_bench)
