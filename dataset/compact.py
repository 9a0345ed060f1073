"""The compact layout (contract `user_day`) and the request records it stands for.

A user's requests of one day see windows of one sequence: the user's events in history
order. The compact layout stores the events of those windows once per user-day, and per
request where its window ends and how long it is; its targets follow one request after the
other (max_len 3; K: the user's events before the request):

    the user's events  e0 e1 e2 e3 e4 e5 e6 e7 e8 e9 e10 e11
    request 0 (K 5)          [e2 e3 e4]
    request 1 (K 6)             [e3 e4 e5]
    request 2 (K 11)                        [e8 e9 e10]

    hist_*     e2 e3 e4 e5 e8 e9 e10     (stored once)
    request 0  [e2 e3 e4]                hist_end 3, hist_len 3
    request 1     [e3 e4 e5]             hist_end 4, hist_len 3
    request 2              [e8 e9 e10]   hist_end 7, hist_len 3
    tgt_*      t0 t1 | t2 | t3 t4 t5     tgt_count 2, 1, 3

Request i stores its window's events from K[i-1] on: windows only move forward, so each is
a run of the stored events.

`materialize` cuts request records (contract 2) out of user-day rows: all of them, or the
requests a reader picks (any order, across rows), so that a reader holds windows for one
batch at a time, never a user-day's worth. It gathers with index arrays: no Python runs per
request or event.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longseq.schemas.contracts import COMPACT_LAYOUT, DEFAULT_SPEC, HIST_PREFIX, REQUEST_LAYOUT, TGT_PREFIX, contracts_of
from longseq.schemas.forms import to_arrow
from longseq.schemas.spec import DatasetSpec

__all__ = ["UserDays", "file_layout", "materialize", "offsets_of", "request_count", "request_records", "requests_of", "row_group_requests", "run_positions",
           "sorted_records", "user_days_of"]


def file_layout(column_names) -> str:
    """The layout of a records file, from its columns: user-day rows have window ends."""
    return COMPACT_LAYOUT if "hist_end" in column_names else REQUEST_LAYOUT


def _flat(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.list_flatten(column).to_numpy(zero_copy_only=False)


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """[0, l0, l0 + l1, ...]: the offsets of consecutive runs of these lengths (n + 1 values)."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def run_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """starts[i], starts[i] + 1, ..., starts[i] + lengths[i] - 1 for each i, concatenated."""
    offsets = offsets_of(lengths)
    return np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)


@dataclass(frozen=True)
class UserDays:
    """A table of user-day rows, indexed by request: request k of the table (0-based, over
    all rows in order) has its history at hist_start[k]:hist_start[k] + hist_len[k] and its
    targets at tgt_start[k]:tgt_start[k] + tgt_count[k] of the flattened lists."""

    table: pa.Table
    hist_start: np.ndarray  # int64 [requests]
    hist_len: np.ndarray  # int64 [requests]
    tgt_start: np.ndarray  # int64 [requests]
    tgt_count: np.ndarray  # int64 [requests]
    row: np.ndarray  # int64 [requests]: the user-day row each request is in

    @classmethod
    def of(cls, table: pa.Table) -> "UserDays":
        per_row = pc.list_value_length(table["request_id"]).to_numpy(zero_copy_only=False).astype(np.int64)
        row = np.repeat(np.arange(table.num_rows, dtype=np.int64), per_row)
        events = pc.list_value_length(table["hist_event_ts"]).to_numpy(zero_copy_only=False).astype(np.int64)
        hist_end = _flat(table["hist_end"]).astype(np.int64)
        hist_len = _flat(table["hist_len"]).astype(np.int64)
        tgt_count = _flat(table["tgt_count"]).astype(np.int64)
        hist_start = offsets_of(events)[:-1][row] + hist_end - hist_len
        return cls(table, hist_start, hist_len, offsets_of(tgt_count)[:-1], tgt_count, row)

    @property
    def requests(self) -> int:
        return len(self.row)


def materialize(user_days: pa.Table | UserDays, spec: DatasetSpec = DEFAULT_SPEC,
                select: np.ndarray | None = None) -> pa.Table:
    """The request records (contract 2 of `spec`) of user-day rows: every request in table
    order (rows by user, requests by (request_ts, request_id) within each), or the requests
    numbered in `select`, in that order."""
    days = user_days if isinstance(user_days, UserDays) else UserDays.of(user_days)
    c = contracts_of(spec)
    table = days.table
    pick = np.arange(days.requests, dtype=np.int64) if select is None else np.asarray(select, dtype=np.int64)
    hist_start, hist_len = days.hist_start[pick], days.hist_len[pick]
    tgt_start, tgt_count = days.tgt_start[pick], days.tgt_count[pick]
    hist_idx, hist_offsets = run_positions(hist_start, hist_len), offsets_of(hist_len)
    tgt_idx, tgt_offsets = run_positions(tgt_start, tgt_count), offsets_of(tgt_count)
    schema = to_arrow(c.request_record)

    def scalars(name: str, index: np.ndarray, flat: bool) -> pa.Array:
        column = pc.list_flatten(table[name]) if flat else table[name]
        return column.take(pa.array(index)).combine_chunks().cast(schema.field(name).type)

    def lists(name: str, offsets: np.ndarray, index: np.ndarray) -> pa.Array:
        values = pc.list_flatten(table[name]).take(pa.array(index)).combine_chunks()
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values).cast(schema.field(name).type)

    columns = {"request_id": scalars("request_id", pick, True), "user_id": scalars("user_id", days.row[pick], False),
               "request_ts": scalars("request_ts", pick, True)}
    columns |= {HIST_PREFIX + n: lists(HIST_PREFIX + n, hist_offsets, hist_idx) for n in c.history_names}
    columns |= {TGT_PREFIX + n: lists(TGT_PREFIX + n, tgt_offsets, tgt_idx) for n in c.target_names}
    return pa.table([columns[f.name] for f in schema], schema=schema)


def _count_below(ts: np.ndarray, start: np.ndarray, length: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Per window ts[start:start + length] (sorted), how many of its values are below `bound`:
    one binary search per window, all windows at once."""
    lo, hi = start.copy(), start + length
    if not len(ts):
        return np.zeros_like(start)
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo - start
        mid = (lo + hi) // 2
        below = open_ & (ts[np.minimum(mid, len(ts) - 1)] < bound)
        lo = np.where(below, mid + 1, lo)
        hi = np.where(open_ & ~below, mid, hi)


def user_days_of(table: pa.Table, spec: DatasetSpec = DEFAULT_SPEC) -> pa.Table:
    """The compact rows (contract user_day) of request records, or of user-day rows that
    split a user's requests over several rows (a stream's micro-batches and hours): one row
    per user, sorted by user_id, as a build writes them.

    A request's history is the last max_len events before its request_ts, so the part of its
    window that the previous request of its user also holds is its events before that
    request's request_ts: the rest is stored. Nothing else is needed to rebuild the sequence,
    and `materialize` gives the records back exactly."""
    c = contracts_of(spec)
    if file_layout(table.column_names) == COMPACT_LAYOUT:
        days = UserDays.of(table)
        user = table["user_id"].combine_chunks().take(pa.array(days.row))
        ids, ts = pc.list_flatten(table["request_id"]), pc.list_flatten(table["request_ts"])
        hist_start, hist_len, tgt_start, tgt_count = days.hist_start, days.hist_len, days.tgt_start, days.tgt_count
    else:
        user, ids, ts = table["user_id"], table["request_id"], table["request_ts"]
        hist_len = pc.list_value_length(table["hist_event_ts"]).to_numpy(zero_copy_only=False).astype(np.int64)
        tgt_count = pc.list_value_length(table[TGT_PREFIX + c.target_names[0]]).to_numpy(
            zero_copy_only=False).astype(np.int64)
        hist_start, tgt_start = offsets_of(hist_len)[:-1], offsets_of(tgt_count)[:-1]
    keys = pa.table({"user_id": user, "request_ts": ts, "request_id": ids})
    order = pc.sort_indices(keys, sort_keys=[("user_id", "ascending"), ("request_ts", "ascending"),
                                             ("request_id", "ascending")]).to_numpy().astype(np.int64)
    keys = keys.take(pa.array(order))
    hist_start, hist_len, tgt_start, tgt_count = hist_start[order], hist_len[order], tgt_start[order], tgt_count[order]
    users = keys["user_id"].to_numpy()
    request_ts = keys["request_ts"].to_numpy()
    n = len(order)
    first = np.ones(n, dtype=bool)
    first[1:] = users[1:] != users[:-1]
    # the events a request shares with the one before it: its events before that one's request_ts
    flat_ts = _flat(table["hist_event_ts"]).astype(np.int64)
    bound = np.where(first, np.iinfo(np.int64).min, np.concatenate([[0], request_ts[:-1]]))
    shared = _count_below(flat_ts, hist_start, hist_len, bound)
    piece_start, piece_len = hist_start + shared, hist_len - shared
    ends = np.cumsum(piece_len)
    row_of = np.cumsum(first) - 1  # the output row of each request
    row_starts = np.flatnonzero(first)
    events_before_row = (ends - piece_len)[row_starts]
    hist_end = ends - events_before_row[row_of]
    hist_idx, tgt_idx = run_positions(piece_start, piece_len), run_positions(tgt_start, tgt_count)
    request_offsets = np.append(row_starts, n)
    hist_offsets = np.append(events_before_row, ends[-1] if n else 0)
    tgt_ends = np.cumsum(tgt_count)
    tgt_offsets = np.append((tgt_ends - tgt_count)[row_starts], tgt_ends[-1] if n else 0)
    schema = to_arrow(c.user_day)

    def lists(values: pa.Array, offsets: np.ndarray, name: str) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values).cast(schema.field(name).type)

    def flat_of(name: str) -> pa.ChunkedArray:
        return pc.list_flatten(table[name])

    columns = {
        "user_id": keys["user_id"].take(pa.array(row_starts)).combine_chunks(),
        "request_id": lists(keys["request_id"].combine_chunks(), request_offsets, "request_id"),
        "request_ts": lists(keys["request_ts"].combine_chunks(), request_offsets, "request_ts"),
        "hist_end": lists(pa.array(hist_end, pa.int32()), request_offsets, "hist_end"),
        "hist_len": lists(pa.array(hist_len, pa.int32()), request_offsets, "hist_len"),
        "tgt_count": lists(pa.array(tgt_count, pa.int32()), request_offsets, "tgt_count"),
        **{HIST_PREFIX + f: lists(flat_of(HIST_PREFIX + f).take(pa.array(hist_idx)).combine_chunks(), hist_offsets,
                                  HIST_PREFIX + f) for f in c.history_names},
        **{TGT_PREFIX + f: lists(flat_of(TGT_PREFIX + f).take(pa.array(tgt_idx)).combine_chunks(), tgt_offsets,
                                 TGT_PREFIX + f) for f in c.target_names},
    }
    return pa.table([columns[f.name].cast(f.type) for f in schema], schema=schema)


def sorted_records(table: pa.Table, spec: DatasetSpec, layout: str) -> pa.Table:
    """Records (of either layout) in `layout`, in the order a build writes them: request rows
    by (user_id, request_ts, request_id), or one user-day row per user (`user_days_of`)."""
    if layout == COMPACT_LAYOUT:
        return user_days_of(table, spec)
    return request_records(table, spec).sort_by(
        [("user_id", "ascending"), ("request_ts", "ascending"), ("request_id", "ascending")])


def request_records(table: pa.Table, spec: DatasetSpec = DEFAULT_SPEC) -> pa.Table:
    """Records of either layout as request records (contract 2 of `spec`), in table order."""
    return materialize(table, spec) if file_layout(table.column_names) == COMPACT_LAYOUT else table


def row_group_requests(meta: pq.FileMetaData) -> list[int]:
    """Requests in each row group of a records file of either layout, from its footer: a
    row group of user-day rows holds as many as its hist_len lists hold values (a user-day
    has at least one request, so no list is empty)."""
    if file_layout(meta.schema.to_arrow_schema().names) != COMPACT_LAYOUT:
        return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    leaf = next(i for i in range(meta.num_columns) if meta.schema.column(i).path.startswith("hist_len."))
    return [meta.row_group(g).column(leaf).num_values for g in range(meta.num_row_groups)]


def request_count(table: pa.Table) -> int:
    """How many requests records of either layout hold."""
    if file_layout(table.column_names) == COMPACT_LAYOUT:
        return int(pc.sum(pc.list_value_length(table["request_id"])).as_py() or 0)
    return table.num_rows


def requests_of(table: pa.Table, layout: str) -> pa.Table:
    """(request_id, hist_len, tgt_count) of each request in records of `layout` (the compact
    one's columns request_id, hist_len, tgt_count; the request one's request_id,
    hist_event_ts, tgt_item_id are enough)."""
    if layout == COMPACT_LAYOUT:
        return pa.table({n: pc.list_flatten(table[n]) for n in ("request_id", "hist_len", "tgt_count")})
    return pa.table({"request_id": table["request_id"], "hist_len": pc.list_value_length(table["hist_event_ts"]),
                     "tgt_count": pc.list_value_length(table["tgt_item_id"])})
