"""The stream as a build engine, for the batch build's semantic tests: one day's raw rows
land as small files in a seeded order within the watermark delay, the stream starts from
the day before's USER_STATE and ends as `--once` does, and the day's records, quarantine
and state are written where a daily build writes them. So every trap that the engines are
tested on is also a test of the stream (tests/test_build_semantics.py, engine "stream")."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from longseq.dataset.parquet_files import read_arrow
from longseq.dataset.storage import LocalStorage
from longseq.etl.batch.build import DayCounts, length_summary
from longseq.etl.batch.row_rules import reasons_for
from longseq.etl.stream.settings import StreamSettings
from tests.stream_sim import ArrivedFile, simulate
from longseq.schemas.contracts import DEFAULT_LATENESS_MS, DEFAULT_SPEC, REQUEST_LAYOUT, SUCCESS_MARKER, contracts_of
from longseq.schemas.forms import to_arrow
from longseq.schemas.spec import DatasetSpec

DELAY_MS = 3_600_000
PART_FILE = "part-00000.parquet"


def landed(table: pa.Table, day: dt.date, delay_ms: int, seed: int) -> list[list[ArrivedFile]]:
    """The rows in event-time order, each moved by up to 0.9 delay, as files of 1-3 rows,
    one to three files per micro-batch."""
    rng = random.Random(seed)
    ts = table.column("event_ts").to_pylist()
    order = sorted(range(table.num_rows), key=lambda i: ((ts[i] or 0) + rng.uniform(0, 0.9 * delay_ms), i))
    files, i = [], 0
    while i < len(order):
        n = rng.randint(1, 3)
        files.append(ArrivedFile(day, table.take(order[i:i + n])))
        i += n
    batches, i = [], 0
    while i < len(files):
        n = rng.randint(1, 3)
        batches.append(files[i:i + n])
        i += n
    return batches


class StreamSimEngine:
    name = "stream"
    storage = LocalStorage()

    def __init__(self, seed: int = 0):
        self.seed = seed

    def build_day(self, raw_partition: str, prev_state: str | None, day: dt.date, max_len: int,
                  temps: dict[str, str], lateness_ms: int = DEFAULT_LATENESS_MS,
                  spec: DatasetSpec = DEFAULT_SPEC, layout: str = REQUEST_LAYOUT) -> DayCounts:
        assert layout == REQUEST_LAYOUT, "the stream writes the request layout"
        c = contracts_of(spec)
        raw = read_arrow(raw_partition, c.raw_log, names=spec.raw_names)
        init = None
        if prev_state is not None:
            init = (day - dt.timedelta(days=1), read_arrow(prev_state, c.user_state).to_pylist())
        settings = StreamSettings(spec=spec, max_len=max_len, lateness_ms=lateness_ms)
        result = simulate(landed(raw, day, DELAY_MS, self.seed), settings, DELAY_MS, init=init, replay_every=5)
        out = result.days.get(day)
        records = [] if out is None else out.records
        quarantine = [] if out is None else out.quarantine
        state = result.states.get(day)
        if state is None:  # no row of the day: the state carries over
            state = {r["user_id"]: r for r in init[1]} if init else {}
        records.sort(key=lambda r: (r["user_id"], r["request_ts"], r["request_id"]))
        _write(records, c.request_record, temps["requests"])
        # quarantine files keep the logs' names, as the engines write them
        _write([{spec.raw_names.get(k, k): v for k, v in r.items()} for r in quarantine], c.quarantine_file,
               temps["quarantine"])
        _write([state[u] for u in sorted(state)], c.user_state, temps["state"])

        quarantined = {r: 0 for r in reasons_for(spec)}
        for row in quarantine:
            if row["reason"] not in quarantined:
                raise AssertionError(f"the stream quarantined a row as {row['reason']}, which no daily build does")
            quarantined[row["reason"]] += 1
        counts = out.counts if out is not None else {}
        lengths: dict[int, int] = {}
        for rec in records:
            n = len(rec["hist_item_id"])
            lengths[n] = lengths.get(n, 0) + 1
        written = {r["request_id"] for r in records}
        orphaned = {r["request_id"] for r in quarantine if r["request_id"] is not None} - written
        if counts.get("divergent_requests"):
            raise AssertionError(f"{counts['divergent_requests']} requests diverged from the batch rules")
        return DayCounts(
            rows_read=raw.num_rows,
            duplicates=counts.get("duplicates", 0),
            duplicates_across_days=counts.get("duplicates_across_days", 0),
            quarantined=quarantined,
            requests=len(records),
            targets=sum(len(r["tgt_item_id"]) for r in records),
            requests_without_valid_impressions=len(orphaned),
            users_in_state=len(state),
            history_length=length_summary(lengths),
        )


def _write(rows: list[dict], contract, directory: str) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=to_arrow(contract)), f"{directory}/{PART_FILE}",
                   compression="zstd")
    Path(directory, SUCCESS_MARKER).touch()
