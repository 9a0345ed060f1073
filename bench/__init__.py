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
    "generate": _lazy("bench.generate_throughput"),
    "signal": _lazy("bench.history_signal"),
    "build": _lazy("bench.build_throughput"),
    "layout": _lazy("bench.request_layout_bytes"),
    "write-options": _lazy("bench.records_write_options"),
    "reader": _lazy("bench.reader_throughput"),
    "publish-layout": _lazy("bench.publish_layout"),
    "model": _lazy("bench.model_throughput"),
    "quality": _lazy("bench.quality"),
    "long-history": _lazy("bench.long_history"),
    "extrapolation": _lazy("bench.extrapolation"),
    "gpu": _lazy("bench.gpu"),
    "spec-cost": _lazy("bench.spec_cost"),
    "stream": _lazy("bench.stream"),
}
