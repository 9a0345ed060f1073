"""What a run reads (RUN/data.json): the days, each day's published build and the dataset
spec, recorded when a run starts and checked on every resume, so that a resumed run goes on
with the data it was started on, or says what changed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from longseq.dataset.spec_record import differences_clause, spec_summary
from longseq.schemas.contracts import DEFAULT_SPEC
from longseq.schemas.errors import LongseqError
from longseq.schemas.spec import DatasetSpec


class OtherDataError(LongseqError):
    """A resume that would read other data than the run was started on."""


@dataclass(frozen=True)
class DataRecord:
    """What a run reads (RUN/data.json): the build's output directory, the days, and each
    day's published build: its build run and digest (a rebuild changes them), rows, and a
    digest of its files' names, sizes and rows (a republish with other files changes it);
    and the dataset spec the data was built with."""

    data: str
    days: dict[str, dict]  # "YYYY-MM-DD" -> {"build_run", "build_digest", "rows", "files"}
    # {"name", "fingerprint"} of the data's spec; None: the default spec, which data.json leaves
    # unsaid, as it did before specs existed
    spec: dict | None = None

    @staticmethod
    def read(data: str, start, end, spec: DatasetSpec = DEFAULT_SPEC) -> "DataRecord":
        from longseq.dataset.layout import BuildLayout, day_range
        from longseq.dataset.published import read_manifest
        from longseq.dataset.storage import absolute, storage_for

        root = absolute(data).rstrip("/")
        storage, layout = storage_for(root, arrow=True), BuildLayout(root)
        days = {}
        for day in day_range(start, end):
            manifest = read_manifest(storage, layout.manifest(day))
            # the files as published_files checked them against this manifest (with checksums where it has them)
            mine = sorted([f["name"], f["bytes"], f["rows"], f.get("sha256")] for f in manifest["files"])
            days[day.isoformat()] = {"build_run": manifest.get("build_run"), "build_digest": manifest.get("build_digest"),
                                     "rows": sum(f[2] for f in mine),
                                     "files": hashlib.sha256(json.dumps(mine).encode()).hexdigest()[:16]}
        return DataRecord(root, days, None if is_default_spec(spec) else spec_summary(spec))

    def spec_or_default(self) -> dict:
        from longseq.dataset.published import built_spec_summary

        return built_spec_summary({"spec": self.spec})

    def to_dict(self) -> dict:
        """data.json's form: no spec entry for the default spec."""
        record = dataclasses.asdict(self)
        if record["spec"] is None:
            del record["spec"]
        return record

    def span(self) -> str:
        days = sorted(self.days)
        return f"{days[0]}..{days[-1]}" if days else "no days"

    def differences(self, before: "DataRecord") -> list[str]:
        """What this data has that `before` had otherwise, in words; [] for the same days of
        the same builds, wherever they are read from."""
        diffs = []
        spec, spec_before = self.spec_or_default(), before.spec_or_default()
        if spec != spec_before:
            diffs.append(f"dataset spec {spec_before['name']} ({spec_before['fingerprint']}), now {spec['name']} "
                         f"({spec['fingerprint']})")
        if set(self.days) != set(before.days):
            diffs.append(f"days {before.span()}, now {self.span()}")
        changed = []
        for day in sorted(set(self.days) & set(before.days)):
            was, now = before.days[day], self.days[day]
            if (was["build_digest"], was["build_run"]) != (now["build_digest"], now["build_run"]):
                changed.append(f"ds={day} was rebuilt (build {was['build_run']}, now {now['build_run']})")
            elif was != now:
                changed.append(f"ds={day} was republished with other files")
        diffs += changed[:3] + ([f"and {len(changed) - 3} more days"] if len(changed) > 3 else [])
        if diffs and self.data != before.data:
            diffs.insert(0, f"data {before.data}, now {self.data}")
        return diffs


def is_default_spec(spec: DatasetSpec) -> bool:
    return spec.fingerprint == DEFAULT_SPEC.fingerprint


def check_model_spec(model_spec: DatasetSpec, data_spec: DatasetSpec, run_dir: Path | str, data: str) -> None:
    """OtherDataError unless the data is of the spec the run's model was built for: its
    tables, heads and metrics are that spec's."""
    if model_spec.fingerprint != data_spec.fingerprint:
        raise OtherDataError(
            f"{run_dir} holds a model of dataset spec {model_spec.name!r} ({model_spec.fingerprint}), but {data} holds "
            f"data of spec {data_spec.name!r} ({data_spec.fingerprint}){differences_clause(model_spec, data_spec)}: "
            f"a model reads only records of its own spec; "
            f"use data of spec {model_spec.name!r}, or train a new --run-dir on this data")


def check_data(run_dir: Path, record: DataRecord, step: int, allow_other_data: bool, write: bool,
                log: Callable[[str], None]) -> list[dict]:
    """Refuse to resume on other data than data.json records, unless allowed; record what
    the run reads from now on (and what changed, at which step). Returns the changes so far."""
    path = run_dir / "data.json"
    saved: dict | None = None
    try:
        saved = json.loads(path.read_text())
        before = DataRecord(saved["data"], saved["days"], saved.get("spec"))
    except FileNotFoundError:  # a run from before data.json existed: its data is whatever it reads now
        log(f"{run_dir} has no record of the data it was trained on (older than data.json); recording "
            f"{record.data} {record.span()} at step {step}")
        before = record
    except (OSError, ValueError, KeyError, TypeError) as e:
        if not allow_other_data:
            raise OtherDataError(f"{path} is unreadable ({type(e).__name__}: {e}), so this resume cannot be "
                                 "checked against the run's data; pass --allow-other-data to record the data "
                                 "read now") from None
        before = DataRecord("?", {})
    changes = list((saved or {}).get("changes", []))
    diffs = record.differences(before)
    if diffs and not allow_other_data:
        raise OtherDataError(
            f"{run_dir} was trained on {before.data} {before.span()}, not the data asked for now: {'; '.join(diffs)}. "
            "Resume with the same --data/--start/--end, use a new --run-dir, or pass --allow-other-data to go on "
            "with this data (recorded in data.json)")
    if diffs:
        log(f"resuming {run_dir} at step {step} on other data (--allow-other-data): {'; '.join(diffs)}")
        changes.append({"at_step": step, "allowed_by": "--allow-other-data", "differences": diffs,
                        "before": before.to_dict()})
    elif record.data != before.data:  # the same builds, moved or copied: the same records
        log(f"{run_dir} reads the same builds from {record.data} now (was {before.data})")
        changes.append({"at_step": step, "differences": [f"data {before.data}, now {record.data} (the same builds)"]})
    if write and (saved is None or diffs or record.data != before.data):
        write_data(run_dir, record, changes)
    return changes


def write_data(run_dir: Path, record: DataRecord, changes: list[dict]) -> None:
    tmp = run_dir / "data.json.tmp"
    tmp.write_text(json.dumps({**record.to_dict(), "changes": changes}, indent=2))
    tmp.replace(run_dir / "data.json")
