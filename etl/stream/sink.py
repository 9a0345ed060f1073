"""The stream's output: each micro-batch committed exactly once, and each day closed as a
daily build (dataset/layout.py StreamLayout; docs/plans/STREAMING_DESIGN.md 2.5-2.6).

Spark may run a micro-batch's foreachBatch again after a crash (at-least-once), with the
same input and state, so the same output. The sink makes that exactly once:
1. unless batch B's commit record exists, the micro-batch is written once into staging (the
   one evaluation: Spark commits the state of B with that job), then split into files with
   fixed names (a rerun overwrites them), then the commit record is written, last;
2. days whose end plus the lateness bound the watermark has passed are closed in order:
   `build` (etl/batch/build.py) runs for the day with StreamDayEngine, which gathers the day's
   committed files, so a closed day is a built day like any other (report, checksums,
   commit, stale days), ready for validate and publish, and a daily build can go on from
   its state. A day closed before is never closed again.

Commit records belong to one checkpoint: each names the id of the Spark checkpoint that ran
it (CKPT/spark/metadata), since a new checkpoint numbers its batches from 0 again; the job
refuses to start on an output holding another checkpoint's (etl/stream/job.py).
Before a micro-batch is evaluated, every raw file landed since is checked against the raw
contract (etl/stream/landed.py): a bad file stops the stream in one line naming it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from longseq.dataset.compact import requests_of, sorted_records
from longseq.dataset.layout import ROW_GROUP_BYTES, BuildLayout, StreamLayout
from longseq.dataset.parquet_files import read_arrow
from longseq.dataset.storage import LocalStorage
from longseq.etl.batch.build import DayCounts, build, length_summary
from longseq.etl.batch.polars_engine import sorted_quarantine, write_part, write_quarantine
from longseq.etl.batch.row_rules import LATE_ARRIVAL, reasons_for
from longseq.etl.stream.hours import HourPublisher, close_hour, due_hours
from longseq.etl.stream.settings import StreamSettings
from longseq.etl.stream.state import EPOCH, read_ipc
from longseq.schemas.contracts import COMPACT_LAYOUT, DAY_MS, DEFAULT_LAYOUT, DEFAULT_SPEC, contracts_of, day_start_ms
from longseq.schemas.errors import LongseqError
from longseq.schemas.forms import to_arrow
from longseq.schemas.spec import DatasetSpec

if TYPE_CHECKING:  # pragma: no cover
    from longseq.etl.stream.landed import LandedFiles

COUNTED = ("rows_read", "duplicates", "duplicates_across_days", "divergent_requests")


def batch_watermark(spark_checkpoint: str, batch: int) -> int:
    """The event-time watermark Spark ran batch `batch` with: the offset log's second line
    (format pinned by tests/test_stream_spark.py)."""
    lines = Path(spark_checkpoint, "offsets", str(batch)).read_text().splitlines()
    return int(json.loads(lines[1])["batchWatermarkMs"])


def checkpoint_id(spark_checkpoint: str) -> str | None:
    """The id Spark gave the checkpoint when its first query started (its `metadata` file);
    None before that."""
    path = Path(spark_checkpoint, "metadata")
    return json.loads(path.read_text().splitlines()[0])["id"] if path.exists() else None


def crash_point(name: str, batch: int) -> None:
    """Die here, as kill -9 would, when LONGSEQ_STREAM_CRASH_AT names this point ("file:3"
    after the first file of batch 3, "committed:3", "hour:3", "close:3", or any batch:
    "close:*"; comma-separated): the recovery tests' fault injection."""
    wanted = os.environ.get("LONGSEQ_STREAM_CRASH_AT", "")
    if wanted and ({f"{name}:{batch}", f"{name}:*"} & set(wanted.split(","))):
        os.kill(os.getpid(), signal.SIGKILL)


def _write_atomically(path: str, write: Callable[[str], None]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    temp = str(Path(path).with_name("." + Path(path).name + ".tmp"))
    write(temp)
    os.replace(temp, path)


def _decode(payloads: list[bytes]) -> pa.Table:
    return pa.concat_tables(read_ipc(p) for p in payloads)


class StreamSink:
    """foreachBatch(df, batch_id) of the stream: commit, then close the days that are due."""

    def __init__(self, raw: str, out: str, spark_checkpoint: str, settings: StreamSettings,
                 log: Callable[[str], None] = print, publish_hours: bool = False,
                 landed: "LandedFiles | None" = None):
        self.raw, self.out, self.spark_checkpoint = raw, out, spark_checkpoint
        self.landed = landed
        self.failure: LongseqError | None = None  # why this sink stopped the query: the job raises it, in one line
        self.checkpoint: str | None = None
        self.settings = settings
        self.layout = StreamLayout(out)
        self.log = log
        self.publish_hours = publish_hours
        self.batches = 0
        self._commits: list[dict] | None = None

    def __call__(self, df: Any, batch: int) -> None:
        try:
            self.checkpoint = checkpoint_id(self.spark_checkpoint)
            if self.landed is not None:
                self.landed.check()  # before Spark reads a file of this batch
            committed = self.committed(batch)
        except LongseqError as e:
            self.failure = e
            _quiet_spark_report(df.sparkSession)  # the job says why in one line; Spark would add a Java trace
            raise
        if not committed:
            staging = self.layout.staging(batch)
            shutil.rmtree(staging, ignore_errors=True)
            df.write.parquet(staging)  # the one evaluation of this micro-batch
            self.commit(batch, pq.read_table(staging), batch_watermark(self.spark_checkpoint, batch))
            crash_point("committed", batch)
        shutil.rmtree(self.layout.staging(batch), ignore_errors=True)  # also after a crash past the commit
        self.batches += 1
        self.note_after_close(batch)
        hours = self.close_due_hours(batch)
        if self.publish_hours:
            for day, hour in HourPublisher(df.sparkSession, self.out, self.settings, self.log).publish_closed(hours):
                self.log(f"published ds={day} hour={hour:02d}")
        self.close_due_days(batch)

    # ------------------------------------------------------------ one micro-batch

    def committed(self, batch: int) -> bool:
        """Whether batch B has its commit record; LongseqError if another checkpoint's is there."""
        path = self.layout.commit(batch)
        if not os.path.exists(path):
            return False
        owner = json.loads(Path(path).read_text()).get("checkpoint", self.checkpoint)  # none: from before ids
        if owner != self.checkpoint:
            raise LongseqError(f"{path} was committed by another stream checkpoint ({owner}), not by "
                               f"{self.spark_checkpoint} ({self.checkpoint}): restart the stream")
        return True

    def commit(self, batch: int, table: pa.Table, watermark: int) -> None:
        c = contracts_of(self.settings.spec)
        rows = table.to_pylist()
        files: dict[str, int] = {}
        counts: dict[int, Counter] = {}
        state_bytes: list[int] = []
        groups: dict[tuple[str, int, int], list[bytes]] = {}
        for r in rows:
            if r["kind"] == "count":
                values = json.loads(r["counts"])
                if r["ds"] >= 0:
                    counts.setdefault(r["ds"], Counter()).update({k: v for k, v in values.items() if k in COUNTED})
                elif "state_bytes" in values:
                    state_bytes.append(values["state_bytes"])
            else:
                groups.setdefault((r["kind"], r["ds"], r["hour"]), []).append(r["payload"])
        for (kind, d, hour), payloads in sorted(groups.items()):
            day = EPOCH + dt.timedelta(days=d)
            part = _decode(payloads)
            if kind == "record":
                part = sorted_records(part, self.settings.spec, self.settings.layout)
                path = self.layout.part("records", day, batch, hour)
                schema = to_arrow(c.records(self.settings.layout))
            elif kind == "quarantine":  # under the logs' names, as every quarantine file
                part = part.rename_columns(c.quarantine_file.names)
                path, schema = self.layout.part("quarantine", day, batch), to_arrow(c.quarantine_file)
            else:
                part = part.sort_by("user_id")
                path, schema = self.layout.part("snapshots", day, batch), to_arrow(c.user_state)
            _write_atomically(path, lambda p, t=part.cast(schema): pq.write_table(t, p, compression="zstd"))
            files[os.path.relpath(path, self.layout.root)] = part.num_rows
            crash_point("file", batch)
        record = {
            "batch": batch, "watermark": watermark, "files": files, "committed_at": time.time(),
            "checkpoint": self.checkpoint, "checkpoint_location": self.spark_checkpoint,
            "counts": {(EPOCH + dt.timedelta(days=d)).isoformat(): dict(sorted(v.items())) for d, v in sorted(counts.items())},
            "state_bytes": {"users": len(state_bytes), "total": sum(state_bytes), "max": max(state_bytes, default=0)},
        }
        _write_atomically(self.layout.commit(batch), lambda p: Path(p).write_text(json.dumps(record, indent=1)))
        if self._commits is not None:
            self._commits.append(record)

    # ------------------------------------------------------------ days

    def commits(self) -> list[dict]:
        """Every commit record, in batch order: read from disk once per run (a restart finds
        those of earlier runs there), then kept as this sink commits more."""
        if self._commits is None:
            directory = Path(self.layout.root, "commits")
            found = [json.loads(p.read_text()) for p in directory.glob("*.json")] if directory.exists() else []
            self._commits = sorted(found, key=lambda r: r["batch"])
        return self._commits

    def _seen_days(self, commits: list[dict]) -> list[dt.date]:
        return sorted({dt.date.fromisoformat(d) for r in commits for d, v in r["counts"].items() if v.get("rows_read")})

    def close_due_hours(self, batch: int = -1) -> list[tuple[dt.date, int]]:
        """Close every hour now due (etl/stream/hours.py); return all closed hours, in order."""
        commits = self.commits()
        seen = self._seen_days(commits)
        if not seen:
            return []
        hours = due_hours(seen[0], seen[-1], commits[-1]["watermark"], self.settings.lateness_ms)
        for day, hour in hours:
            if not os.path.exists(self.layout.hour_record(day, hour)) or os.path.exists(
                    self.layout.batch_hour_dir(day, hour)):
                crash_point("hour", batch)
                close_hour(self.layout, day, hour, self.settings)
        return hours

    def close_due_days(self, batch: int = -1) -> list[dt.date]:
        commits = self.commits()
        if not commits:
            return []
        watermark = commits[-1]["watermark"]
        seen = self._seen_days(commits)
        if not seen:
            return []
        storage, layout = LocalStorage(), BuildLayout(self.out)
        closed = []
        day = seen[0]
        while day <= seen[-1] and day_start_ms(day) + DAY_MS + self.settings.lateness_ms < watermark:
            if not layout.is_built(storage, day):
                crash_point("close", batch)
                self.close_day(day, commits)
                closed.append(day)
            day += dt.timedelta(days=1)
        return closed

    def close_day(self, day: dt.date, commits: list[dict]) -> None:
        """Build the day from what the batches so far committed for it. Its stream.json goes
        first, naming the last of them: a crash before the report recloses the day, with the
        batches there are by then, and rewrites it."""
        s = self.settings
        engine = StreamDayEngine(self.layout, commits, s)
        extra = {"engine": "stream", "checkpoint": self.checkpoint, "batches": [r["batch"] for r in commits if day.isoformat() in r["counts"]],
                 "closed_through_batch": commits[-1]["batch"], "watermark": commits[-1]["watermark"],
                 "divergent_requests": engine.count_divergent(day)}
        _write_atomically(self._day_file(day, "stream.json"),
                          lambda p: Path(p).write_text(json.dumps(extra, indent=1, sort_keys=True)))
        build(engine, s.build_config(self.raw, self.out, day, day), log=self.log)

    def _day_file(self, day: dt.date, name: str) -> str:
        return str(Path(BuildLayout(self.out).report(day)).with_name(name))

    def note_after_close(self, batch: int) -> None:
        """Rows of a day that arrive after it closed (an outcome logged long after its request,
        a file landed later than the watermark delay) cannot join its build: they are
        quarantined or counted as duplicates all the same, in stream/quarantine/ds=D/, and
        reports/ds=D/after_close.json counts them, so that the day's report plus these equal
        what a daily build of the day reads."""
        commits = self.commits()
        if not commits or commits[-1]["batch"] != batch:
            return
        for ds in commits[-1]["counts"]:
            day = dt.date.fromisoformat(ds)
            marker = Path(self._day_file(day, "stream.json"))
            if not marker.exists() or not BuildLayout(self.out).is_built(LocalStorage(), day):
                continue
            closed_through = json.loads(marker.read_text())["closed_through_batch"]
            later = [r for r in commits if r["batch"] > closed_through and ds in r["counts"]]
            if not later:
                continue
            counted = Counter()
            for r in later:
                counted.update(r["counts"][ds])
            files = [self.layout.part("quarantine", day, r["batch"]) for r in later]
            files = [f for f in files if os.path.exists(f)]
            reasons = Counter(v for f in files for v in pq.read_table(f, columns=["reason"]).column("reason").to_pylist())
            record = {"rows_read": int(counted["rows_read"]), "duplicates": int(counted["duplicates"]),
                      "duplicates_across_days": int(counted["duplicates_across_days"]),
                      "quarantined": dict(sorted(reasons.items())), "batches": [r["batch"] for r in later],
                      "files": [os.path.relpath(f, self.out) for f in files]}
            _write_atomically(self._day_file(day, "after_close.json"),
                              lambda p, v=record: Path(p).write_text(json.dumps(v, indent=1, sort_keys=True)))
            self.log(f"ds={day}: {record['rows_read']:,} row(s) arrived after the day closed, quarantined or "
                     f"duplicates; counted in {self._day_file(day, 'after_close.json')}")


def _not_ours(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], LongseqError))


def _quiet_spark_report(spark: Any) -> None:
    """Spark logs a failed query's error with its Java stack trace, and py4j the traceback of
    the Python call that raised it: not for a failure the stream explains itself."""
    py4j = logging.getLogger("py4j.clientserver")
    if _not_ours not in py4j.filters:
        py4j.addFilter(_not_ours)
    try:
        jvm = spark.sparkContext._jvm
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            "org.apache.spark.sql.execution.streaming.MicroBatchExecution", jvm.org.apache.logging.log4j.Level.OFF)
    except Exception:  # pragma: no cover - another logging backend: the trace shows, the error is still one line
        pass


class StreamDayEngine:
    """A build engine whose day is what the stream committed for it: the records and
    quarantine of every batch, and the state of the day before with the users that were
    active replaced by their snapshots. Written as the polars engine writes, so that a day
    the stream closed and a day a daily build wrote can be compared file for file."""

    name = "stream"
    storage = LocalStorage()
    reads_raw = False  # the stream read the raw files as they landed; a day's partition may never be marked complete

    def __init__(self, stream: StreamLayout, commits: list[dict], settings: StreamSettings):
        self.stream, self.commits = stream, commits
        self.spec, self.layout = settings.spec, settings.layout

    def count_divergent(self, day: dt.date) -> int:
        """Requests where the stream and a daily build differ (docs/STREAMING.md): those its
        state function counted, and request_ids with records of several users."""
        counted = sum(r["counts"].get(day.isoformat(), {}).get("divergent_requests", 0) for r in self.commits)
        records = self._read("hours", day, to_arrow(contracts_of(self.spec).records(self.layout)),
                             columns=["request_id", "user_id"])
        ids = pl.from_arrow(records)
        if self.layout == COMPACT_LAYOUT:
            ids = ids.explode("request_id")
        shared = ids.group_by("request_id").agg(pl.col("user_id").n_unique().alias("n"))
        return int(counted) + shared.filter(pl.col("n") > 1).height

    def _read(self, kind: str, day: dt.date, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
        root = Path(self.stream.day_dir(kind, day))
        files = [f for f in sorted(root.rglob("*.parquet"))
                 if not any(part.startswith((".", "_")) for part in f.relative_to(root).parts)]
        if columns is not None:
            schema = pa.schema([schema.field(n) for n in columns])
        if not files:
            return schema.empty_table()
        return pa.concat_tables(pq.read_table(f, columns=columns).cast(schema) for f in files)

    def build_day(self, raw_partition: str, prev_state: str | None, day: dt.date, max_len: int,
                  temps: dict[str, str], lateness_ms: int = 0, spec: DatasetSpec = DEFAULT_SPEC,
                  layout: str = DEFAULT_LAYOUT) -> DayCounts:
        c = contracts_of(spec)
        contract = c.records(layout)
        # every hour of D is closed; a user's hours of D become one row
        hours = self._read("hours", day, to_arrow(contract))
        records = pl.from_arrow(sorted_records(hours, spec, layout))
        written = pl.from_arrow(requests_of(hours, layout))
        parts = self._read("quarantine", day, to_arrow(c.quarantine_file)).rename_columns(c.quarantine.names)
        quarantine = sorted_quarantine(pl.from_arrow(parts), c)
        snapshots = pl.from_arrow(self._read("snapshots", day, to_arrow(c.user_state)))
        before = read_arrow(prev_state, c.user_state) if prev_state else to_arrow(c.user_state).empty_table()
        state = pl.concat([pl.from_arrow(before).join(snapshots.select("user_id"), on="user_id", how="anti"),
                           snapshots]).sort("user_id")
        write_quarantine(quarantine, c, temps["quarantine"], ROW_GROUP_BYTES)
        write_part(state, c.user_state, temps["state"], ROW_GROUP_BYTES)
        write_part(records, contract, temps["requests"], ROW_GROUP_BYTES)

        counted = Counter()
        for r in self.commits:
            counted.update(r["counts"].get(day.isoformat(), {}))
        by_reason = dict(Counter(quarantine["reason"].to_list()))
        lengths = written.group_by("hist_len").len().iter_rows()
        orphaned = set(quarantine["request_id"].drop_nulls().to_list()) - set(written["request_id"].to_list())
        return DayCounts(
            rows_read=int(counted["rows_read"]),
            duplicates=int(counted["duplicates"]),
            duplicates_across_days=int(counted["duplicates_across_days"]),
            quarantined={r: int(by_reason.get(r, 0)) for r in (*reasons_for(spec), LATE_ARRIVAL)},
            requests=written.height,
            targets=int(written["tgt_count"].sum() or 0),
            requests_without_valid_impressions=len(orphaned),
            users_in_state=state.height,
            history_length=length_summary(dict(lengths)),
        )

