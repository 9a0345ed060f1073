"""Swapping a built day into place atomically: temp dirs renamed, then the report written.

A run killed before the report leaves the day unbuilt, so the next day refuses to build
on it and re-running the day replaces everything.
"""

from __future__ import annotations

import datetime as dt
import uuid

from dataset.layout import KINDS, BuildLayout
from dataset.storage import Storage


def new_token() -> str:
    return uuid.uuid4().hex[:12]


def commit_day(storage: Storage, layout: BuildLayout, day: dt.date, temps: dict[str, str], report_json: str) -> None:
    """Swap a day's finished temp dirs into place, then write its report.

    The day is unpublished first and its old report goes next, so that a crash in between
    leaves the day unbuilt (the next day refuses to build on it, validation refuses it):
    its directories may then mix old and new outputs, each complete, until the day is re-run.
    """
    storage.delete(layout.manifest(day))
    storage.delete(layout.report(day))
    for kind in KINDS:
        final = layout.dir(kind, day)
        _normalise_part_names(storage, temps[kind])
        storage.delete(final)
        storage.rename(temps[kind], final)
    storage.write_text(layout.report(day), report_json)


def _normalise_part_names(storage: Storage, directory: str) -> None:
    """part-00000-<uuid>-c000.zstd.parquet -> part-00000.parquet: re-runs give the same names."""
    parts = [n for n in storage.list_names(directory) if n.endswith(".parquet")]
    for i, name in enumerate(parts):
        target = f"part-{i:05d}.parquet"
        if name != target:
            storage.rename(f"{directory}/{name}", f"{directory}/{target}")
    for name in storage.list_names(directory):  # Spark's .crc checksums would no longer match
        if name.endswith(".crc"):
            storage.delete(f"{directory}/{name}")
