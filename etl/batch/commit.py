"""Swapping a built day into place atomically: temp dirs renamed, then the report written.

A run killed before the report leaves the day unbuilt, so the next day refuses to build
on it and re-running the day replaces everything. A rebuilt day makes the days built on
its previous state stale (`mark_later_days_stale`); temp dirs a killed run left behind are
removed by the next build, under the output's lock (`remove_leftover_temps`).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

from longseq.dataset.layout import KINDS, BuildLayout
from longseq.dataset.storage import Storage


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
    storage.delete(layout.stale_marker(day))  # only after the report: a stale day never looks current
    for kind in KINDS:
        final = layout.dir(kind, day)
        _normalise_part_names(storage, temps[kind])
        storage.delete(final)
        storage.rename(temps[kind], final)
    storage.write_text(layout.report(day), report_json)


def committed_part_names(storage: Storage, directory: str) -> dict[str, str]:
    """Each Parquet part of a temp dir -> the name commit_day gives it:
    part-00000-<uuid>-c000.zstd.parquet -> part-00000.parquet, so that re-runs give the same names."""
    parts = [n for n in storage.list_names(directory) if n.endswith(".parquet")]
    return {name: f"part-{i:05d}.parquet" for i, name in enumerate(parts)}


def part_checksums(storage: Storage, directory: str) -> dict[str, str]:
    """The SHA-256 of each Parquet part of a temp dir, by its name once committed: the build
    report records them before the commit, and publishing refuses bytes that differ."""
    return {final: storage.checksum(f"{directory}/{name}") for name, final in committed_part_names(storage, directory).items()}


def _normalise_part_names(storage: Storage, directory: str) -> None:
    for name, target in committed_part_names(storage, directory).items():
        if name != target:
            storage.rename(f"{directory}/{name}", f"{directory}/{target}")
    for name in storage.list_names(directory):  # Spark's .crc checksums would no longer match
        if name.endswith(".crc"):
            storage.delete(f"{directory}/{name}")


def later_chain(storage: Storage, layout: BuildLayout, day: dt.date) -> list[dt.date]:
    """The built days that were built, one on the other, on the state after `day`: day+1,
    day+2, ... while each has a report (stale or not) and was not a cold start."""
    chain = []
    d = day + dt.timedelta(days=1)
    while storage.exists(layout.report(d)):
        if json.loads(storage.read_text(layout.report(d))).get("previous_state") is None:
            break  # a cold start: built on no earlier day
        chain.append(d)
        d += dt.timedelta(days=1)
    return chain


def mark_later_days_stale(storage: Storage, layout: BuildLayout, day: dt.date, run_id: str) -> list[dt.date]:
    """Before `day`'s rebuild (run `run_id`) is committed: mark the days built on its current
    state stale and unpublish them; return them (those already stale keep their first marker).

    Before, not after: a crash at any point then leaves at worst days marked stale that were
    not (yet) made so, never a day built on the old state that looks current. Each marker goes
    before its day's manifest is removed; a crash in between leaves a stale day still
    published, which the next build unpublishes (`unpublish_stale_days`).
    """
    chain = later_chain(storage, layout, day)
    for d in chain:
        if not storage.exists(layout.stale_marker(d)):
            report = json.loads(storage.read_text(layout.report(d)))
            storage.write_text(layout.stale_marker(d), json.dumps({
                "ds": d.isoformat(),
                "run_id": report.get("run_id"),  # the build that is stale
                "rebuilt_day": day.isoformat(),
                "rebuilt_run_id": run_id,
                "marked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }, indent=2, sort_keys=True))
        storage.delete(layout.manifest(d))
    return chain


def unpublish_stale_days(storage: Storage, layout: BuildLayout) -> list[dt.date]:
    """Remove any manifest a stale day still has (a crash inside mark_later_days_stale)."""
    found = [d for d in layout.stale_days(storage) if storage.exists(layout.manifest(d))]
    for d in found:
        storage.delete(layout.manifest(d))
    return found


def remove_leftover_temps(storage: Storage, layout: BuildLayout) -> list[str]:
    """Delete the temp dirs of killed builds. Only safe while holding the output's lock:
    otherwise they may belong to a build that is running."""
    found = layout.leftover_temps(storage)
    for path in found:
        storage.delete(path)
    return found
