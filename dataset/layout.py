"""Where a build's outputs live: the on-disk layout that the ETL writes and the trainer reads.

    DATA/requests/ds=YYYY-MM-DD/    request records (contract 2) + _SUCCESS
    DATA/quarantine/ds=YYYY-MM-DD/  rejected raw rows + reason + _SUCCESS
    DATA/state/ds=YYYY-MM-DD/       user_state after that day + _SUCCESS
    DATA/reports/ds=YYYY-MM-DD/build.json         written last: the day is built
    DATA/validation/ds=YYYY-MM-DD/requests.json   the Great Expectations outcome
    DATA/published/ds=YYYY-MM-DD/manifest.json    written by `longseq publish`: readable
    DATA/reports/ds=YYYY-MM-DD/stale.json         built on the old state of a day rebuilt since
    DATA/.longseq.lock                            held while a build, validate or publish runs

Engines write into hidden temp directories (names starting with "."; Spark, pyarrow and
polars skip those), which are renamed into place only once complete (etl/batch/commit.py). A
day counts as built when its report exists.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from longseq.dataset.storage import Storage
from longseq.schemas.contracts import PARTITION_COLUMN, SUCCESS_MARKER
from longseq.schemas.errors import LongseqError

KINDS = ("requests", "quarantine", "state")
# Parquet row-group size of every output: a reader holds one row group per worker and
# queue slot, so this bounds its memory (~100-1,000 records of 10k events).
ROW_GROUP_BYTES = 32 * 1024 * 1024
REPORT_NAME = "build.json"
MANIFEST_NAME = "manifest.json"
STALE_NAME = "stale.json"
# BuildLayout.temp's names: .ds=YYYY-MM-DD.<token>.tmp
_TEMP_NAME = re.compile(rf"\.{PARTITION_COLUMN}=\d{{4}}-\d{{2}}-\d{{2}}\.[0-9a-zA-Z]+\.tmp")


def day_range(start: dt.date, end: dt.date | None = None) -> list[dt.date]:
    """Every day from start to end (default: start), in order."""
    end = end or start
    if end < start:
        raise LongseqError(f"--end {end} is before --start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def ds_name(day: dt.date) -> str:
    return f"{PARTITION_COLUMN}={day.isoformat()}"


def hour_name(hour: int) -> str:
    return f"hour={hour:02d}"


def partition_path(root: str | Path, day: dt.date) -> str:
    """A day's raw log partition: ROOT/ds=YYYY-MM-DD."""
    return f"{str(root).rstrip('/')}/{ds_name(day)}"


@dataclass(frozen=True)
class BuildLayout:
    out: str

    @property
    def spec_file(self) -> str:
        """The dataset spec the output is built with (dataset/spec_record.py)."""
        return f"{self.out}/spec.yaml"

    def dir(self, kind: str, day: dt.date) -> str:
        return f"{self.out}/{kind}/{ds_name(day)}"

    def report(self, day: dt.date) -> str:
        return f"{self.out}/reports/{ds_name(day)}/{REPORT_NAME}"

    def temp(self, kind: str, day: dt.date, token: str) -> str:
        return f"{self.out}/{kind}/.{ds_name(day)}.{token}.tmp"

    def built_days(self, storage: Storage) -> list[dt.date]:
        """Days whose build finished (their report exists), oldest first."""
        days = []
        for name in storage.list_names(f"{self.out}/reports"):
            if name.startswith(f"{PARTITION_COLUMN}="):
                day = dt.date.fromisoformat(name.split("=", 1)[1])
                if self.is_built(storage, day):
                    days.append(day)
        return sorted(days)

    def build_digest(self, storage: Storage, day: dt.date) -> str | None:
        """Identifies one build of a day (its report names a fresh run), or None if unbuilt."""
        path = self.report(day)
        return self.digest_of(storage.read_text(path)) if storage.exists(path) else None

    @staticmethod
    def digest_of(report_text: str) -> str:
        """The build digest of a report's text."""
        return hashlib.sha256(report_text.encode()).hexdigest()[:16]

    def manifest(self, day: dt.date) -> str:
        """Written by `longseq publish` (etl/gates/publish.py); its presence makes the day readable."""
        return f"{self.out}/published/{ds_name(day)}/{MANIFEST_NAME}"

    def hour_manifest(self, day: dt.date, hour: int) -> str:
        """Written by the stream for each validated hour (etl/stream/hours.py): the hour is readable."""
        return f"{self.out}/published/{ds_name(day)}/{hour_name(hour)}/{MANIFEST_NAME}"

    def hour_validation(self, day: dt.date, hour: int) -> str:
        return f"{self.out}/validation/{ds_name(day)}/{hour_name(hour)}/requests.json"

    def is_built(self, storage: Storage, day: dt.date) -> bool:
        return storage.exists(self.report(day)) and storage.exists(f"{self.dir('state', day)}/{SUCCESS_MARKER}")

    # ------------------------------------------------ stale days and leftovers (issue 17)

    def stale_marker(self, day: dt.date) -> str:
        """Written when a day before this one is rebuilt: this day's records and state were
        built on that day's previous state. A rebuild of this day removes it (etl/batch/commit.py)."""
        return f"{self.out}/reports/{ds_name(day)}/{STALE_NAME}"

    def stale_info(self, storage: Storage, day: dt.date) -> dict | None:
        """The stale marker of a built day (which rebuilt day made it stale), or None if current."""
        if not storage.exists(self.report(day)) or not storage.exists(self.stale_marker(day)):
            return None
        return json.loads(storage.read_text(self.stale_marker(day)))

    def is_current(self, storage: Storage, day: dt.date) -> bool:
        """Built and not stale: a day the next day may build on, and validation may check."""
        return self.is_built(storage, day) and not storage.exists(self.stale_marker(day))

    def stale_days(self, storage: Storage) -> list[dt.date]:
        return [d for d in self.built_days(storage) if storage.exists(self.stale_marker(d))]

    def stale_problem(self, storage: Storage, day: dt.date) -> str | None:
        """Why a stale day may not be validated, published or built on, in one line; None if not stale."""
        info = self.stale_info(storage, day)
        if info is None:
            return None
        return (f"ds={day} is stale: it was built on the state of ds={info['rebuilt_day']} before that day was "
                f"rebuilt (run {info['rebuilt_run_id']}); rebuild it first: longseq build --data {self.out} "
                f"--raw RAW --start {day} --catch-up")

    def leftover_temps(self, storage: Storage) -> list[str]:
        """Temp directories (see `temp`) left by a build that was killed before it cleaned up."""
        return [f"{self.out}/{kind}/{name}" for kind in KINDS
                for name in storage.list_names(f"{self.out}/{kind}") if _TEMP_NAME.fullmatch(name)]


@dataclass(frozen=True)
class StreamLayout:
    """What `longseq stream` keeps under DATA/stream/ besides the daily layout above
    (etl/stream/sink.py): per micro-batch B, the files it committed and its commit record;
    a day's files become a built day's outputs when the day closes.

        stream/commits/B.json                       written last: batch B is committed
        stream/records/ds=D/hour=HH/part-bB.parquet  the records of requests served in that hour
        stream/hours/ds=D/hour=HH/part-00000.parquet an hour's records once it closed, in one file
        stream/hours/ds=D/hour=HH.json               written last: the hour is closed
        stream/quarantine/ds=D/part-bB.parquet
        stream/snapshots/ds=D/part-bB.parquet        USER_STATE rows of the users active on D
        stream/staging/batch=B/                      the micro-batch as Spark wrote it, once
        stream/status.json                           the hour publishing is blocked at, if any
    """

    out: str

    @property
    def root(self) -> str:
        return f"{self.out}/stream"

    def commit(self, batch: int) -> str:
        return f"{self.root}/commits/{batch}.json"

    def staging(self, batch: int) -> str:
        return f"{self.root}/staging/batch={batch}"

    def part(self, kind: str, day: dt.date, batch: int, hour: int | None = None) -> str:
        where = f"{self.root}/{kind}/{ds_name(day)}" + ("" if hour is None else f"/{hour_name(hour)}")
        return f"{where}/part-b{batch:09d}.parquet"

    def day_dir(self, kind: str, day: dt.date) -> str:
        return f"{self.root}/{kind}/{ds_name(day)}"

    def hour_dir(self, day: dt.date, hour: int) -> str:
        return f"{self.root}/hours/{ds_name(day)}/{hour_name(hour)}"

    def hour_record(self, day: dt.date, hour: int) -> str:
        return f"{self.root}/hours/{ds_name(day)}/{hour_name(hour)}.json"

    def batch_hour_dir(self, day: dt.date, hour: int) -> str:
        return f"{self.root}/records/{ds_name(day)}/{hour_name(hour)}"

    @property
    def status(self) -> str:
        return f"{self.root}/status.json"
