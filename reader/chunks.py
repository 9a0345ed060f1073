"""RequestChunk: a run of request records as flat numpy arrays plus offsets.

This is the reader's unit of work, before torch: request b's history is
`hist[name][hist_offsets[b]:hist_offsets[b + 1]]` for every history column, its targets
likewise with `tgt_offsets`. Nothing is padded. Columns keep their contract names
(schemas/contracts.py), so a feature added to the contract flows through unchanged.

The operations are the few the reader needs, all pure: read a Parquet row group
(`chunk_from_arrow`), reorder and truncate (`select`), cut (`slice_chunk`) and join
(`concat`). Which columns a chunk holds is the dataset spec's (`record_columns`): the ids,
times, action and labels of every spec, and its side features.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

from longseq.dataset.compact import offsets_of, run_positions
from longseq.features.hashing import mix64
from longseq.schemas.contracts import DEFAULT_SPEC, contracts_of
from longseq.schemas.errors import LongseqError
from longseq.schemas.spec import DatasetSpec
from longseq.schemas.types import ListOf


@dataclass(frozen=True)
class RecordColumns:
    """The request record's columns of one spec, as a chunk holds them."""

    request: tuple[str, ...]  # one value per request: request_id, user_id, request_ts
    hist: tuple[str, ...]  # hist_* lists, aligned
    tgt: tuple[str, ...]  # tgt_* lists, aligned

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.request, *self.hist, *self.tgt)


@lru_cache(maxsize=None)
def record_columns(spec: DatasetSpec = DEFAULT_SPEC) -> RecordColumns:
    c = contracts_of(spec)
    return RecordColumns(tuple(f.name for f in c.request_record.fields if not isinstance(f.dtype, ListOf)),
                         c.history_columns, c.target_columns)


# the default spec's columns
HIST_NAMES: tuple[str, ...] = record_columns().hist
TGT_NAMES: tuple[str, ...] = record_columns().tgt
REQUEST_NAMES: tuple[str, ...] = record_columns().request


class CorruptRecordsError(LongseqError):
    """Request records that break contract 2 (misaligned lists, nulls, missing columns)."""


@dataclass
class RequestChunk:
    request: dict[str, np.ndarray]  # name -> [n]: request_id, user_id, request_ts
    hist_offsets: np.ndarray  # [n + 1] int64, starts at 0
    hist: dict[str, np.ndarray]  # name -> [hist_offsets[-1]]
    tgt_offsets: np.ndarray  # [n + 1] int64, starts at 0
    tgt: dict[str, np.ndarray]  # name -> [tgt_offsets[-1]]

    def __len__(self) -> int:
        return len(self.hist_offsets) - 1

    @property
    def hist_lengths(self) -> np.ndarray:
        return np.diff(self.hist_offsets)

    @property
    def tgt_lengths(self) -> np.ndarray:
        return np.diff(self.tgt_offsets)

    @property
    def num_history_tokens(self) -> int:
        return int(self.hist_offsets[-1])


# ---------------------------------------------------------------- from Parquet


def arrow_values(arr: pa.Array) -> np.ndarray:
    """A primitive, null-free Arrow array as a numpy view of its buffer (no copy; pyarrow
    14's to_numpy copies through a slower path)."""
    dtype = np.dtype(arr.type.to_pandas_dtype())
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def _list_parts(name: str, column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = arr.flatten()
    if arr.null_count or values.null_count:
        raise CorruptRecordsError(f"column {name} holds nulls; request records have none (contract 2)")
    offsets = arrow_values(arr.offsets).astype(np.int64)
    return offsets - offsets[0], arrow_values(values)


def _aligned(names: tuple[str, ...], table: pa.Table) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One offsets array for columns that the contract says are aligned, or a clear error."""
    offsets, values = None, {}
    for name in names:
        col_offsets, values[name] = _list_parts(name, table.column(name))
        if offsets is None:
            offsets = col_offsets
        elif not np.array_equal(offsets, col_offsets):
            raise CorruptRecordsError(f"lists of {names[0]} and {name} differ in length; they must be aligned (contract 2)")
    assert offsets is not None
    return offsets, values


def chunk_from_arrow(table: pa.Table | pa.RecordBatch, spec: DatasetSpec = DEFAULT_SPEC) -> RequestChunk:
    """The chunk of a table of request records of `spec` (any column order; extra columns ignored)."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    columns = record_columns(spec)
    missing = [n for n in columns.all if n not in table.column_names]
    if missing:
        raise CorruptRecordsError(f"request records lack column(s) {', '.join(missing)} "
                                  f"(of dataset spec {spec.name!r})")
    request = {}
    for name in columns.request:
        col = table.column(name)
        if col.null_count:
            raise CorruptRecordsError(f"column {name} holds nulls; request records have none (contract 2)")
        request[name] = col.to_numpy().astype(np.str_) if pa.types.is_string(col.type) else arrow_values(col.combine_chunks())
    hist_offsets, hist = _aligned(columns.hist, table)
    tgt_offsets, tgt = _aligned(columns.tgt, table)
    return RequestChunk(request, hist_offsets, hist, tgt_offsets, tgt)


# ---------------------------------------------------------------- operations


def _runs(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, total: int) -> np.ndarray:
    """values[starts[i]:starts[i] + lengths[i]] for each i, concatenated.

    Long runs (histories) are copied slice by slice, at memcpy speed; short ones (targets)
    through one fancy index, which has less overhead per run."""
    if len(lengths) and total >= 64 * len(lengths):
        return np.concatenate([values[s:s + n] for s, n in zip(starts.tolist(), lengths.tolist())]) if total else values[:0]
    return values[run_positions(starts, lengths)]


def select(chunk: RequestChunk, index: np.ndarray, keep: np.ndarray | None = None) -> RequestChunk:
    """Requests `index`, in that order; with `keep`, each keeps only its most recent keep[i]
    history events (a history shorter than that stays whole)."""
    index = np.asarray(index, dtype=np.int64)
    h_end = chunk.hist_offsets[index + 1]
    h_len = h_end - chunk.hist_offsets[index]
    if keep is not None:
        h_len = np.minimum(h_len, np.asarray(keep, dtype=np.int64))
    t_start = chunk.tgt_offsets[index]
    return windows({k: v[index] for k, v in chunk.request.items()}, chunk.hist, h_end - h_len, h_len,
                   chunk.tgt, t_start, chunk.tgt_offsets[index + 1] - t_start)


def windows(request: dict[str, np.ndarray], hist: dict[str, np.ndarray], hist_start: np.ndarray,
            hist_len: np.ndarray, tgt: dict[str, np.ndarray], tgt_start: np.ndarray, tgt_len: np.ndarray) -> RequestChunk:
    """The chunk of requests whose histories are runs hist[name][hist_start[i]:][:hist_len[i]]
    of shared values (runs may overlap: the windows of one user-day) and whose targets are
    runs of tgt likewise, copied one after the other."""
    hist_offsets, tgt_offsets = offsets_of(hist_len), offsets_of(tgt_len)
    h_total, t_total = int(hist_offsets[-1]), int(tgt_offsets[-1])
    return RequestChunk(
        request,
        hist_offsets, {k: _runs(v, hist_start, hist_len, h_total) for k, v in hist.items()},
        tgt_offsets, {k: _runs(v, tgt_start, tgt_len, t_total) for k, v in tgt.items()},
    )


def slice_chunk(chunk: RequestChunk, start: int, stop: int) -> RequestChunk:
    """Requests [start, stop) as views (no copy but the offsets)."""
    h0, h1 = chunk.hist_offsets[start], chunk.hist_offsets[stop]
    t0, t1 = chunk.tgt_offsets[start], chunk.tgt_offsets[stop]
    return RequestChunk(
        {k: v[start:stop] for k, v in chunk.request.items()},
        chunk.hist_offsets[start:stop + 1] - h0, {k: v[h0:h1] for k, v in chunk.hist.items()},
        chunk.tgt_offsets[start:stop + 1] - t0, {k: v[t0:t1] for k, v in chunk.tgt.items()},
    )


def _join_offsets(parts: list[np.ndarray]) -> np.ndarray:
    return offsets_of(np.concatenate([np.diff(p) for p in parts]))


def concat(chunks: list[RequestChunk]) -> RequestChunk:
    if len(chunks) == 1:
        return chunks[0]
    first = chunks[0]
    return RequestChunk(
        {k: np.concatenate([c.request[k] for c in chunks]) for k in first.request},
        _join_offsets([c.hist_offsets for c in chunks]), {k: np.concatenate([c.hist[k] for c in chunks]) for k in first.hist},
        _join_offsets([c.tgt_offsets for c in chunks]), {k: np.concatenate([c.tgt[k] for c in chunks]) for k in first.tgt},
    )


def select_many(chunks: list[RequestChunk], index: np.ndarray) -> RequestChunk:
    """Requests `index`, numbered across the chunks in order, in that order: like
    select(concat(chunks), index) but with long histories copied once, not twice."""
    hist_len = np.concatenate([c.hist_lengths for c in chunks])
    if len(chunks) == 1 or hist_len.sum() < 64 * max(len(hist_len), 1):
        return select(concat(chunks), index)
    index = np.asarray(index, dtype=np.int64)
    which = np.repeat(np.arange(len(chunks)), [len(c) for c in chunks])[index]
    h_start = np.concatenate([c.hist_offsets[:-1] for c in chunks])[index]
    t_start = np.concatenate([c.tgt_offsets[:-1] for c in chunks])[index]
    h_len, t_len = hist_len[index], np.concatenate([c.tgt_lengths for c in chunks])[index]
    owner = which.tolist()

    def runs(side: str, name: str, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        columns = [getattr(c, side)[name] for c in chunks]
        parts = [columns[w][s:s + n] for w, s, n in zip(owner, starts.tolist(), lengths.tolist())]
        return np.concatenate(parts) if parts else columns[0][:0]

    return RequestChunk(
        {k: np.concatenate([c.request[k] for c in chunks])[index] for k in chunks[0].request},
        offsets_of(h_len), {k: runs("hist", k, h_start, h_len) for k in chunks[0].hist},
        offsets_of(t_len), {k: runs("tgt", k, t_start, t_len) for k in chunks[0].tgt},
    )


def content_key(user_id: np.ndarray, request_ts: np.ndarray) -> int:
    """A stable identity of a run of requests from its content (its first request and its
    size), so that its random draws do not depend on which worker read it or when."""
    if not len(user_id):
        return 0
    user, ts = int(user_id[0]), int(request_ts[0])
    return int(mix64(mix64(user, salt=len(user_id)) ^ np.uint64(ts & (2**64 - 1)))) & (2**63 - 1)
