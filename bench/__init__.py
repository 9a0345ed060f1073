"""Benchmarks. Each writes its results as a markdown table for docs/BENCHMARKS.md.

`longseq bench NAME [ARGS]` imports only bench/MODULE of that NAME, parses ARGS with the
flags its `arguments(parser)` adds (the command line's vocabulary, cli/arguments.py) and
runs its `main`.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Callable, Iterable, Sequence

# name -> (module, what it measures, in one line)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "generate": ("generate_throughput", "generator throughput and memory"),
    "signal": ("history_signal", "how much history-length signal generated logs carry (model-free)"),
    "build": ("build_throughput", "the Spark build against a plain read + sort + write of the same data"),
    "layout": ("request_layout_bytes", "request records against a pointwise layout, in bytes"),
    "write-options": ("records_write_options", "Parquet write options for the records"),
    "reader": ("reader_throughput", "reader throughput against a pyarrow floor"),
    "publish-layout": ("publish_layout", "plain Parquet against Petastorm's materialize_dataset"),
    "model": ("model_throughput", "STCA against self-attention, request level batching, scoring at 10k"),
    "train-floor": ("train_floor", "the CPU training step against its matmul floor (model FLOPs / GEMM rate)"),
    "quality": ("quality", "length scaling, baselines, ablations and MovieLens under a validation/test protocol"),
    "long-history": ("long_history", "whether a model uses 10k-event histories, and what makes it"),
    "extrapolation": ("extrapolation", "short random-length training windows scored at 10k"),
    "buckets": ("length_buckets", "whether length buckets in the reader cost quality (paired by seed)"),
    "gpu": ("gpu", "the GPU trainer's checks and goals in one command"),
    "spec-cost": ("spec_cost", "what the dataset spec costs on the default, against an earlier commit"),
    "stream": ("stream", "the stream against the daily build: cost, latency, state"),
    "compact": ("compact_layout", "the compact layout against the request layout: values, bytes, build, reader"),
    "validate": ("validation_speed", "validation on GX's pandas engine against its Spark engine, on small real days"),
}


def bench_module(name: str):
    return importlib.import_module(f"longseq.bench.{BENCHMARKS[name][0]}")


def bench_parser(name: str, doc: str | None, arguments: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """The parser of `longseq bench NAME`: the command line's (one-line usage errors), with the
    benchmark's flags."""
    from longseq.cli.arguments import HelpFormatter, Parser

    parser = Parser(prog=f"longseq bench {name}", description=(doc or "").split("\n")[0], formatter_class=HelpFormatter)
    arguments(parser)
    return parser


def names(ap: argparse.ArgumentParser, flag: str, values: str | Iterable[str] | None, known: Iterable[str]) -> list[str]:
    """The names given to a comma-separated flag (a string, or the list its parser made); an
    unknown one stops the bench with a one-line usage error naming the flag and the choices."""
    chosen = values.split(",") if isinstance(values, str) else list(values or ())
    known = list(known)
    unknown = [n for n in chosen if n not in known]
    if unknown:
        ap.error(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    return chosen


def run_benchmark(name: str, argv: Sequence[str]) -> int:
    return bench_module(name).main(list(argv))
