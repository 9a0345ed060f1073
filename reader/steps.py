"""What every request reader does to row groups, whichever library reads them: the
schedule of row groups (Petastorm's rule), the per-row-group shuffle and truncation
(worker side), the shuffle buffer and batching (main thread). reader/readers.py opens the
readers; they share these steps so that they give the same batches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

import numpy as np

from longseq.features.hashing import mix64
from longseq.features.lengths import LengthSampler
from longseq.schemas.contracts import DAY_MS, TASKS
from longseq.schemas.errors import LongseqError
from longseq.reader.batch import RequestBatch, batch_from_chunk
from longseq.reader.chunks import (
    RequestChunk, concat, content_key, run_positions, select, select_many, slice_chunk,
)


@dataclass
class ReaderConfig:
    """How to read. The defaults suit 10k histories on a few cores: two worker threads, two
    row groups (about 32 MB decoded each) queued, a shuffle buffer of 512 requests."""

    batch_size: int = 256  # requests per batch; with token_budget, the most a batch may hold
    token_budget: int | None = None  # history tokens per batch (batch-level load balancing)
    shuffle: bool = True  # row groups, rows within them, and the shuffle buffer
    shuffle_buffer: int = 512  # requests mixed across row groups (0: none)
    seed: int = 0
    shard: int = 0  # this process's shard: a data-parallel rank
    shard_count: int = 1  # the data-parallel world size; shards are disjoint row groups
    truncation: LengthSampler | None = None  # training: most recent suffix of a sampled length
    max_len: int | None = None  # a cap on history length (scoring at 2k of 10k); None: full
    drop_last: bool = False  # drop an epoch's last, short batch
    exact_batches: bool = True  # False: a batch may end early at a row group's end (no copy)
    workers: int = 2  # Petastorm worker threads (the batches do not depend on how many)
    queue_size: int = 2  # row groups read ahead (bounds memory)
    pin_memory: bool = False  # page-locked batches, for non_blocking copies to a GPU
    # length bucketing: pool this many requests, sort them by (truncated) history length and
    # batch neighbours, so that a batch pads to about its own lengths, not to the longest of a
    # random few (0: off). When shuffling, a pool's batches come in random order.
    bucket_pool: int = 0
    # keep each user-day's requests together, in request_ts order, in consecutive batches
    # (the order of user-days is still shuffled); off: requests are shuffled across user-days
    group_user_days: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise LongseqError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.token_budget is not None and self.token_budget < 1:
            raise LongseqError(f"token_budget must be at least 1, got {self.token_budget}")
        if not 0 <= self.shard < self.shard_count:
            raise LongseqError(f"shard must be in [0, shard_count={self.shard_count}), got {self.shard}")
        if self.max_len is not None and self.max_len < 0:
            raise LongseqError(f"max_len must be >= 0, got {self.max_len}")
        if self.workers < 1 or self.queue_size < 1 or self.shuffle_buffer < 0 or self.bucket_pool < 0:
            raise LongseqError("workers and queue_size must be >= 1, shuffle_buffer and bucket_pool >= 0")
        if self.group_user_days and self.bucket_pool:
            raise LongseqError("group_user_days and bucket_pool do not go together: length buckets sort a user-day's "
                               "requests apart")

    def for_scoring(self) -> "ReaderConfig":
        """Full-length (or max_len) histories in file order, every request once; batches
        end at row-group ends, as copying them whole buys nothing when scoring."""
        return dataclasses.replace(self, shuffle=False, truncation=None, drop_last=False, exact_batches=False)


class RequestReader(Protocol):
    config: ReaderConfig

    def batches(self, epoch: int = 0) -> Iterator[RequestBatch]: ...


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed per (seed, epoch): row-group order and shards change from epoch to epoch."""
    return int(mix64(seed & (2**64 - 1), salt=epoch + 1) % np.uint64(2**32))


# ---------------------------------------------------------------- the steps


def draw_order_and_keep(cfg: ReaderConfig, epoch: int, user_id: np.ndarray,
                        request_ts: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """For a row group's requests: their shuffled order, and how many of the most recent
    history events each keeps (None: all). The draws depend on the row group's content,
    not on when or where it was read."""
    n = len(user_id)
    rng = np.random.default_rng([cfg.seed & (2**63 - 1), epoch, content_key(user_id, request_ts)])
    order = rng.permutation(n) if cfg.shuffle else None
    keep = cfg.truncation.sample(rng, n) if cfg.truncation is not None else None
    if cfg.max_len is not None:
        keep = np.minimum(keep, cfg.max_len) if keep is not None else np.full(n, cfg.max_len, np.int64)
    if cfg.group_user_days and order is not None:
        # every request keeps the length drawn for it ungrouped: only the order changes
        grouped = user_day_order(user_id, request_ts, rng)
        if keep is not None:
            kept = np.empty_like(keep)
            kept[order] = keep
            keep = kept[grouped]
        order = grouped
    return order, keep


def user_day_order(user_id: np.ndarray, request_ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Requests grouped by user-day (user_id, UTC day of request_ts): the user-days in a
    random order, each one's requests by request_ts (equal times as given)."""
    n = len(user_id)
    day = request_ts // DAY_MS
    by_key = np.lexsort((day, user_id))
    starts = np.ones(n, dtype=bool)
    starts[1:] = (user_id[by_key][1:] != user_id[by_key][:-1]) | (day[by_key][1:] != day[by_key][:-1])
    group = np.empty(n, dtype=np.int64)
    group[by_key] = np.cumsum(starts) - 1
    rank = rng.permutation(int(starts.sum()))
    return np.lexsort((np.arange(n), request_ts, rank[group]))


def prepare_chunk(chunk: RequestChunk, cfg: ReaderConfig, epoch: int) -> RequestChunk:
    """Shuffle a row group's requests and truncate their histories (the worker's step)."""
    order, keep = draw_order_and_keep(cfg, epoch, chunk.request["user_id"], chunk.request["request_ts"])
    if order is None and keep is None:
        return chunk
    return select(chunk, order if order is not None else np.arange(len(chunk)), keep)


def shuffle_buffer(chunks: Iterable[RequestChunk], capacity: int, rng: np.random.Generator) -> Iterator[RequestChunk]:
    """Mix requests across row groups: gather at least `capacity`, shuffle, emit all but
    half of `capacity`, which stay to mix with what comes next."""
    pending: list[RequestChunk] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= capacity:
            merged = select_many(pending, rng.permutation(held))
            emit = held - capacity // 2
            yield slice_chunk(merged, 0, emit)
            pending, held = [slice_chunk(merged, emit, held)], held - emit
    if held:
        yield select_many(pending, rng.permutation(held))


def user_day_runs(chunks: list[RequestChunk]) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the runs of one user-day (user_id, UTC day of request_ts) in
    these chunks' requests, numbered across the chunks in order."""
    user_id = np.concatenate([c.request["user_id"] for c in chunks])
    day = np.concatenate([c.request["request_ts"] for c in chunks]) // DAY_MS
    starts = np.flatnonzero(np.r_[True, (user_id[1:] != user_id[:-1]) | (day[1:] != day[:-1])]) if len(day) else day
    return starts.astype(np.int64), np.diff(np.r_[starts, len(day)]).astype(np.int64)


def _leading_run(chunk: RequestChunk, user_day: tuple[int, int]) -> int:
    """How many of a chunk's first requests are of this user-day."""
    same = (chunk.request["user_id"] == user_day[0]) & (chunk.request["request_ts"] // DAY_MS == user_day[1])
    return len(chunk) if same.all() else int(np.argmin(same))


def shuffle_user_days(chunks: Iterable[RequestChunk], capacity: int, rng: np.random.Generator) -> Iterator[RequestChunk]:
    """The shuffle buffer when user-days are grouped: as shuffle_buffer, but it mixes whole
    runs of one user-day, each kept in its order. The last run held may go on in the next
    chunk, so it waits at the end of the buffer; one that reaches `capacity` requests by
    itself is let through as it comes. So the buffer holds about `capacity` requests and a
    chunk, whatever a user-day's size."""
    pending: list[RequestChunk] = []
    held = 0
    passing: tuple[int, int] | None = None  # the user-day being let through
    for chunk in chunks:
        if not len(chunk):
            continue
        if passing is not None:
            head = _leading_run(chunk, passing)
            if head:
                yield slice_chunk(chunk, 0, head)
            if head == len(chunk):
                continue
            chunk, passing = slice_chunk(chunk, head, len(chunk)), None
        pending.append(chunk)
        held += len(chunk)
        if held < capacity:
            continue
        starts, lengths = user_day_runs(pending)
        last = len(lengths) - 1  # open: the next chunk may go on with it
        closed = rng.permutation(last)
        emit = closed[:int(np.searchsorted(np.cumsum(lengths[closed]), held - capacity // 2)) + 1]
        stay = np.setdiff1d(closed, emit)  # in stream order
        if lengths[last] >= capacity:
            emit = np.append(emit, last)
            request = pending[-1].request
            passing = (int(request["user_id"][-1]), int(request["request_ts"][-1] // DAY_MS))
        else:
            stay = np.append(stay, last)
        runs = np.concatenate([emit, stay]).astype(np.int64)
        merged = select_many(pending, run_positions(starts[runs], lengths[runs]))
        out = int(lengths[emit].sum())
        if out:
            yield slice_chunk(merged, 0, out)
        pending, held = ([slice_chunk(merged, out, held)] if out < held else []), held - out
    if held:
        starts, lengths = user_day_runs(pending)
        runs = rng.permutation(len(lengths))
        yield select_many(pending, run_positions(starts[runs], lengths[runs]))


def batch_ends(hist_lengths: np.ndarray, batch_size: int, token_budget: int | None) -> tuple[list[int], int]:
    """Where complete batches end in a run of requests, and where the unfinished rest starts.

    By count: every batch_size requests. By tokens: greedily as many requests as fit in
    token_budget history tokens (at least one, at most batch_size); a batch is complete
    once the next request would not fit."""
    n = len(hist_lengths)
    if token_budget is None:
        ends = list(range(batch_size, n + 1, batch_size))
        return ends, (ends[-1] if ends else 0)
    cum = np.cumsum(hist_lengths)
    ends, start = [], 0
    while start < n:
        base = cum[start - 1] if start else 0
        end = int(np.searchsorted(cum, base + token_budget, side="right"))
        end = min(max(end, start + 1), start + batch_size)
        if end == n and end - start < batch_size and cum[-1] - base < token_budget:
            break  # could still take requests from the next chunk
        ends.append(end)
        start = end
    return ends, start


def form_batches(chunks: Iterable[RequestChunk], cfg: ReaderConfig) -> Iterator[RequestChunk]:
    """Cut a stream of chunks into batches. Batches inside a chunk are views of it; only a
    batch that spans chunks is copied together."""
    pieces: list[RequestChunk] = []  # the open batch, spread over the tails of earlier chunks
    for chunk in chunks:
        if not cfg.exact_batches and pieces:
            yield concat(pieces)  # a view: one piece at most
            pieces = []
        held = sum(len(p) for p in pieces)
        lengths = np.concatenate([*(p.hist_lengths for p in pieces), chunk.hist_lengths])
        ends, rest = batch_ends(lengths, cfg.batch_size, cfg.token_budget)
        if not ends:
            pieces.append(chunk)
            continue
        yield concat([*pieces, slice_chunk(chunk, 0, ends[0] - held)]) if pieces else slice_chunk(chunk, 0, ends[0])
        for start, end in zip(ends, ends[1:]):
            yield slice_chunk(chunk, start - held, end - held)
        pieces = [slice_chunk(chunk, rest - held, len(chunk))] if rest < held + len(chunk) else []
    if pieces and not cfg.drop_last:
        yield concat(pieces)


def bucketed_batches(chunks: Iterable[RequestChunk], cfg: ReaderConfig, rng: np.random.Generator | None) -> Iterator[RequestChunk]:
    """Batches of requests of similar history length: gather at least cfg.bucket_pool
    requests, sort them by length (stably), cut them into batches as form_batches would, and
    emit the complete ones (in rng's order when given); the unfinished rest joins the next pool."""
    pending: list[RequestChunk] = []
    held = 0

    def cut(final: bool) -> Iterator[RequestChunk]:
        lengths = np.concatenate([c.hist_lengths for c in pending])
        pool = select_many(pending, np.argsort(lengths, kind="stable"))
        ends, rest = batch_ends(pool.hist_lengths, cfg.batch_size, cfg.token_budget)
        if final and rest < held and not cfg.drop_last:
            ends, rest = [*ends, held], held
        spans = list(zip([0, *ends[:-1]], ends))
        for i in (rng.permutation(len(spans)) if rng is not None else range(len(spans))):
            yield slice_chunk(pool, *spans[i])
        pending[:] = [slice_chunk(pool, rest, held)] if rest < held else []

    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= cfg.bucket_pool:
            yield from cut(final=False)
            held = sum(len(c) for c in pending)
    if held:
        yield from cut(final=True)


def batches_from_chunks(prepared: Iterable[RequestChunk], cfg: ReaderConfig, epoch: int,
                        tasks: tuple[str, ...] = TASKS) -> Iterator[RequestBatch]:
    """The main-thread steps shared by every reader: shuffle buffer, batching (by length
    buckets or in order), torch (batches labelled with the spec's `tasks`)."""
    stream = prepared
    if cfg.shuffle and cfg.shuffle_buffer:
        mix = shuffle_user_days if cfg.group_user_days else shuffle_buffer
        stream = mix(stream, cfg.shuffle_buffer, np.random.default_rng([cfg.seed & (2**63 - 1), epoch, 1]))
    if cfg.bucket_pool:
        order = np.random.default_rng([cfg.seed & (2**63 - 1), epoch, 2]) if cfg.shuffle else None
        batched = bucketed_batches(stream, cfg, order)
    else:
        batched = form_batches(stream, cfg)
    for chunk in batched:
        batch = batch_from_chunk(chunk, tasks)
        yield batch.pin_memory() if cfg.pin_memory else batch


# ---------------------------------------------------------------- the schedule


def row_group_schedule(num_row_groups: int, cfg: ReaderConfig, epoch: int) -> list[int]:
    """Which row groups (numbered across the files in order) this shard reads, in order.

    Petastorm's own rule, spelled out so that the pyarrow reader follows it too: the shard
    is every row group whose number is cur_shard modulo shard_count; the order is its
    list shuffled by random.Random(seed) (sharding) then numpy's RandomState(seed)
    (the ventilator), seed being the epoch's."""
    import random

    seed = epoch_seed(cfg.seed, epoch)
    indexes = list(range(num_row_groups))
    if cfg.shard_count > 1:
        _require_enough_row_groups(num_row_groups, cfg)
        random.Random(seed).shuffle(indexes)
        indexes = [i for i in indexes if i % cfg.shard_count == cfg.shard]
    if cfg.shuffle:
        np.random.RandomState(seed).shuffle(indexes)
    return indexes


def _require_enough_row_groups(num_row_groups: int, cfg: ReaderConfig) -> None:
    if num_row_groups < cfg.shard_count:
        raise LongseqError(
            f"{num_row_groups} row group(s) cannot feed {cfg.shard_count} shards: every shard needs at least one. "
            "Read more days, or use fewer processes")
