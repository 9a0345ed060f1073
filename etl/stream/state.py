"""One user's state in the stream (docs/plans/STREAMING_DESIGN.md, 2.2), its byte form, and
its conversion to and from a daily build's USER_STATE row.

Spark's state store keeps one value per user and decodes every user's value on every
micro-batch, so the state is one blob: a one-row Arrow IPC stream whose columns are the
sections below, each a list of structs.

    hist     the history events (the spec's history fields), ordered by (event_ts, event_id):
             the last max_len logged before the truncation point, then every later one (the
             tail); `event_id` and `ds` (days since epoch) are kept for the tail only, as
             USER_STATE keeps pending_event_id
    window   (event_id, event_ts, ds, counted_across) of kept events within the lateness
             bound: the dedup window, within a ds and across days; a row with
             counted_across set is no event but a note that a copy of event_id in ds was
             already counted as a duplicate across days (the batch counts it once per ds)
    pending  the valid rows of requests not yet emitted: the spec's raw columns, ds, and
             the values the records need (VALUE_PREFIX + action and each feature)
    emitted  (ds, request_id, min_request_ts, record, divergent) of requests already decided:
             whether a record was written, and whether a later row already made it divergent
    meta     truncated_at (ms), last_snapshot (days since epoch), active, dirty (the days
             with kept events since the last snapshot)

A daily build's state after day D converts to a stream state truncated at the end of D
(`from_user_state`), and a stream state gives the state after D back (`to_user_state`):
the handoff between daily builds and the stream, both ways.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from longseq.schemas.contracts import DAY_MS, HIST_PREFIX, contracts_of, day_start_ms
from longseq.schemas.forms import arrow_type
from longseq.schemas.spec import DatasetSpec

FORMAT_VERSION = 1
EPOCH = dt.date(1970, 1, 1)


def day_number(day: dt.date) -> int:
    return (day - EPOCH).days


def hist_schema(spec: DatasetSpec) -> pa.Schema:
    fields = [pa.field(f.name, arrow_type(f.dtype), nullable=False) for f in contracts_of(spec).history_event]
    return pa.schema([*fields, pa.field("event_id", pa.string()), pa.field("ds", pa.int32())])


WINDOW_SCHEMA = pa.schema([pa.field("event_id", pa.string(), nullable=False),
                           pa.field("event_ts", pa.int64(), nullable=False),
                           pa.field("ds", pa.int32(), nullable=False),
                           pa.field("counted_across", pa.bool_(), nullable=False)])
EMITTED_SCHEMA = pa.schema([pa.field("ds", pa.int32(), nullable=False),
                            pa.field("request_id", pa.string(), nullable=False),
                            pa.field("min_request_ts", pa.int64(), nullable=False),
                            pa.field("record", pa.bool_(), nullable=False),
                            pa.field("divergent", pa.bool_(), nullable=False)])
# The values a record takes from a row (the action flags, each feature) travel with the row
# under these names: a feature may share its input's name.
VALUE_PREFIX = "_v_"


def value_names(spec: DatasetSpec) -> tuple[str, ...]:
    """The history and target fields whose values are computed from a raw row, not copied."""
    return ("action", *(f.name for f in spec.features))


def pending_schema(spec: DatasetSpec) -> pa.Schema:
    c = contracts_of(spec)
    stored = {f.name: f.dtype for f in (*c.history_event, *c.target)}
    return pa.schema([*(pa.field(f.name, arrow_type(f.dtype)) for f in c.raw_log), pa.field("ds", pa.int32()),
                      *(pa.field(VALUE_PREFIX + n, arrow_type(stored[n])) for n in value_names(spec))])


SECTIONS = ("hist", "window", "pending", "emitted")


@dataclass
class StreamState:
    hist: pa.Table
    window: pa.Table
    pending: pa.Table
    emitted: pa.Table
    truncated_at: int  # ms: every event before it is settled (no later event can precede it)
    last_snapshot: int  # days since epoch of the last day handed out as USER_STATE
    active: bool = False  # its last snapshot had a tail or a dedup window, which age by the day
    dirty: tuple[int, ...] = ()  # days (since epoch) with kept events since the last snapshot

    @staticmethod
    def empty(spec: DatasetSpec, truncated_at: int = 0, last_snapshot: int = 0) -> "StreamState":
        return StreamState(hist_schema(spec).empty_table(), WINDOW_SCHEMA.empty_table(),
                           pending_schema(spec).empty_table(), EMITTED_SCHEMA.empty_table(), truncated_at,
                           last_snapshot)

    # ------------------------------------------------------------ bytes

    def encode(self) -> bytes:
        """One-row Arrow IPC stream: each section a list<struct> column, the rest in metadata."""
        columns = {name: _as_list(getattr(self, name)) for name in SECTIONS}
        meta = {"version": str(FORMAT_VERSION), "truncated_at": str(self.truncated_at),
                "last_snapshot": str(self.last_snapshot), "active": str(int(self.active)),
                "dirty": ",".join(map(str, self.dirty))}
        return ipc_bytes(pa.table(columns).replace_schema_metadata(meta))

    @staticmethod
    def decode(data: bytes, spec: DatasetSpec) -> "StreamState":
        batch = pa.ipc.open_stream(data).read_next_batch()
        meta = {k.decode(): v.decode() for k, v in (batch.schema.metadata or {}).items()}
        if meta.get("version") != str(FORMAT_VERSION):
            raise ValueError(f"stream state of format {meta.get('version')!r}; this code reads {FORMAT_VERSION}")
        schemas = {"hist": hist_schema(spec), "window": WINDOW_SCHEMA, "pending": pending_schema(spec),
                   "emitted": EMITTED_SCHEMA}
        tables = {name: _from_list(batch.column(name), schemas[name]) for name in SECTIONS}
        return StreamState(**tables, truncated_at=int(meta["truncated_at"]),
                           last_snapshot=int(meta["last_snapshot"]), active=meta["active"] == "1",
                           dirty=tuple(int(d) for d in meta["dirty"].split(",") if d))


def ipc_bytes(table: pa.Table) -> bytes:
    """A table as one Arrow IPC stream: how the stream's states and payloads travel."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def pylist(column: pa.ChunkedArray) -> list:
    """A column's Python values, as `to_pylist` gives them: through numpy for numbers without
    nulls, many times quicker (the state function converts every history it writes)."""
    t = column.type
    if column.null_count == 0 and (pa.types.is_integer(t) or t in (pa.float32(), pa.float64())):
        return column.to_numpy().tolist()
    return column.to_pylist()


def table_rows(table: pa.Table) -> list[dict]:
    """`table.to_pylist()`, a column at a time through `pylist`."""
    names = table.column_names
    return [dict(zip(names, values)) for values in zip(*(pylist(table.column(n)) for n in names))]


def table_of(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """`pa.Table.from_pylist(rows, schema)` for rows that hold every column: a column at a
    time, about three times quicker."""
    return pa.Table.from_arrays([pa.array([r[f.name] for r in rows], f.type) for f in schema], schema=schema)


def _as_list(table: pa.Table) -> pa.Array:
    structs = pa.StructArray.from_arrays([table.column(n).combine_chunks() for n in table.column_names],
                                         fields=list(table.schema))
    return pa.ListArray.from_arrays(pa.array([0, len(table)], pa.int32()), structs)


def _from_list(column: pa.Array, schema: pa.Schema) -> pa.Table:
    structs = column.flatten()
    return pa.Table.from_arrays([structs.field(n) for n in schema.names], schema=schema)


# ---------------------------------------------------------------- the handoff with daily builds


def from_user_state(row: dict, day: dt.date, spec: DatasetSpec) -> StreamState:
    """The stream state of a user whose daily state after `day` is `row` (USER_STATE's
    columns): truncated at the end of the day, its tail (pending_event_id) and dedup window
    of that day."""
    d = day_number(day)
    names = contracts_of(spec).history_names
    n = len(row[HIST_PREFIX + "event_ts"])
    tail = list(row["pending_event_id"])
    settled = n - len(tail)
    hist = pa.table({**{f: row[HIST_PREFIX + f] for f in names},
                     "event_id": [None] * settled + tail, "ds": [None] * settled + [d] * len(tail)},
                    schema=hist_schema(spec))
    ids, times = list(row["dedup_event_id"]), list(row["dedup_event_ts"])
    window = pa.table({"event_id": ids, "event_ts": times, "ds": [d] * len(ids), "counted_across": [False] * len(ids)},
                      schema=WINDOW_SCHEMA)
    state = StreamState.empty(spec, truncated_at=day_start_ms(day) + DAY_MS, last_snapshot=d)
    state.hist, state.window, state.active = hist, window, bool(tail or ids)
    return state


def to_user_state(state: StreamState, user_id: int, day: dt.date, max_len: int, lateness_ms: int,
                  spec: DatasetSpec) -> dict:
    """The user's USER_STATE row after `day`: the last max_len events logged before the end
    of the day, then the later events of that day or before (their ids: pending_event_id),
    and the dedup window's events of that day or before logged within the lateness bound
    of the day's end, ordered by (event_ts, event_id)."""
    d, end = day_number(day), day_start_ms(day) + DAY_MS
    names = contracts_of(spec).history_names
    hist = state.hist  # in event_ts order: the events before the end are its first k
    k = int(np.searchsorted(hist.column("event_ts").to_numpy(), end, side="left"))
    ds = hist.column("ds").slice(k).to_numpy(zero_copy_only=False)  # null: NaN, never <= d
    after = k + np.flatnonzero(ds <= d)
    kept = hist.take(np.concatenate([np.arange(max(k - max_len, 0), k), after]))
    window = sorted((w for w in state.window.to_pylist()
                     if not w["counted_across"] and w["ds"] <= d and w["event_ts"] >= end - lateness_ms),
                    key=lambda w: (w["event_ts"], w["event_id"]))
    return {
        "user_id": user_id,
        **{HIST_PREFIX + f: pylist(kept.column(f)) for f in names},
        "pending_event_id": pylist(hist.column("event_id").take(after)),
        "dedup_event_id": [w["event_id"] for w in window],
        "dedup_event_ts": [w["event_ts"] for w in window],
    }
