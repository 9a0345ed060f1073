"""Durations on the command line and in reports: "3d", "36h", "90m", "45s", "250ms" <-> milliseconds."""

from __future__ import annotations

import re

from longseq.schemas.errors import LongseqError

UNIT_MS: dict[str, int] = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|d|h|m|s)\s*$")


def parse_duration(text: str) -> int:
    """Milliseconds from "<number><unit>", unit one of d, h, m, s, ms; a one-line error otherwise."""
    match = _DURATION.match(str(text))
    if not match:
        raise LongseqError(f"{text!r} is not a duration: write a number and a unit, e.g. 3d, 36h, 90m, 45s, 250ms")
    return int(round(float(match.group(1)) * UNIT_MS[match.group(2)]))


def format_duration(ms: int) -> str:
    """The largest unit that writes `ms` exactly: 259200000 -> "3d", 5400000 -> "90m"."""
    for unit, size in UNIT_MS.items():
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"  # pragma: no cover - "ms" always divides
