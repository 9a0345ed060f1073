"""The stream without Spark: drives etl/stream/process.py the way Spark's
applyInPandasWithState does (docs/plans/STREAMING_DESIGN.md 1.1-1.8), on raw files that
arrive in micro-batches. It is the fast test bed of the stream's semantics, and a local
run of them.

Per micro-batch b, with watermark wm_b (0 before any data):
- every row gets its reason from the row rules of its ds (etl/batch/row_rules.py) and its values
  (action flags, features); a row that breaks a rule is quarantined at once;
- the users with valid rows are called, then every other user whose timeout is below wm_b
  (Spark's order: groups with data, then timed-out keys);
- wm_{b+1} = max(wm_b, max event_ts of the batch's valid rows - delay), and when the
  watermark moved after the last batch, one more batch without data runs (Spark's no-data
  batch). A flush (`--once`) ends with a batch at a watermark past every deadline.

States are kept as their bytes between batches, as Spark's state store keeps them.
`replay` re-runs a batch from the states before it (a restart after a crash) and checks
that it gives the same output.

Days close when the watermark passes their end plus the lateness bound: the day's records,
quarantine, counts, and its USER_STATE (the day before's rows, with the users that wrote a
snapshot of the day replaced).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import polars as pl
import pyarrow as pa

from longseq.etl.batch.feature_values import polars_value_ops
from longseq.etl.batch.row_rules import polars_ops, reason_expr
from longseq.etl.stream.process import COUNTERS, FAR_MS, CallResult, process, value_columns
from longseq.etl.stream.settings import StreamSettings
from longseq.etl.stream.state import EPOCH, VALUE_PREFIX, StreamState, day_number, from_user_state, pending_schema
from longseq.schemas.contracts import DAY_MS, contracts_of


@dataclass(frozen=True)
class ArrivedFile:
    """One raw file as the stream sees it: its ds partition and its rows (raw-log columns,
    under longseq's names)."""

    ds: dt.date
    table: pa.Table


@dataclass
class DayOutput:
    records: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # rows_read and COUNTERS
    snapshots: dict[int, dict] = field(default_factory=dict)  # user -> USER_STATE row
    request_users: dict[str, int] = field(default_factory=dict)  # request_id -> the user of its first record
    shared: set[str] = field(default_factory=set)  # request_ids with records of several users

    def quarantined(self) -> Counter:
        return Counter(r["reason"] for r in self.quarantine)


@dataclass
class SimResult:
    days: dict[dt.date, DayOutput]
    states: dict[dt.date, dict[int, dict]]  # day -> user -> USER_STATE row after the day
    batches: int
    watermark: int


class StreamSimulator:
    def __init__(self, settings: StreamSettings, delay_ms: int, init: tuple[dt.date, list[dict]] | None = None):
        self.settings = settings
        self.delay_ms = delay_ms
        self.wm = 0
        self.states: dict[int, bytes] = {}
        self.timeouts: dict[int, int] = {}
        self.days: dict[int, DayOutput] = defaultdict(DayOutput)
        self.batches = 0
        self.first_day: int | None = None
        self.init_day = None if init is None else day_number(init[0])
        self.base_state: dict[int, dict] = {}
        if init is not None:
            day, rows = init
            for row in rows:
                self.states[row["user_id"]] = from_user_state(row, day, settings.spec).encode()
                self.timeouts[row["user_id"]] = -1  # called in the first batch, as init rows are
            self.base_state = {row["user_id"]: row for row in rows}

    # ------------------------------------------------------------ batches

    def run_batch(self, files: list[ArrivedFile]) -> None:
        results, max_ts = self._evaluate(files, self.states, self.timeouts, self.wm)
        self._commit(results)
        self.batches += 1
        if max_ts is not None:
            self.wm = max(self.wm, max_ts - self.delay_ms)

    def replay(self, files: list[ArrivedFile]) -> None:
        """Run a batch twice from the same states, as a restart after a crash does; the
        second run must give the same output, and only it is committed."""
        first, _ = self._evaluate(files, dict(self.states), dict(self.timeouts), self.wm)
        second, _ = self._evaluate(files, dict(self.states), dict(self.timeouts), self.wm)
        if _digest(first) != _digest(second):
            raise AssertionError("a replayed micro-batch gave another output")
        self.run_batch(files)

    def run_no_data(self, wm: int | None = None) -> None:
        if wm is not None:
            self.wm = max(self.wm, wm)
        self.run_batch([])

    def flush(self) -> None:
        """`--once`: the flush marker's batch, then the no-data batch at its watermark."""
        self.run_batch([])
        self.run_no_data(FAR_MS - self.delay_ms)

    def _evaluate(self, files: list[ArrivedFile], states: dict[int, bytes], timeouts: dict[int, int],
                  wm: int) -> tuple[list, int | None]:
        valid_by_user: dict[int, list[dict]] = defaultdict(list)
        rows_read: Counter = Counter()
        rejected: list[tuple[int, dict]] = []
        max_ts = None
        for f in files:
            d = day_number(f.ds)
            if self.init_day is not None and d <= self.init_day:
                continue  # the state already holds it
            if self.first_day is None or d < self.first_day:
                self.first_day = d
            frame = _with_reasons_and_values(f, self.settings)
            rows_read[d] += frame.height
            for row in frame.filter(pl.col("reason").is_not_null()).to_dicts():
                rejected.append((d, {k: v for k, v in row.items() if k != "ds" and not k.startswith(VALUE_PREFIX)}))
            valid = frame.filter(pl.col("reason").is_null()).drop("reason")
            if valid.height:
                top = int(valid["event_ts"].max())
                max_ts = top if max_ts is None else max(max_ts, top)
            for row in valid.to_dicts():
                valid_by_user[row["user_id"]].append(row)
        results: list[tuple[int, CallResult]] = []
        for user in sorted(valid_by_user):
            results.append((user, self._call(user, states, valid_by_user[user], wm)))
        for user in sorted(u for u, t in timeouts.items() if t < wm and u not in valid_by_user):
            results.append((user, self._call(user, states, [], wm)))
        return [("read", rows_read, rejected), *results], max_ts

    def _call(self, user: int, states: dict[int, bytes], rows: list[dict], wm: int) -> CallResult:
        blob = states.get(user)
        state = None if blob is None else StreamState.decode(blob, self.settings.spec)
        return process(user, state, rows, wm, self.settings)

    def _commit(self, results: list) -> None:
        _, rows_read, rejected = results[0]
        for d, n in rows_read.items():
            self.days[d].counts["rows_read"] += n
        for d, row in rejected:
            self.days[d].quarantine.append(row)
        for user, out in results[1:]:
            for rec in out.records:
                rec = dict(rec)
                day = self.days[rec.pop("ds")]
                day.records.append(rec)
                owner = day.request_users.setdefault(rec["request_id"], user)
                if owner != user and rec["request_id"] not in day.shared:
                    # another user's record has this request_id: the batch build quarantines both
                    day.shared.add(rec["request_id"])
                    day.counts["divergent_requests"] += 1
            for row in out.quarantine:
                self.days[row["ds"]].quarantine.append({k: v for k, v in row.items() if k != "ds"})
            for d, counts in out.counts.items():
                self.days[d].counts.update(counts)
            for d, snapshot in out.snapshots:
                self.days[d].snapshots[user] = snapshot
            if out.state is None:
                self.states.pop(user, None)
            else:
                self.states[user] = out.state.encode()
            if out.timeout is None:
                self.timeouts.pop(user, None)
            else:
                self.timeouts[user] = out.timeout

    # ------------------------------------------------------------ the result

    def closed_days(self) -> list[int]:
        """Days whose end plus the lateness bound the watermark has passed, up to the last
        day any row came from."""
        if self.first_day is None:
            return []
        last = max(d for d, out in self.days.items() if out.counts["rows_read"])
        return [d for d in range(self.first_day, last + 1) if (d + 1) * DAY_MS + self.settings.lateness_ms < self.wm]

    def result(self) -> SimResult:
        days, states = {}, {}
        state = dict(self.base_state)
        for d in self.closed_days():
            out = self.days[d]
            state = {**state, **out.snapshots}
            day = EPOCH + dt.timedelta(days=d)
            days[day], states[day] = out, dict(sorted(state.items()))
        return SimResult(days, states, self.batches, self.wm)


def _with_reasons_and_values(f: ArrivedFile, settings: StreamSettings) -> pl.DataFrame:
    spec = settings.spec
    raw = contracts_of(spec).raw_log
    frame = pl.from_arrow(f.table.select(list(raw.names)))
    frame = frame.with_columns(reason=reason_expr(polars_ops(f.ds, settings.lateness_ms), spec),
                               ds=pl.lit(day_number(f.ds), pl.Int32))
    values = value_columns(spec, polars_value_ops())
    valid = pl.col("reason").is_null()
    # values of invalid rows are never read (and a null label has none)
    frame = frame.with_columns(**{name: pl.when(valid).then(expr) for name, expr in values.items()})
    schema = pending_schema(spec)
    return frame.select(*schema.names, "reason")


def _digest(results: list) -> str:
    import hashlib
    import pickle

    parts = [results[0][1], results[0][2]]
    for user, out in results[1:]:
        parts.append((user, out.records, out.quarantine, out.snapshots, dict(out.counts), out.timeout,
                      None if out.state is None else out.state.encode()))
    return hashlib.sha256(pickle.dumps(parts)).hexdigest()


def simulate(batches: Iterable[list[ArrivedFile]], settings: StreamSettings, delay_ms: int,
             init: tuple[dt.date, list[dict]] | None = None, flush: bool = True, replay_every: int = 0) -> SimResult:
    """Run the batches in order (every `replay_every`-th one replayed), then the no-data
    batch, then, with `flush`, end the stream as `--once` does."""
    sim = StreamSimulator(settings, delay_ms, init)
    for i, files in enumerate(batches):
        if replay_every and i % replay_every == replay_every - 1:
            sim.replay(files)
        else:
            sim.run_batch(files)
    sim.run_no_data()
    if flush:
        sim.flush()
    return sim.result()


__all__ = ["ArrivedFile", "COUNTERS", "FAR_MS", "SimResult", "StreamSimulator", "simulate"]
