"""The compact layout (contract `user_day`) and the request records it stands for.

A user's requests of one day see windows of one sequence: the user's events in history
order. The compact layout stores that sequence once per user-day, and per request where its
window ends and how long it is; its targets follow one request after the other:

    hist_*     e0 e1 e2 e3 e4 e5 e6 e7 e8 e9        (the user's events, stored once)
    request 0              [e3 e4 e5]               hist_end 6, hist_len 3 (max_len 3)
    request 1                       [e6 e7 e8]      hist_end 9, hist_len 3
    request 2                          [e7 e8 e9]   hist_end 10, hist_len 3
    tgt_*      t0 t1 | t2 | t3 t4 t5                tgt_count 2, 1, 3

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

from longseq.schemas.contracts import COMPACT_LAYOUT, DEFAULT_SPEC, HIST_PREFIX, REQUEST_LAYOUT, TGT_PREFIX, contracts_of
from longseq.schemas.forms import to_arrow
from longseq.schemas.spec import DatasetSpec

__all__ = ["UserDays", "file_layout", "materialize"]


def file_layout(column_names) -> str:
    """The layout of a records file, from its columns: user-day rows have window ends."""
    return COMPACT_LAYOUT if "hist_end" in column_names else REQUEST_LAYOUT


def _flat(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.list_flatten(column).to_numpy(zero_copy_only=False)


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Where each of consecutive runs of these lengths starts: [0, l0, l0 + l1, ...] (n + 1 values)."""
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    return starts


def _gather(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices, offsets) that take runs [starts[i], starts[i] + lengths[i]) one after the other."""
    offsets = _starts(lengths)
    indices = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    return indices, offsets


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
        hist_start = _starts(events)[:-1][row] + hist_end - hist_len
        return cls(table, hist_start, hist_len, _starts(tgt_count)[:-1], tgt_count, row)

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
    hist_idx, hist_offsets = _gather(days.hist_start[pick], days.hist_len[pick])
    tgt_idx, tgt_offsets = _gather(days.tgt_start[pick], days.tgt_count[pick])
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
