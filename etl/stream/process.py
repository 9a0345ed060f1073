"""One call of the stream's state function for one user (docs/plans/STREAMING_DESIGN.md 2.3).

The rows of the user that arrived in a micro-batch, the batch's event-time watermark `wm`
and the user's state go in; the request records now due, the rows quarantined, the user's
daily state rows (snapshots), counters, the new state and its timeout come out. Pure: no
Spark, no I/O, so the Spark job (etl/stream/job.py) and the simulator (tests/stream_sim.py) run
the same code.

A row is *on time* when it arrives while wm <= its event_ts. A request is decided at its
deadline, the first call with wm > min(request_ts) + lateness: every on-time row that can
change it (a row of the same request, a copy of one of its events smaller in the dedup
order, an event before it in its user's history) has event_ts below the deadline, so it has
arrived. Deciding from the rows at hand then gives what the batch build gives, whatever
the order the rows arrive in. The batch rules that look across users cannot be seen by a
stream keyed by user; where the stream can tell that it differs, it counts it
(`divergent_requests`); docs/STREAMING.md lists the cases.

Per call:
1. each on-time row: of a request already decided -> INCONSISTENT_REQUEST (its request_ts
   differs: the decided one's rows all arrived before its deadline); else pending;
2. every due request, in (min request_ts, ds, request_id) order: rows that disagree on
   request_ts -> all INCONSISTENT_REQUEST; else each row is a duplicate when a copy of its
   event was kept on an earlier day within the lateness bound, or kept in its ds, or is
   pending in its ds and smaller by dedup_order; the others are kept: the record (history =
   the last max_len kept events before request_ts), then they join the history;
   then each late row (event_ts < wm): a duplicate of a kept event, or quarantined as
   LATE_ARRIVAL;
3. a snapshot (USER_STATE row) for each day D whose end + lateness the watermark passed,
   when the user had kept events of D or its last snapshot still had a tail or a window;
4. truncate at T = wm - lateness: every later row has event_ts >= T, so the history keeps
   the last max_len events before T and all after; ids, windows and registries below T go.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longseq.etl.batch.feature_values import ValueOps, feature_value
from longseq.etl.batch.row_rules import INCONSISTENT_REQUEST, LATE_ARRIVAL, dedup_order
from longseq.etl.stream.settings import StreamSettings
from longseq.etl.stream.state import (
    EMITTED_SCHEMA, EPOCH, VALUE_PREFIX, WINDOW_SCHEMA, StreamState, pending_schema, pylist, table_of,
    table_rows, to_user_state,
)
from longseq.features.actions import encode_actions
from longseq.schemas.contracts import (
    DAY_MS, HIST_PREFIX, TGT_PREFIX, contracts_of,
)
from longseq.schemas.spec import DatasetSpec

FAR_MS = 253_402_300_799_000  # 9999-12-31: the flush marker's event time, past every deadline
# Counters a call adds to, per ds (the quarantined rows are counted from the rows themselves).
COUNTERS = ("duplicates", "duplicates_across_days", "divergent_requests")


def value_columns(spec: DatasetSpec, ops: ValueOps) -> dict[str, Any]:
    """VALUE_PREFIX name -> expression of each value a record takes from a raw row: the action
    flags and every feature (etl/batch/feature_values.py), for either engine."""
    labels = {t: ops.cast(ops.col(t), "int32") for t in spec.tasks}
    return {
        VALUE_PREFIX + "action": ops.cast(encode_actions(labels, spec.tasks), "int32"),
        **{VALUE_PREFIX + f.name: feature_value(f, spec, ops) for f in spec.features},
    }


@dataclass
class CallResult:
    records: list[dict] = field(default_factory=list)  # request record columns + "ds"
    quarantine: list[dict] = field(default_factory=list)  # raw columns + "ds" + "reason"
    snapshots: list[tuple[int, dict]] = field(default_factory=list)  # (day number, USER_STATE row)
    counts: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))  # ds -> COUNTERS
    state: StreamState | None = None  # None: nothing left to keep
    timeout: int | None = None  # ms: call again once the watermark is past it


def day_of(ts_ms: int) -> int:
    """Days since epoch of the UTC day holding ts_ms."""
    return ts_ms // DAY_MS


def process(user_id: int, state: StreamState | None, rows: list[dict], wm: int, settings: StreamSettings,
            new_user_day: int | None = None) -> CallResult:
    """One call for one user: `rows` are its valid rows of the batch (pending_schema's
    columns), `wm` the batch's watermark in ms. A user without state starts empty, its
    snapshots after `new_user_day` (default: the day before its earliest row)."""
    spec, lateness = settings.spec, settings.lateness_ms
    if state is None:
        first = new_user_day if new_user_day is not None else min(int(r["ds"]) for r in rows) - 1
        state = StreamState.empty(spec, truncated_at=0, last_snapshot=first)
    out = CallResult()
    work = _Work.of(state, spec)

    for row in rows:
        if row["event_ts"] >= wm:
            _arrive(row, work, out)
    _decide_due(user_id, wm, work, out, settings)
    for row in rows:  # after the decisions, so that a late copy of an event kept now is a duplicate
        if row["event_ts"] < wm:
            _arrive_late(row, work, out, lateness)
    _snapshot_due(user_id, wm, work, out, settings)
    work.truncate(max(state.truncated_at, wm - lateness), settings.max_len, lateness)

    new = work.to_state(spec)
    out.timeout = _next_timeout(work, lateness)
    out.state = None if work.is_empty() else new
    return out


# ---------------------------------------------------------------- the working form of a state


@dataclass
class _Work:
    hist: pa.Table  # sorted by (event_ts, event_id); event_id and ds only on the tail
    window: list[dict]
    pending: list[dict]
    emitted: dict[tuple[int, str], dict]
    truncated_at: int
    last_snapshot: int
    active: bool
    dirty: set[int]
    new_events: list[dict] = field(default_factory=list)  # kept this call, not yet merged into hist
    _by_id: dict[str, list[dict]] | None = None  # window entries by event_id, built when first read

    @property
    def by_id(self) -> dict[str, list[dict]]:
        if self._by_id is None:  # a call without rows to dedupe never reads it
            self._by_id = {}
            for w in self.window:
                self._by_id.setdefault(w["event_id"], []).append(w)
        return self._by_id

    def add_to_window(self, entry: dict) -> None:
        self.window.append(entry)
        if self._by_id is not None:
            self._by_id.setdefault(entry["event_id"], []).append(entry)

    @staticmethod
    def of(s: StreamState, spec: DatasetSpec) -> "_Work":
        return _Work(s.hist, table_rows(s.window), table_rows(s.pending),
                     {(e["ds"], e["request_id"]): e for e in table_rows(s.emitted)},
                     s.truncated_at, s.last_snapshot, s.active, set(s.dirty))

    def merge_new_events(self) -> None:
        """Merge the events kept this call into the history, in (event_ts, event_id) order.
        They are all logged at or after the truncation point, where every event has its id.
        The history is in that order already (a null id as ""), so each new event goes after
        the events not above it: what a stable sort of both gives, without reading every id
        (a merge comes before each record, so it must not cost a sort of the history)."""
        if not self.new_events:
            return
        added = sorted(self.new_events, key=lambda e: (e["event_ts"], e["event_id"] or ""))
        ts = self.hist.column("event_ts").to_numpy()
        new_ts = np.array([e["event_ts"] for e in added], dtype=np.int64)
        at, end = np.searchsorted(ts, new_ts, side="left"), np.searchsorted(ts, new_ts, side="right")
        ids = self.hist.column("event_id")
        for j in np.flatnonzero(end > at):  # the same event_ts: the ids decide
            tied = [i or "" for i in ids.slice(at[j], end[j] - at[j]).to_pylist()]
            at[j] += bisect.bisect_right(tied, added[j]["event_id"] or "")
        n = self.hist.num_rows
        order = np.insert(np.arange(n), at, np.arange(n, n + len(added)))
        merged = pa.concat_tables([self.hist, pa.Table.from_pylist(added, schema=self.hist.schema)])
        self.hist = merged.take(order)
        self.new_events = []

    def truncate(self, t: int, max_len: int, lateness: int) -> None:
        self.merge_new_events()
        self.truncated_at = t
        ts = self.hist.column("event_ts").to_numpy()
        k = int(np.searchsorted(ts, t, side="left"))
        start = max(k - max_len, 0)
        hist = self.hist.slice(start)
        if k > start:  # settled events lose their id and ds, as USER_STATE's settled part has none
            settled = np.arange(hist.num_rows) < k - start
            for name in ("event_id", "ds"):
                i = hist.schema.get_field_index(name)
                column = hist.column(name)
                hist = hist.set_column(i, name, pc.if_else(pa.array(settled), pa.nulls(len(settled), column.type), column))
        self.hist = hist
        first_day = day_of(t)
        since = first_day * DAY_MS - lateness
        # kept events that a later row may duplicate (any later row has ds >= day(T));
        # notes of days no row can come from any more go
        self.window = [w for w in self.window
                       if (w["event_ts"] >= since if not w["counted_across"] else w["ds"] >= first_day)]
        self._by_id = None
        self.emitted = {k: e for k, e in self.emitted.items() if e["ds"] >= first_day}

    def to_state(self, spec: DatasetSpec) -> StreamState:
        self.merge_new_events()
        window = sorted(self.window, key=lambda w: (w["event_ts"], w["event_id"], w["ds"], w["counted_across"]))
        emitted = sorted(self.emitted.values(), key=lambda e: (e["ds"], e["request_id"]))
        order = dedup_order(spec)
        pending = sorted(self.pending, key=lambda r: _dedup_key(r, order) + (r["event_id"], r["ds"]))
        return StreamState(self.hist, table_of(window, WINDOW_SCHEMA), table_of(pending, pending_schema(spec)),
                           table_of(emitted, EMITTED_SCHEMA), self.truncated_at,
                           self.last_snapshot, self.active, tuple(sorted(self.dirty)))

    def is_empty(self) -> bool:
        return not (self.hist.num_rows or self.window or self.pending or self.emitted or self.active or self.dirty)


# ---------------------------------------------------------------- 1. arrival


def _kept_copy(row: dict, work: _Work, lateness: int) -> tuple[bool, bool]:
    """(is a duplicate of a kept event, of one kept on an earlier day) for a row of ds d:
    a copy kept in d, or on an earlier day and logged at most `lateness` before d began."""
    d, eid = row["ds"], row["event_id"]
    since = d * DAY_MS - lateness
    same = across = False
    for w in work.by_id.get(eid, ()):
        if w["counted_across"]:
            continue
        if w["ds"] == d:
            same = True
        elif w["ds"] < d and w["event_ts"] >= since:
            across = True
    return same or across, across and not same


def _count_duplicate(row: dict, across: bool, work: _Work, out: CallResult) -> None:
    """A duplicate; across days, only the first copy of an event in a ds counts as one
    (the batch build counts a duplicate across days per event_id and ds)."""
    d = row["ds"]
    out.counts[d]["duplicates"] += 1
    if across:
        noted = any(w["counted_across"] and w["ds"] == d for w in work.by_id.get(row["event_id"], ()))
        if not noted:
            out.counts[d]["duplicates_across_days"] += 1
            work.add_to_window({"event_id": row["event_id"], "event_ts": row["event_ts"], "ds": d,
                                "counted_across": True})


def _quarantine(row: dict, reason: str, out: CallResult) -> None:
    out.quarantine.append({**{k: v for k, v in row.items() if not k.startswith(VALUE_PREFIX)}, "reason": reason})


def _arrive_late(row: dict, work: _Work, out: CallResult, lateness: int) -> None:
    """A row that arrived after the watermark passed it: the requests it could change may be
    decided already, so it joins none; a copy of a kept event is a duplicate all the same."""
    duplicate, across = _kept_copy(row, work, lateness)
    if duplicate:
        _count_duplicate(row, across, work, out)
    else:
        _quarantine(row, LATE_ARRIVAL, out)


def _arrive(row: dict, work: _Work, out: CallResult) -> None:
    """An on-time row: pending until its request's deadline, unless that request is decided."""
    decided = work.emitted.get((row["ds"], row["request_id"]))
    if decided is not None:
        # on time after its request was decided: so its request_ts is later than the
        # decided one's, and the batch build quarantines every row of the request
        _quarantine(row, INCONSISTENT_REQUEST, out)
        if decided["record"] and not decided["divergent"]:
            decided["divergent"] = True
            out.counts[row["ds"]]["divergent_requests"] += 1
        return
    work.pending.append(row)


# ---------------------------------------------------------------- 2. due requests


def _dedup_key(row: dict, order: tuple[str, ...]) -> tuple:
    """The row's place in the dedup order (`dedup_order`), a null before any value."""
    return tuple((0,) if row[c] is None else (1, row[c]) for c in order)


@dataclass
class _Pending:
    """The pending rows of one call, indexed once: by request, and by event_id and ds, so
    that deciding a request reads its own rows and the copies of their events (few) rather
    than every pending row."""

    rows: list[dict]
    order: tuple[str, ...]  # dedup_order
    request_of: list[tuple[int, str]] = field(default_factory=list)  # row -> (ds, request_id)
    requests: dict[tuple[int, str], list[int]] = field(default_factory=lambda: defaultdict(list))  # in pending order
    copies: dict[tuple[str, int], list[int]] = field(default_factory=lambda: defaultdict(list))  # (event_id, ds) -> rows
    decided: set[tuple[int, str]] = field(default_factory=set)  # requests decided so far in the call
    keys: dict[int, tuple] = field(default_factory=dict)  # row -> _dedup_key, once read

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            request = (row["ds"], row["request_id"])
            self.request_of.append(request)
            self.requests[request].append(i)
            self.copies[(row["event_id"], row["ds"])].append(i)

    def key(self, i: int) -> tuple:
        if i not in self.keys:
            self.keys[i] = _dedup_key(self.rows[i], self.order)
        return self.keys[i]

    def smaller_copy(self, i: int) -> bool:
        """Whether a copy of row i's event in its ds that is still pending (a request decided
        earlier in the call has left the pending rows) is smaller by the dedup order; equal
        keys only within one request (the key holds request_id): the first copy stays."""
        copies = self.copies[(self.rows[i]["event_id"], self.rows[i]["ds"])]
        if len(copies) == 1:  # the usual case: no copy, no key to compute
            return False
        request, mine = self.request_of[i], self.key(i)
        for j in copies:
            if j == i or (self.request_of[j] != request and self.request_of[j] in self.decided):
                continue
            theirs = self.key(j)
            if theirs < mine or (theirs == mine and self.request_of[j] == request and j < i):
                return True
        return False

    def remaining(self) -> list[dict]:
        return [r for r, request in zip(self.rows, self.request_of) if request not in self.decided]


def _decide_due(user_id: int, wm: int, work: _Work, out: CallResult, settings: StreamSettings) -> None:
    spec, lateness = settings.spec, settings.lateness_ms
    pending = _Pending(work.pending, dedup_order(spec))
    due = []
    for key, at in pending.requests.items():
        min_ts = min(pending.rows[i]["request_ts"] for i in at)
        if min_ts + lateness < wm:
            due.append((min_ts, key))
    if not due:
        return
    history = _history_fields(spec)
    written: list[tuple[tuple[int, str], int, list[dict]]] = []  # (request, request_ts, kept rows)
    for min_ts, key in sorted(due):
        rows = [pending.rows[i] for i in pending.requests[key]]
        pending.decided.add(key)
        if len({r["request_ts"] for r in rows}) > 1:
            for r in rows:
                _quarantine(r, INCONSISTENT_REQUEST, out)
            work.emitted[key] = {"ds": key[0], "request_id": key[1], "min_request_ts": min_ts, "record": False,
                                 "divergent": False}
            continue
        kept = _dedupe(pending.requests[key], pending, work, out, lateness)
        if kept:
            written.append((key, min_ts, kept))
            for r in kept:
                work.new_events.append(_event(r, history))
                work.add_to_window({"event_id": r["event_id"], "event_ts": r["event_ts"], "ds": r["ds"],
                                    "counted_across": False})
                work.dirty.add(r["ds"])
        work.emitted[key] = {"ds": key[0], "request_id": key[1], "min_request_ts": min_ts, "record": bool(kept),
                             "divergent": False}
    work.pending = pending.remaining()
    out.records += _records(user_id, written, work, settings)


def _dedupe(at: list[int], pending: _Pending, work: _Work, out: CallResult, lateness: int) -> list[dict]:
    """The request's rows (positions `at` in the pending rows) that stay: no copy kept before
    (in the ds, or on an earlier day within the bound), and the smallest by dedup_order among
    the pending copies in the ds."""
    kept: list[dict] = []
    for i in at:
        row = pending.rows[i]
        duplicate, across = _kept_copy(row, work, lateness)
        if duplicate or pending.smaller_copy(i):
            _count_duplicate(row, across, work, out)
        else:
            kept.append(row)
    return kept


def _history_fields(spec: DatasetSpec) -> tuple[str, ...]:
    """The history fields whose values a kept row carries (VALUE_PREFIX)."""
    return ("action", *(f.name for f in spec.features_on("history")))


def _event(row: dict, values: tuple[str, ...]) -> dict:
    """A kept row as a history event (hist_schema's columns)."""
    return {"item_id": row["item_id"], "author_id": row["author_id"], "event_ts": row["event_ts"],
            **{n: row[VALUE_PREFIX + n] for n in values}, "event_id": row["event_id"], "ds": row["ds"]}


def _records(user_id: int, written: list[tuple[tuple[int, str], int, list[dict]]], work: _Work,
             settings: StreamSettings) -> list[dict]:
    """The records of the requests a call wrote, in the order decided. A record's history is
    the last max_len events before its request_ts, and no event kept in this call by it or a
    later request is among them (each is logged at or after its own request_ts, and requests
    are decided in request_ts order): so one merge of the call's events and one conversion of
    the part of the history the records read serve them all."""
    if not written:
        return []
    c, max_len = contracts_of(settings.spec), settings.max_len
    work.merge_new_events()
    ends = np.searchsorted(work.hist.column("event_ts").to_numpy(), [ts for _, ts, _ in written], side="left")
    first = max(int(ends.min()) - max_len, 0)
    part = work.hist.slice(first, int(ends.max()) - first)
    columns = {n: pylist(part.column(n)) for n in c.history_names}
    target_values = {f.name for f in settings.spec.features_on("target")}

    def target_value(r: dict, name: str) -> Any:
        return r[VALUE_PREFIX + name] if name in target_values else r[name]

    records = []
    for ((ds, request_id), request_ts, kept), end in zip(written, ends):
        start, end = max(int(end) - max_len, 0) - first, int(end) - first
        targets = sorted(kept, key=lambda r: (r["position"], r["event_id"]))
        records.append({
            "request_id": request_id, "user_id": user_id, "request_ts": request_ts,
            **{HIST_PREFIX + n: values[start:end] for n, values in columns.items()},
            **{TGT_PREFIX + n: [target_value(r, n) for r in targets] for n in c.target_names},
            "ds": ds,
        })
    return records


# ---------------------------------------------------------------- 3. snapshots, timeouts


def _snapshot_due(user_id: int, wm: int, work: _Work, out: CallResult, settings: StreamSettings) -> None:
    """USER_STATE rows of the days now closed for this user (end + lateness < wm). An idle
    user's row would equal the day before's, so none is written (the sink carries it over)."""
    last_due = day_of(wm - settings.lateness_ms - 1) - 1  # the last day D with end(D) + lateness < wm
    state = None
    for day in range(work.last_snapshot + 1, last_due + 1):
        if not work.active and not any(d >= day for d in work.dirty):
            break  # idle from here on: every later row would equal the last one
        if work.active or day in work.dirty:
            state = state or work.to_state(settings.spec)
            row = to_user_state(state, user_id, EPOCH + dt.timedelta(days=day), settings.max_len,
                                settings.lateness_ms, settings.spec)
            out.snapshots.append((day, row))
            work.active = bool(row["pending_event_id"] or row["dedup_event_id"])
        work.dirty.discard(day)
    work.last_snapshot = max(work.last_snapshot, last_due)


def _day_end(day: int) -> int:
    return (day + 1) * DAY_MS


def _next_timeout(work: _Work, lateness: int) -> int | None:
    """When this user must be called again without new rows: its next request deadline, or
    the end of its next snapshot day, plus the lateness bound."""
    candidates = []
    requests: dict[tuple[int, str], int] = {}
    for r in work.pending:
        key = (r["ds"], r["request_id"])
        requests[key] = min(requests.get(key, r["request_ts"]), r["request_ts"])
    candidates += [ts + lateness for ts in requests.values()]
    if work.active or work.dirty:
        candidates.append(_day_end(work.last_snapshot + 1) + lateness)
    return min(candidates) if candidates else None
