"""The stream's hours: each closed, validated and published in order (docs/STREAMING.md).

An hour of ds D closes once the watermark passes its end plus the lateness bound: every
request served in it is decided, so no record of it can come. Closing gathers its micro-batch
files into one sorted file (stream/hours/ds=D/hour=HH/part-00000.parquet), writes the hour
record last, then removes the batch files. With publishing on, each closed hour then passes
the request suite of the Great Expectations gate (etl/gates/validation.py) and gets its manifest,
DATA/published/ds=D/hour=HH/manifest.json, written last, by which the hour becomes readable
(dataset/published.py). Hours are published in order; a failed hour blocks every later one
(stream/status.json says which and why) until an operator publishes it with a reason:
`longseq publish --data DATA --start D --hour HH --override-validation REASON`.
Each step is idempotent, so a crash anywhere is finished by the next call.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from longseq.dataset.compact import request_count, sorted_records
from longseq.dataset.layout import ROW_GROUP_BYTES, BuildLayout, StreamLayout
from longseq.dataset.spec_record import spec_summary
from longseq.dataset.storage import LocalStorage
from longseq.etl.batch.polars_engine import PART_FILE, write_part
from longseq.etl.gates.publish import records_footer
from longseq.etl.stream.settings import StreamSettings
from longseq.schemas.contracts import DAY_MS, REQUEST_LAYOUT, contracts_of, day_start_ms
from longseq.schemas.errors import LongseqError
from longseq.schemas.forms import to_arrow
from longseq.schemas.spec import DatasetSpec

HOUR_MS = 3_600_000


def hour_end_ms(day: dt.date, hour: int) -> int:
    return day_start_ms(day) + (hour + 1) * HOUR_MS


def due_hours(first: dt.date, last: dt.date, watermark: int, lateness_ms: int) -> list[tuple[dt.date, int]]:
    """The hours of days first..last whose end plus the lateness bound the watermark passed."""
    hours = []
    day = first
    while day <= last and day_start_ms(day) + lateness_ms < watermark:
        hours += [(day, h) for h in range(24) if hour_end_ms(day, h) + lateness_ms < watermark]
        day += dt.timedelta(days=1)
    return hours


def _write_json(path: str, value: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    temp = Path(path).with_name("." + Path(path).name + ".tmp")
    temp.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(temp, path)


def close_hour(layout: StreamLayout, day: dt.date, hour: int, settings: StreamSettings) -> dict:
    """Gather the hour's micro-batch files into one file; return the hour record."""
    record_path = layout.hour_record(day, hour)
    batches = Path(layout.batch_hour_dir(day, hour))
    if os.path.exists(record_path):  # closed before; a crash may have left the batch files
        shutil.rmtree(batches, ignore_errors=True)
        return json.loads(Path(record_path).read_text())
    contract = contracts_of(settings.spec).records(settings.layout)
    schema = to_arrow(contract)
    files = sorted(p for p in batches.glob("*.parquet")) if batches.exists() else []
    table = pa.concat_tables([pq.read_table(f).cast(schema) for f in files]) if files else schema.empty_table()
    records = pl.from_arrow(sorted_records(table, settings.spec, settings.layout))
    final = Path(layout.hour_dir(day, hour))
    temp = final.with_name("." + final.name + ".tmp")
    shutil.rmtree(temp, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    write_part(records, contract, str(temp), ROW_GROUP_BYTES)
    os.replace(temp, final)
    path = final / PART_FILE
    record = {"ds": day.isoformat(), "hour": hour, "rows": request_count(table), "file": PART_FILE, "layout": settings.layout,
              "bytes": path.stat().st_size, "sha256": LocalStorage().checksum(str(path)),
              "max_len": settings.max_len, "batch_files": [f.name for f in files]}
    _write_json(record_path, record)
    shutil.rmtree(batches, ignore_errors=True)
    return record


def closed_hours(layout: StreamLayout) -> list[tuple[dt.date, int]]:
    """Every hour the stream closed (its hour record exists), in order."""
    root = Path(layout.root, "hours")
    found = []
    for record in root.glob("ds=*/hour=*.json") if root.exists() else []:
        found.append((dt.date.fromisoformat(record.parent.name.split("=", 1)[1]), int(record.stem.split("=", 1)[1])))
    return sorted(found)


class HourPublisher:
    """Validates and publishes closed hours in order; stops at the first that fails."""

    def __init__(self, spark: Any, out: str, settings: StreamSettings, log: Callable[[str], None] = print):
        self.spark, self.out, self.settings, self.log = spark, out, settings, log
        self.layout, self.stream = BuildLayout(out), StreamLayout(out)

    def blocked(self) -> dict | None:
        path = self.stream.status
        status = json.loads(Path(path).read_text()) if os.path.exists(path) else {}
        return status.get("blocked")

    def publish_closed(self, hours: list[tuple[dt.date, int]]) -> list[tuple[dt.date, int]]:
        """Publish the closed hours not published yet, in order; return those published now."""
        done = []
        for day, hour in hours:
            if os.path.exists(self.layout.hour_manifest(day, hour)):
                continue
            if self.blocked() is not None:
                break
            if not self.publish(day, hour):
                break
            done.append((day, hour))
        return done

    def publish(self, day: dt.date, hour: int, override_reason: str | None = None) -> bool:
        record = json.loads(Path(self.stream.hour_record(day, hour)).read_text())
        path = f"{self.stream.hour_dir(day, hour)}/{record['file']}"
        layout = record.get("layout", REQUEST_LAYOUT)  # as the hour closed, whoever publishes it
        outcome = None
        if record["rows"] and not override_reason:  # its validation failed: that is why it is overridden
            outcome = self.validate(day, hour, path, record["max_len"], layout)
            if not outcome["passed"] and not override_reason:
                failed = [r["check"] for r in outcome["checks"] if r["critical"] and not r["success"]]
                problem = f"ds={day} hour={hour:02d} failed validation ({', '.join(failed)})"
                _write_json(self.stream.status, {"blocked": {"ds": day.isoformat(), "hour": hour, "problem": problem}})
                self.log(f"hour publishing blocked: {problem}; see {outcome['docs']}. Later hours wait until an "
                         f"operator publishes it: longseq publish --data {self.out} --start {day} --hour {hour} "
                         f"--override-validation REASON")
                return False
        if LocalStorage().checksum(path) != record["sha256"]:
            raise RuntimeError(f"{path} changed after its hour closed")
        rows, groups, _ = records_footer(path)
        files = [] if not record["rows"] else [{
            "name": os.path.relpath(path, self.out), "bytes": record["bytes"], "sha256": record["sha256"],
            "rows": rows, "row_groups": groups}]
        manifest = {
            "ds": day.isoformat(), "hour": hour, "stream": True, "layout": layout,
            "contract": contracts_of(self.settings.spec).records(layout).name,
            "spec": spec_summary(self.settings.spec), "max_len": record["max_len"],
            "validation": "override" if override_reason else ("passed" if outcome else "empty"),
            "published_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "rows": record["rows"], "row_groups": groups if record["rows"] else 0,
            "bytes": record["bytes"] if record["rows"] else 0, "files": files,
        }
        if override_reason:
            manifest["override_reason"] = override_reason
        _write_json(self.layout.hour_manifest(day, hour), manifest)
        blocked = self.blocked() or {}
        if (blocked.get("ds"), blocked.get("hour")) == (day.isoformat(), hour):
            _write_json(self.stream.status, {})  # unblocked: the stream goes on with the next hour
        return True

    def validate(self, day: dt.date, hour: int, path: str, max_len: int, layout: str) -> dict:
        from longseq.etl.gates.validation import ValidationConfig, records_frames, request_checks, run_checks

        spec = self.settings.spec
        cfg = dataclasses.replace(ValidationConfig(), max_len=max_len)
        target = self.layout.hour_validation(day, hour)
        frames = {name: frame.cache() for name, frame in records_frames(self.spark.read.parquet(path), spec, layout).items()}
        try:
            outcome = run_checks(frames, request_checks(cfg, spec, layout), cfg, "requests",
                                 str(Path(target).parent / "docs"))
        finally:
            for frame in frames.values():
                frame.unpersist()
        outcome.update(ds=day.isoformat(), hour=hour, docs=str(Path(target).parent / "docs" / "index.html"))
        _write_json(target, outcome)
        return outcome


__all__ = ["DAY_MS", "HourPublisher", "close_hour", "closed_hours", "due_hours", "hour_end_ms"]


def publish_blocked_hour(data: str, day: dt.date, hour: int, reason: str, spec: DatasetSpec,
                         start_spark: Callable[[], Any], log: Callable[[str], None] = print) -> list[tuple[dt.date, int]]:
    """Publish the hour that blocks hour publishing, its validation overridden for `reason`,
    then validate and publish the hours it held back, in order, up to the next failure (Spark
    started only if there are any). Returns the hours published, the blocking one first."""
    publisher = HourPublisher(None, data, StreamSettings(spec=spec), log=log)
    blocked = publisher.blocked()
    if blocked is None or (blocked["ds"], blocked["hour"]) != (day.isoformat(), hour):
        where = "nothing" if blocked is None else f"ds={blocked['ds']} hour={blocked['hour']:02d}"
        raise LongseqError(f"hour publishing of {data} is blocked at {where}, not at ds={day} "
                           f"hour={hour:02d}: only the blocking hour can be published by hand")
    publisher.publish(day, hour, override_reason=reason)
    published = [(day, hour)]
    later = [h for h in closed_hours(StreamLayout(data)) if h > (day, hour)]
    if later:
        publisher.spark = start_spark()
        published += list(publisher.publish_closed(later))
    return published
