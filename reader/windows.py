"""A row group of user-days (the compact layout) as request windows, materialised a piece at a time.

A user-day row holds its user's events once; each of its requests reads a window of them
(dataset/compact.py). `windows_of_user_days` takes a row group's rows and draws, as for a
row group of request records (reader.steps.draw_order_and_keep), the order of its requests
and how many events each keeps; nothing is copied yet. `Windows.pieces` then cuts the
requests, in that order, into RequestChunks of about `tokens` history events each: a reader
holds one piece of full-length histories at a time, never a user-day's worth of them (a user
with 1,000 requests in a day is 1,000 windows over one sequence, materialised a piece at a
time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longseq.dataset.compact import UserDays
from longseq.reader.chunks import CorruptRecordsError, RequestChunk, arrow_values, record_columns, windows
from longseq.reader.steps import ReaderConfig, draw_order_and_keep
from longseq.schemas.contracts import DEFAULT_SPEC
from longseq.schemas.spec import DatasetSpec

# history events a piece holds: about 1-2 batches of 10k histories; a piece holds at least one request
PIECE_TOKENS = 1 << 20


@dataclass
class Windows:
    """Requests in reading order, each a window of the flat hist values and a run of the flat
    tgt values of its row group."""

    request: dict[str, np.ndarray]  # name -> [n]
    hist: dict[str, np.ndarray]  # name -> the row group's sequences, flat
    hist_start: np.ndarray  # [n] int64
    hist_len: np.ndarray  # [n] int64, after truncation
    tgt: dict[str, np.ndarray]  # name -> the row group's targets, flat
    tgt_start: np.ndarray  # [n] int64
    tgt_len: np.ndarray  # [n] int64

    def __len__(self) -> int:
        return len(self.hist_len)

    def pieces(self, tokens: int = PIECE_TOKENS) -> Iterator[RequestChunk]:
        """RequestChunks of consecutive requests, each holding at most `tokens` history events
        (or one request)."""
        n, start = len(self), 0
        cum = np.cumsum(self.hist_len)
        while start < n:
            base = cum[start - 1] if start else 0
            end = max(int(np.searchsorted(cum, base + tokens, side="right")), start + 1)
            yield self.chunk(start, end)
            start = end

    def chunk(self, start: int, end: int) -> RequestChunk:
        """Requests [start, end) materialised."""
        return windows({k: v[start:end] for k, v in self.request.items()},
                       self.hist, self.hist_start[start:end], self.hist_len[start:end],
                       self.tgt, self.tgt_start[start:end], self.tgt_len[start:end])


def _flat(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    values = pc.list_flatten(column).combine_chunks()
    if column.null_count or values.null_count:
        raise CorruptRecordsError(f"column {name} holds nulls; user-day rows have none (contract user_day)")
    return arrow_values(values)


def windows_of_user_days(table: pa.Table, cfg: ReaderConfig, epoch: int, spec: DatasetSpec = DEFAULT_SPEC) -> Windows:
    """A row group of user_day rows -> its requests as windows, shuffled and truncated as
    cfg says (the same draws as for request rows with the same user_id and request_ts)."""
    days = UserDays.of(table)
    columns = record_columns(spec)
    ids = pc.list_flatten(table.column("request_id")).to_numpy(zero_copy_only=False).astype(np.str_)
    request = {"request_id": ids, "user_id": arrow_values(table.column("user_id").combine_chunks())[days.row],
               "request_ts": _flat(table, "request_ts")}
    if set(request) != set(columns.request):
        raise CorruptRecordsError(f"user-day rows carry {sorted(request)}, records {sorted(columns.request)}")
    order, keep = draw_order_and_keep(cfg, epoch, request["user_id"], request["request_ts"])
    order = np.arange(days.requests) if order is None else order
    h_len = days.hist_len[order] if keep is None else np.minimum(days.hist_len[order], keep)
    h_start = days.hist_start[order] + days.hist_len[order] - h_len  # the most recent h_len events
    return Windows({k: v[order] for k, v in request.items()}, {n: _flat(table, n) for n in columns.hist},
                   h_start, h_len, {n: _flat(table, n) for n in columns.tgt}, days.tgt_start[order],
                   days.tgt_count[order])
