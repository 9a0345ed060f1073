"""Benchmarks. Each writes its results as a markdown table for docs/BENCHMARKS.md.

`longseq bench NAME [ARGS]` runs BENCHMARKS[NAME](ARGS); modules are imported on use.
"""

from __future__ import annotations

import importlib
from typing import Callable, Sequence


def _lazy(module: str) -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        return importlib.import_module(module).main(list(argv))

    return run


BENCHMARKS: dict[str, Callable[[Sequence[str]], int]] = {
    "generate": _lazy("longseq.bench.generate_throughput"),
    "signal": _lazy("longseq.bench.history_signal"),
    "build": _lazy("longseq.bench.build_throughput"),
    "layout": _lazy("longseq.bench.request_layout_bytes"),
    "write-options": _lazy("longseq.bench.records_write_options"),
    "reader": _lazy("longseq.bench.reader_throughput"),
    "publish-layout": _lazy("longseq.bench.publish_layout"),
    "model": _lazy("longseq.bench.model_throughput"),
    "quality": _lazy("longseq.bench.quality"),
    "long-history": _lazy("longseq.bench.long_history"),
    "extrapolation": _lazy("longseq.bench.extrapolation"),
    "gpu": _lazy("longseq.bench.gpu"),
    "spec-cost": _lazy("longseq.bench.spec_cost"),
    "stream": _lazy("longseq.bench.stream"),
}
