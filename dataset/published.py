"""The published days of a build's output directory, as readers see them.

    DATA/published/ds=YYYY-MM-DD/manifest.json

`longseq publish` (etl/publish.py) writes one manifest a day, last, by a rename: a day is
readable whole or not at all. A manifest names each Parquet file of the day's request
records with its size, rows and row groups, and the build run it came from. Readers ask
for a date range (`published_files`): every day in it must be published, and its files
must be as the manifest says.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from dataset.layout import BuildLayout, day_range
from dataset.storage import Storage, absolute, is_local, storage_for
from schemas.errors import LongseqError, MissingPrerequisiteError


class PublishedDataError(LongseqError):
    """Published records that are missing or differ from their manifest."""


@dataclass(frozen=True)
class PublishedFile:
    url: str  # what readers open: file:///abs/path or the cluster URI
    ds: str
    bytes: int
    rows: int
    row_groups: int


def file_url(path: str) -> str:
    return f"file://{path}" if is_local(path) else path


def published_days(data: str, storage: Storage | None = None) -> list[dt.date]:
    """Every published day of a build's output directory, oldest first."""
    data = absolute(data).rstrip("/")
    storage = storage or storage_for(data, arrow=True)
    layout = BuildLayout(data)
    days = [dt.date.fromisoformat(n.split("=", 1)[1]) for n in storage.list_names(f"{data}/published") if n.startswith("ds=")]
    return sorted(d for d in days if storage.exists(layout.manifest(d)))


def published_files(data: str, start: dt.date, end: dt.date | None = None, storage: Storage | None = None) -> list[PublishedFile]:
    """The files of the published days in [start, end], oldest day first, each checked to be
    there with the size its manifest recorded. Any unpublished day is an error."""
    data = absolute(data).rstrip("/")
    storage = storage or storage_for(data, arrow=True)
    layout = BuildLayout(data)
    days = day_range(start, end)
    missing = [d for d in days if not storage.exists(layout.manifest(d))]
    if missing:
        shown = ", ".join(str(d) for d in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise MissingPrerequisiteError(
            f"{len(missing)} day(s) of {start}..{end or start} are not published in {data}: {shown}. "
            f"Validate and publish them (`longseq publish --data {data} --start ...`)")
    files = []
    for day in days:
        manifest = json.loads(storage.read_text(layout.manifest(day)))
        for f in manifest["files"]:
            path = f"{layout.dir('requests', day)}/{f['name']}"
            if not storage.exists(path):
                raise PublishedDataError(f"published file {path} is missing; rebuild, validate and publish ds={day} again")
            size = storage.size(path)
            if size != f["bytes"]:
                raise PublishedDataError(
                    f"published file {path} has {size:,} bytes, its manifest says {f['bytes']:,}: it changed or is "
                    f"truncated; rebuild, validate and publish ds={day} again")
            files.append(PublishedFile(file_url(path), day.isoformat(), size, f["rows"], f["row_groups"]))
    return files
