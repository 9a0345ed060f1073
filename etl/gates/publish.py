"""`longseq publish`: make validated days readable by the trainer, one atomic manifest a day.

    DATA/published/ds=YYYY-MM-DD/manifest.json   (read by dataset/published.py)

Publishing copies nothing. The build already wrote the records in the layout Petastorm's
`make_batch_reader` reads (plain Parquet, list columns, row groups of about 32 MB decoded); the
measurements behind choosing it over `materialize_dataset` + codecs are in docs/READER.md.
A day's manifest names each file with its size, SHA-256, rows and row groups, and the build
run it came from. It is written last, by a rename, so a reader sees a day whole or not at all.

Publishing hashes each file and refuses one whose bytes differ from the checksum the build
report recorded, or a day whose files are not the ones the build wrote. A report from
before checksums has none: the day is then published with the checksums of its bytes as
they are now (`"checksums_from": "publish"`), without rebuilding it.

Publishing refuses a day whose validation did not pass or is older than the day's build
(etl.gates.validation.require_publishable; an operator may override with a recorded reason), and,
override or not, a day built with another dataset spec than DATA's (DATA/spec.yaml). The
manifest records the spec's name and fingerprint; readers check it (dataset/published.py).
Rebuilding a day deletes its manifest (etl.batch.commit.commit_day): it must be validated and
published again.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Callable

from longseq.dataset.compact import row_group_requests
from longseq.dataset.layout import BuildLayout, day_range
from longseq.dataset.published import PublishedDataError
from longseq.dataset.spec_record import spec_for, spec_summary
from longseq.dataset.storage import Storage, absolute, checksums, open_input, storage_for
from longseq.schemas.contracts import REQUEST_LAYOUT, SUCCESS_MARKER, contracts_of
from longseq.schemas.errors import MissingPrerequisiteError
from longseq.schemas.spec import DatasetSpec


def records_footer(path: str) -> tuple[int, int, object]:
    """(requests, row groups, arrow schema) from a Parquet footer, local or remote. A file of
    user-day rows (the compact layout) holds as many requests as its hist_len lists hold
    values, which the footer counts per row group."""
    import pyarrow.parquet as pq

    with open_input(path) as f:
        meta = pq.ParquetFile(f).metadata
    return sum(row_group_requests(meta)), meta.num_row_groups, meta.schema.to_arrow_schema()


def _checked_checksums(storage: Storage, records: str, names: list[str], report: dict, day: dt.date) -> dict[str, str]:
    """The SHA-256 of each file, checked against the build report's (when it has them)."""
    actual = checksums(storage, records, names)
    built = report.get("checksums", {}).get("requests")
    if built is None:  # built before checksums were recorded
        return actual
    if sorted(built) != sorted(actual):
        raise PublishedDataError(
            f"the request files of ds={day} in {records} are not the ones its build wrote (on disk: "
            f"{', '.join(sorted(actual)) or 'none'}; built: {', '.join(sorted(built)) or 'none'}); rebuild the day")
    for name in names:
        if actual[name] != built[name]:
            raise PublishedDataError(
                f"{records}/{name} does not match its build report (sha256 {actual[name][:12]}..., built "
                f"{built[name][:12]}...): its bytes changed after it was built; rebuild and validate ds={day} again")
    return actual


def publish_day(out: str, day: dt.date, override_reason: str | None = None, storage: Storage | None = None,
                spec: DatasetSpec | str | None = None) -> dict:
    """Check that ds=day may be published, then write its manifest; return the manifest.
    `spec` (an object or its file), when given, must be DATA's."""
    from longseq.etl.gates.validation import check_built_spec, require_publishable
    from longseq.schemas.check import check_arrow_schema

    out = absolute(out).rstrip("/")
    storage = storage or storage_for(out, arrow=True)
    layout = BuildLayout(out)
    records = layout.dir("requests", day)
    if not layout.is_built(storage, day) or not storage.exists(f"{records}/{SUCCESS_MARKER}"):
        raise MissingPrerequisiteError(f"ds={day} is not built in {out}: run `longseq build` for it first")
    digest = layout.build_digest(storage, day)
    spec = spec_for(storage, out, spec)
    report = json.loads(storage.read_text(layout.report(day)))
    check_built_spec(report, spec, day, out, "publish")  # before the gate: no override publishes another spec
    require_publishable(out, day, override_reason, storage=storage)
    records_layout = report.get("layout", REQUEST_LAYOUT)
    contract = contracts_of(spec).records(records_layout)
    names = [n for n in storage.list_names(records) if n.endswith(".parquet")]
    checksums = _checked_checksums(storage, records, names, report, day)
    files = []
    for name in names:
        path = f"{records}/{name}"
        rows, groups, schema = records_footer(path)
        check_arrow_schema(schema, contract, source=path)
        files.append({"name": name, "bytes": storage.size(path), "sha256": checksums[name], "rows": rows,
                      "row_groups": groups})
    if layout.build_digest(storage, day) != digest:
        raise PublishedDataError(f"ds={day} was rebuilt while it was being published; publish it again")
    manifest = {
        "ds": day.isoformat(),
        "contract": contract.name,
        "layout": records_layout,
        "spec": spec_summary(spec),
        "build_run": report.get("run_id"),
        "build_digest": digest,
        "max_len": report.get("max_len"),
        "validation": "override" if override_reason else "passed",
        "checksums_from": "build" if "checksums" in report else "publish",
        "published_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rows": sum(f["rows"] for f in files),
        "row_groups": sum(f["row_groups"] for f in files),
        "bytes": sum(f["bytes"] for f in files),
        "files": files,
    }
    storage.write_text(layout.manifest(day), json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def publish(out: str, start: dt.date, end: dt.date | None = None, override_reason: str | None = None,
            log: Callable[[str], None] = print, spec: DatasetSpec | str | None = None) -> list[dict]:
    """Publish each day of [start, end]; stops at the first day that may not be published."""
    manifests = []
    for day in day_range(start, end):
        m = publish_day(out, day, override_reason, spec=spec)
        how = " (validation overridden)" if m["validation"] == "override" else ""
        log(f"published ds={day}: {m['rows']:,} requests in {len(m['files'])} file(s), "
            f"{m['row_groups']} row group(s), {m['bytes'] / 2**20:.1f} MiB{how}")
        manifests.append(m)
    return manifests


