"""The Petastorm reader: `make_batch_reader` with a TransformSpec that packs row groups.

`make_batch_reader` hands the main thread one row group at a time and turns every list
column into a matrix with `np.vstack`, which fails unless all lists of a column have one
length; histories run from 0 to 10,000 events. Padding them to 10,000 would multiply the
bytes by up to 100. Instead the TransformSpec's function, run on Petastorm's worker
thread, packs the whole row group into ONE row: per column the flat values of all its
requests, plus `hist_offsets` and `tgt_offsets`. A single row stacks trivially, and the
main thread unpacks it into a RequestChunk without copying. The same function shuffles
the rows and truncates the histories first, so only the kept tokens cross to the main
thread.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from schemas.contracts import REQUEST_RECORD
from schemas.errors import LongseqError
from schemas.forms import to_unischema
from schemas.types import ListOf
from trainer.batch import RequestBatch
from trainer.chunks import (
    HIST_NAMES, REQUEST_NAMES, TGT_NAMES, CorruptRecordsError, RequestChunk,
)
from trainer.reader import ReaderConfig, batches_from_chunks, epoch_seed, prepare_chunk

OFFSET_COLUMNS = ("hist_offsets", "tgt_offsets")


def _packed_fields() -> list[tuple]:
    """The TransformSpec's output schema: every contract column as a 1-d array, plus offsets."""
    fields = []
    for f in to_unischema(REQUEST_RECORD).fields.values():
        fields.append((f.name, f.numpy_dtype, (None,), False))
    return fields + [(name, np.int64, (None,), False) for name in OFFSET_COLUMNS]


def _lists_of(frame: pd.DataFrame, names: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Aligned list columns of a pandas frame (cells are numpy arrays) -> offsets, flat values."""
    offsets, values = None, {}
    for name in names:
        cells = frame[name].to_numpy()
        if any(c is None for c in cells):
            raise CorruptRecordsError(f"column {name} holds nulls; request records have none (contract 2)")
        lengths = np.fromiter((len(c) for c in cells), np.int64, len(cells))
        if offsets is None:
            offsets = np.zeros(len(cells) + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
        elif not np.array_equal(np.diff(offsets), lengths):
            raise CorruptRecordsError(f"lists of {names[0]} and {name} differ in length; they must be aligned (contract 2)")
        values[name] = np.concatenate(cells) if len(cells) else np.array([], np.int64)
    assert offsets is not None
    return offsets, values


def pack_row_group(frame: pd.DataFrame, cfg: ReaderConfig, epoch: int) -> pd.DataFrame:
    """TransformSpec function (worker thread): a row group's frame -> one packed row."""
    hist_offsets, hist = _lists_of(frame, HIST_NAMES)
    tgt_offsets, tgt = _lists_of(frame, TGT_NAMES)
    request = {name: frame[name].to_numpy() for name in REQUEST_NAMES}
    chunk = prepare_chunk(RequestChunk(request, hist_offsets, hist, tgt_offsets, tgt), cfg, epoch)
    packed = {**chunk.request, **chunk.hist, **chunk.tgt, "hist_offsets": chunk.hist_offsets, "tgt_offsets": chunk.tgt_offsets}
    return pd.DataFrame({name: [values] for name, values in packed.items()})


def unpack_row(row) -> RequestChunk:
    """Petastorm's namedtuple of one packed row (each field a [1, N] matrix) -> RequestChunk."""
    def col(name: str) -> np.ndarray:
        return getattr(row, name)[0]

    return RequestChunk(
        {name: col(name) for name in REQUEST_NAMES},
        col("hist_offsets"), {name: col(name) for name in HIST_NAMES},
        col("tgt_offsets"), {name: col(name) for name in TGT_NAMES},
    )


class PetastormRequestReader:
    def __init__(self, urls: Sequence[str], config: ReaderConfig | None = None):
        self.config = config or ReaderConfig()
        self.urls = list(urls)

    def _open(self, epoch: int):
        from petastorm import TransformSpec, make_batch_reader
        from petastorm.errors import NoDataAvailableError

        cfg = self.config
        spec = TransformSpec(partial(pack_row_group, cfg=cfg, epoch=epoch), edit_fields=_packed_fields(),
                             selected_fields=[*REQUEST_RECORD.names, *OFFSET_COLUMNS])
        shards = {"cur_shard": cfg.shard, "shard_count": cfg.shard_count} if cfg.shard_count > 1 else {}
        try:
            return make_batch_reader(
                self.urls, schema_fields=REQUEST_RECORD.names, reader_pool_type="thread",
                workers_count=cfg.workers, results_queue_size=cfg.queue_size, seed=epoch_seed(cfg.seed, epoch),
                shuffle_rows=False, shuffle_row_groups=cfg.shuffle, num_epochs=1, transform_spec=spec, **shards,
            )
        except NoDataAvailableError:
            raise LongseqError(f"fewer row groups than the {cfg.shard_count} shards: every shard needs at least one. "
                               "Read more days, or use fewer processes") from None
        except (OSError, ValueError) as e:  # missing files, not Parquet, schema Petastorm cannot map
            raise CorruptRecordsError(f"cannot open the records ({len(self.urls)} file(s), first {self.urls[0]}): {str(e).strip()}") from None

    def _chunks(self, epoch: int) -> Iterator[RequestChunk]:
        reader = self._open(epoch)
        try:
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except LongseqError:
                    raise
                except Exception as e:  # raised on the worker: an unreadable row group
                    raise CorruptRecordsError(f"cannot read the records ({len(self.urls)} file(s), first {self.urls[0]}): "
                                              f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
                yield unpack_row(row)
        finally:
            reader.stop()
            reader.join()

    def batches(self, epoch: int = 0) -> Iterator[RequestBatch]:
        return batches_from_chunks(self._chunks(epoch), self.config, epoch)


# Petastorm logs a traceback per failed worker on top of the exception it re-raises here.
logging.getLogger("petastorm.workers_pool.thread_pool").setLevel(logging.CRITICAL)
