"""The published days of a build's output directory, as readers see them.

    DATA/published/ds=YYYY-MM-DD/manifest.json

`longseq publish` (etl/gates/publish.py) writes one manifest a day, last, by a rename: a day is
readable whole or not at all. A manifest names each Parquet file of the day's request
records with its size, SHA-256, rows and row groups, and the build run it came from.
Readers ask for a date range (`published_files`): every day in it must be published, and
its files must have the sizes the manifest says. Each manifest names the dataset spec of
its records, which must be DATA's (DATA/spec.yaml) and the one the reader expects. The trainer's readers then check the
files' bytes against the manifest when they open them (`verify_published`): once per
process and file, in threads, cached by (path, size, mtime).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from longseq.dataset.layout import BuildLayout, StreamLayout, day_range
from longseq.dataset.spec_record import differences_clause, recorded_spec, spec_summary
from longseq.dataset.storage import Storage, absolute, file_url, is_local, local_path, storage_for
from longseq.schemas.contracts import DEFAULT_SPEC, PARTITION_COLUMN
from longseq.schemas.errors import LongseqError, MissingPrerequisiteError
from longseq.schemas.spec import DatasetSpec, SpecError, resolve_spec

__all__ = ["PinnedFiles", "PublishedDataError", "PublishedFile", "built_spec_summary", "file_url", "published_days", "published_files",
           "published_hour_files", "published_hours", "verify_published"]


class PublishedDataError(LongseqError):
    """Published records that are missing or differ from their manifest."""


@dataclass(frozen=True)
class PublishedFile:
    url: str  # what readers open: file:///abs/path (percent-escaped) or the cluster URI
    ds: str
    bytes: int
    rows: int
    row_groups: int
    sha256: str


def published_days(data: str, storage: Storage | None = None) -> list[dt.date]:
    """Every published day of a build's output directory, oldest first."""
    data = absolute(data).rstrip("/")
    storage = storage or storage_for(data, arrow=True)
    layout = BuildLayout(data)
    days = [dt.date.fromisoformat(n.split("=", 1)[1]) for n in storage.list_names(f"{data}/published") if n.startswith("ds=")]
    return sorted(d for d in days if storage.exists(layout.manifest(d)))


def _republish(data: str, day: dt.date) -> str:
    return f"publish it again (`longseq publish --data '{data}' --start {day}`)"


def built_spec_summary(record: dict) -> dict:
    """The {"name", "fingerprint"} of the spec a build report or a manifest records; one
    written before specs existed has none, and was made with the default spec."""
    return record.get("spec") or spec_summary(DEFAULT_SPEC)


def _read_manifest(storage: Storage, layout: BuildLayout, day: dt.date) -> dict:
    return read_manifest(storage, layout.manifest(day), f"publish ds={day} again (`longseq publish --data "
                                                       f"'{layout.out}' --start {day}`)")


def read_manifest(storage: Storage, path: str, remedy: str = "publish the day again") -> dict:
    """A manifest's JSON, or one line naming the file if it is not one (edited by hand, a bad
    disk: publishing writes them whole, by a rename)."""
    try:
        manifest = json.loads(storage.read_text(path))
    except ValueError as e:
        raise PublishedDataError(f"{path} is not a readable manifest ({type(e).__name__}: {e}); {remedy}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise PublishedDataError(f"{path} is not a readable manifest (no list of files); {remedy}")
    return manifest


def _manifest_files(manifest: dict, layout: BuildLayout, day: dt.date) -> list[dict]:
    """The manifest's file entries; a manifest from before checksums is refused: re-publishing
    it (which reads the bytes, rebuilds nothing) records them."""
    files = manifest["files"]
    if any("sha256" not in f for f in files):
        raise PublishedDataError(f"ds={day} in {layout.out} was published without checksums, so its bytes cannot be "
                                 f"checked: {_republish(layout.out, day)}")
    return files


def _check_against_build(storage: Storage, layout: BuildLayout, day: dt.date, manifest: dict) -> None:
    """The manifest lists the files the day's build wrote, each once, with the build report's
    checksums, and its rows add up to the requests the build counted: an entry removed, added
    or repeated by hand would drop the day or read it twice."""
    path = layout.report(day)
    redo = f"validate and {_republish(layout.out, day)}"
    if not storage.exists(path):
        raise PublishedDataError(f"ds={day} is published in {layout.out} but has no build report ({path}): rebuild the "
                                 f"day, then {redo}")
    text = storage.read_text(path)
    if manifest.get("build_digest") not in (None, layout.digest_of(text)):
        raise PublishedDataError(f"the manifest of ds={day} in {layout.out} names another build of the day than the "
                                 f"one there: {redo}")
    report = json.loads(text)
    entries = manifest["files"]
    names = [f.get("name") for f in entries]
    built = report.get("checksums", {}).get("requests")  # None: built before checksums were recorded
    repeated = sorted({n for n in names if names.count(n) > 1})
    listed = {f.get("name"): f.get("sha256") for f in entries}
    rows = sum(int(f.get("rows", 0)) for f in entries)
    if repeated or (built is not None and listed != built) or rows != report.get("requests", rows):
        problem = (f"lists {', '.join(repeated)} more than once" if repeated else
                   f"lists {rows:,} requests, its build wrote {report['requests']:,}" if built is None or listed == built
                   else f"lists {', '.join(sorted(listed)) or 'no file'}, its build wrote "
                        f"{', '.join(sorted(built)) or 'no file'} (or other checksums)")
        raise PublishedDataError(f"the manifest of ds={day} in {layout.out} does not match its build report: it "
                                 f"{problem}; {redo}")


def _described(summary: dict) -> str:
    return f"{summary['name']!r} ({summary['fingerprint']})"


def _check_manifest_spec(storage: Storage, manifest: dict, layout: BuildLayout, day: dt.date, recorded: DatasetSpec,
                         wanted: DatasetSpec | None) -> None:
    """The day's records are of DATA's spec, and of the one the reader expects."""
    published = built_spec_summary(manifest)
    if published["fingerprint"] != recorded.fingerprint:
        raise PublishedDataError(
            f"ds={day} in {layout.out} was published with dataset spec {_described(published)}, but {layout.out} "
            f"holds spec {_described(spec_summary(recorded))}{differences_clause(published, recorded)}: rebuild, "
            f"validate and publish ds={day} again")
    if wanted is not None:
        _check_read_spec(storage, manifest, layout, day, wanted)


def _check_read_spec(storage: Storage, manifest: dict, layout: BuildLayout, day: dt.date, wanted: DatasetSpec) -> None:
    published = built_spec_summary(manifest)
    if wanted.fingerprint != published["fingerprint"]:
        try:  # the manifest has the fingerprint alone, DATA/spec.yaml the whole spec: the fields it differs in
            known: tuple[DatasetSpec, ...] = (recorded_spec(storage, layout.out),)
        except SpecError:  # unreadable: the fingerprints still tell the two apart
            known = ()
        raise SpecError(
            f"ds={day} in {layout.out} holds records of dataset spec {_described(published)}, not of the expected "
            f"{_described(spec_summary(wanted))}{differences_clause(published, wanted, *known)}: read it with the "
            f"spec it was built with")


def published_files(data: str, start: dt.date, end: dt.date | None = None, storage: Storage | None = None,
                    spec: DatasetSpec | str | None = None) -> list[PublishedFile]:
    """The files of the published days in [start, end], oldest day first, each checked to be
    there with the size its manifest recorded, and of DATA's dataset spec (and of `spec`,
    the one the caller expects, when given). Any unpublished day is an error."""
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
    recorded, wanted = recorded_spec(storage, data), None if spec is None else resolve_spec(spec)
    files = []
    for day in days:
        manifest = _read_manifest(storage, layout, day)
        _check_manifest_spec(storage, manifest, layout, day, recorded, wanted)
        entries = _manifest_files(manifest, layout, day)
        _check_against_build(storage, layout, day, manifest)
        for f in entries:
            path = f"{layout.dir('requests', day)}/{f['name']}"
            if not storage.exists(path):
                raise PublishedDataError(f"published file {path} is missing; rebuild, validate and publish ds={day} again")
            size = storage.size(path)
            if size != f["bytes"]:
                raise PublishedDataError(
                    f"published file {path} has {size:,} bytes, its manifest says {f['bytes']:,}: it changed or is "
                    f"truncated; rebuild, validate and publish ds={day} again")
            files.append(PublishedFile(file_url(path), day.isoformat(), size, f["rows"], f["row_groups"], f["sha256"]))
    return files


# ---------------------------------------------------------------- the stream's hours


def published_hours(data: str, storage: Storage | None = None) -> list[tuple[dt.date, int]]:
    """Every hour the stream published in a build's output directory (etl/stream/hours.py), in order."""
    data = absolute(data).rstrip("/")
    storage = storage or storage_for(data, arrow=True)
    layout, found = BuildLayout(data), []
    for ds in storage.list_names(f"{data}/published"):
        if not ds.startswith(f"{PARTITION_COLUMN}="):
            continue
        day = dt.date.fromisoformat(ds.split("=", 1)[1])
        for name in storage.list_names(f"{data}/published/{ds}"):
            if name.startswith("hour=") and storage.exists(layout.hour_manifest(day, int(name[5:]))):
                found.append((day, int(name[5:])))
    return sorted(found)


def published_hour_files(data: str, day: dt.date, hour: int, storage: Storage | None = None,
                         spec: DatasetSpec | str | None = None) -> list[PublishedFile]:
    """The files of one published hour (none for an hour without requests), checked to be there
    with their recorded sizes, of DATA's dataset spec and of `spec` when given."""
    data = absolute(data).rstrip("/")
    storage = storage or storage_for(data, arrow=True)
    layout = BuildLayout(data)
    path = layout.hour_manifest(day, hour)
    if not storage.exists(path):
        raise MissingPrerequisiteError(f"ds={day} hour={hour:02d} is not published in {data}")
    manifest = read_manifest(storage, path)
    _check_manifest_spec(storage, manifest, layout, day, recorded_spec(storage, data),
                         None if spec is None else resolve_spec(spec))
    _check_against_hour_record(storage, data, day, hour, manifest)
    files = []
    for f in manifest["files"]:
        file_path = f"{data}/{f['name']}"
        if not storage.exists(file_path) or storage.size(file_path) != f["bytes"]:
            raise PublishedDataError(f"published file {file_path} is missing or changed since ds={day} hour={hour:02d} "
                                     f"was published")
        files.append(PublishedFile(file_url(file_path), day.isoformat(), f["bytes"], f["rows"], f["row_groups"],
                                   f["sha256"]))
    return files


def _check_against_hour_record(storage: Storage, data: str, day: dt.date, hour: int, manifest: dict) -> None:
    """An hour's manifest lists the one file its hour record (written when the hour closed)
    names, with its checksum and rows, or none for an hour without requests."""
    stream = StreamLayout(data)
    path = stream.hour_record(day, hour)
    where = f"ds={day} hour={hour:02d} in {data}"
    if not storage.exists(path):
        raise PublishedDataError(f"{where} is published but its hour record {path} is missing; the stream's output "
                                 f"was changed by hand")
    record = json.loads(storage.read_text(path))
    expected = [] if not record["rows"] else [
        (f"{stream.hour_dir(day, hour)}/{record['file']}", record["sha256"], record["rows"])]
    listed = [(f"{data}/{f.get('name')}", f.get("sha256"), f.get("rows")) for f in manifest["files"]]
    if listed != expected:
        raise PublishedDataError(f"the manifest of {where} lists {len(listed)} file(s) that are not the hour's as it "
                                 f"closed ({len(expected)} file(s), {record['rows']:,} requests, in {path}); the "
                                 f"stream's output was changed by hand")


# ---------------------------------------------------------------- checking bytes

# (path, size, mtime_ns) -> sha256 of the bytes: each file is hashed once per process
_HASHED: dict[tuple[str, int, int], str] = {}
_HASHED_LOCK = threading.Lock()


def _storage_path(url: str) -> str:
    """The path Storage takes for a reader's URL: local paths unescaped, URIs as they are."""
    return local_path(url) if url.startswith("file://") or is_local(url) else url


def _published_entry(path: str) -> tuple[BuildLayout, dt.date, str, str] | None:
    """(layout, day, its manifest, the file's name there) if path lies in a published
    directory: DATA/requests/ds=YYYY-MM-DD/ (a day) or DATA/stream/hours/ds=YYYY-MM-DD/hour=HH/
    (an hour of the stream, named in its manifest by its path under DATA); else None."""
    parts = path.split("/")
    hour_file = len(parts) >= 5 and parts[-5:-3] == ["stream", "hours"] and parts[-2].startswith("hour=")
    ds = parts[-3] if hour_file else (parts[-2] if len(parts) >= 3 else "")
    if not ds.startswith(f"{PARTITION_COLUMN}=") or not (hour_file or parts[-3:-2] == ["requests"]):
        return None
    try:
        day = dt.date.fromisoformat(ds.split("=", 1)[1])
        hour = int(parts[-2].split("=", 1)[1]) if hour_file else None
    except ValueError:
        return None
    if hour_file:
        layout = BuildLayout("/".join(parts[:-5]))
        return layout, day, layout.hour_manifest(day, hour), "/".join(parts[-5:])
    layout = BuildLayout("/".join(parts[:-3]))
    return layout, day, layout.manifest(day), parts[-1]


def verify_published(urls: Sequence[str], spec: DatasetSpec | None = None) -> int:
    """Check that each published file among urls has the bytes its manifest records, and
    that the manifest's dataset spec builds the records of `spec` (the reader's; the default
    spec when None); return how many bytes were hashed (0 when all were checked before in
    this process).

    A file in DATA/requests/ds=D/ is checked against DATA/published/ds=D/manifest.json;
    files outside a published day (a test's file, an unpublished build) are not checked:
    `published_files` is what vouches for a day. Files are hashed in threads (hashlib
    releases the GIL), each once per process unless its size or mtime changes."""
    todo: list[tuple[Storage, str, dict, dt.date]] = []
    manifests: dict[tuple[str, str], dict[str, dict] | None] = {}
    for url in urls:
        path = _storage_path(url)
        entry = _published_entry(path)
        if entry is None:
            continue
        layout, day, manifest_path, name = entry
        storage = storage_for(path, arrow=True)
        key = (layout.out, manifest_path)
        if key not in manifests:
            exists = storage.exists(manifest_path)
            manifest = read_manifest(storage, manifest_path) if exists else None
            if manifest is not None:
                _check_read_spec(storage, manifest, layout, day, spec or DEFAULT_SPEC)
            manifests[key] = None if manifest is None else {f["name"]: f for f in _manifest_files(manifest, layout, day)}
        expected = (manifests[key] or {}).get(name)
        if expected is not None:
            todo.append((storage, path, expected, day))

    def check(item: tuple[Storage, str, dict, dt.date]) -> int:
        storage, path, expected, day = item
        return _check_bytes(storage, path, expected["bytes"], expected["sha256"], day)[0]

    return sum(_in_threads(check, todo))


def _in_threads(fn, items: list) -> list:
    """fn over items, in threads when there are several (hashlib releases the GIL)."""
    if len(items) <= 1:
        return list(map(fn, items))
    with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1, 8)) as pool:
        return list(pool.map(fn, items))


def _check_bytes(storage: Storage, path: str, size: int, sha256: str, day: str | dt.date) -> tuple[int, tuple[int, int]]:
    """Check that path holds `size` bytes with this SHA-256; return (bytes hashed now: 0 when
    this process hashed it before, unchanged; its (size, mtime) stamp)."""
    try:
        stamp = storage.stamp(path)
    except OSError:
        raise PublishedDataError(f"published file {path} is missing; rebuild, validate and publish ds={day} again") from None
    if stamp[0] != size:
        raise PublishedDataError(f"published file {path} has {stamp[0]:,} bytes, its manifest says {size:,}: "
                                 f"it changed or is truncated; rebuild, validate and publish ds={day} again")
    with _HASHED_LOCK:
        digest = _HASHED.get((path, *stamp))
    hashed = 0
    if digest is None:
        digest, hashed = storage.checksum(path), stamp[0]
        with _HASHED_LOCK:
            _HASHED[(path, *stamp)] = digest
    if digest != sha256:
        raise PublishedDataError(
            f"published file {path} does not match its manifest (sha256 {digest[:12]}..., manifest "
            f"{sha256[:12]}...): its bytes changed after it was built; rebuild, validate and publish ds={day} again")
    return hashed, stamp


class PinnedFiles:
    """The published files a run trains on, held to the bytes their manifests vouched for
    when the run listed them.

    A day can be rebuilt, unpublished or published again while a run reads it, and a reader
    opens its files again each epoch. Pinning hashes each file against the checksum it was
    listed with (once per process) and keeps its (size, mtime); `check`, before each
    checkpoint and each epoch, stats them again: a file that changed or went stops the run,
    so that no checkpoint holds weights trained on bytes no manifest vouched for."""

    def __init__(self, files: Sequence[PublishedFile]):
        self._files = [(storage_for(_storage_path(f.url), arrow=True), _storage_path(f.url), f) for f in files]
        self._stamps = _in_threads(self._pin, self._files)

    @staticmethod
    def _pin(item: tuple[Storage, str, PublishedFile]) -> tuple[int, int]:
        storage, path, f = item
        return _check_bytes(storage, path, f.bytes, f.sha256, f.ds)[1]

    def check(self) -> None:
        for i, (storage, path, f) in enumerate(self._files):
            try:
                now = storage.stamp(path)
            except OSError:
                now = None
            if now == self._stamps[i]:
                continue
            try:  # rewritten with the same bytes (a copy put back): still what the manifest vouched for
                self._stamps[i] = self._pin((storage, path, f))
            except PublishedDataError:
                raise PublishedDataError(
                    f"published file {path} {'was removed' if now is None else 'changed'} while this run read it "
                    f"(ds={f.ds} was rebuilt or replaced): the run stops before it saves weights trained on bytes "
                    f"its manifest did not vouch for; once ds={f.ds} is published again, run the same command (a "
                    f"resume says how the data differs)") from None
