"""The Petastorm reader: `make_batch_reader` with a TransformSpec that packs row groups.

`make_batch_reader` hands the main thread one row group at a time and turns every list
column into a matrix with `np.vstack`, which fails unless all lists of a column have one
length; histories run from 0 to 10,000 events. Padding them to 10,000 would multiply the
bytes by up to 100. Instead the TransformSpec's function, run on Petastorm's worker
thread, packs the whole row group into one int64 column, `payload`:

    [count of each section..., id width] [request_id][user_id][request_ts]
    [hist_offsets][tgt_offsets][hist_* flat values...][tgt_* flat values...]

(sections 8-byte aligned, each in its contract dtype; the hist_* and tgt_* columns are the
dataset spec's, its features among them: `packed_layout`). Petastorm passes a scalar column
through without stacking, and pandas and Arrow hand it over without copying, so the main
thread unpacks views (`unpack`). The same function shuffles the row group's requests and
truncates their histories while it packs: the kept values are copied once, and only
they cross to the main thread.

Petastorm takes the path of a file:// URL as it is written, without undoing its escapes,
and urlparse cuts it at a '#' or '?'; the reader hands it escaped URLs (dataset.storage.file_url)
and a filesystem that undoes the escapes (`_EscapedLocalFileSystem`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Iterator, Sequence
from urllib.parse import unquote

import numpy as np
import pandas as pd

import pyarrow as pa

from longseq.dataset.compact import file_layout
from longseq.dataset.published import verify_published
from longseq.schemas.contracts import COMPACT_LAYOUT, DEFAULT_SPEC, REQUEST_LAYOUT, contracts_of
from longseq.schemas.errors import LongseqError
from longseq.schemas.forms import to_arrow, to_unischema
from longseq.schemas.spec import DatasetSpec
from longseq.reader.batch import RequestBatch
from longseq.reader.chunks import CorruptRecordsError, RequestChunk, offsets_of, record_columns
from longseq.reader.steps import ReaderConfig, batches_from_chunks, draw_order_and_keep, epoch_seed, row_group_schedule
from longseq.reader.windows import Windows, windows_of_user_days

PAYLOAD = "payload"  # the one output column: each "row" is one int64 of a packed row group


@dataclass(frozen=True)
class PackedLayout:
    """The sections of a packed row group of one spec's records, in order; each starts on
    an 8-byte boundary. The header holds the element count per section, the request_id
    width, then the row group's identity (min and max user_id, min and max request_ts,
    rows), as its footer statistics give it."""

    hist: tuple[str, ...]
    tgt: tuple[str, ...]
    numeric: tuple[str, ...]  # the request's scalars but request_id
    sections: tuple[str, ...]
    dtypes: dict[str, np.dtype]

    @property
    def key_at(self) -> int:
        return len(self.sections) + 1

    @property
    def header(self) -> int:
        return self.key_at + 5


# the index sections of a packed row group: offsets of its copied runs (request rows), or
# where each request's window and targets lie in the row group's flat values (user-day rows)
INDEX_SECTIONS = {REQUEST_LAYOUT: ("hist_offsets", "tgt_offsets"),
                  COMPACT_LAYOUT: ("hist_start", "hist_len", "tgt_start", "tgt_len")}


@lru_cache(maxsize=None)
def packed_layout(spec: DatasetSpec = DEFAULT_SPEC, layout: str = REQUEST_LAYOUT) -> PackedLayout:
    columns = record_columns(spec)
    numeric = tuple(n for n in columns.request if n != "request_id")
    sections = ("request_id", *numeric, *INDEX_SECTIONS[layout], *columns.hist, *columns.tgt)
    record = contracts_of(spec).request_record
    dtypes = {f.name: np.dtype(f.numpy_dtype) for f in to_unischema(record).fields.values() if f.name in sections}
    dtypes.update({name: np.dtype(np.int64) for name in INDEX_SECTIONS[layout]})
    return PackedLayout(columns.hist, columns.tgt, numeric, sections, dtypes)


def _aligned(nbytes: int) -> int:
    return -(-nbytes // 8) * 8


def _cells(frame: pd.DataFrame, names: tuple[str, ...]) -> tuple[list[np.ndarray], np.ndarray]:
    """The list cells of aligned columns (numpy views from pandas) and their one length each."""
    lengths = None
    cells = []
    for name in names:
        column = frame[name].to_numpy()
        if any(c is None for c in column):
            raise CorruptRecordsError(f"column {name} holds nulls; request records have none (contract 2)")
        these = np.fromiter((len(c) for c in column), np.int64, len(column))
        if lengths is None:
            lengths = these
        elif not np.array_equal(lengths, these):
            raise CorruptRecordsError(f"lists of {names[0]} and {name} differ in length; they must be aligned (contract 2)")
        cells.append(column)
    assert lengths is not None
    return cells, lengths


def pack_row_group(frame: pd.DataFrame, cfg: ReaderConfig, epoch: int, spec: DatasetSpec = DEFAULT_SPEC) -> pd.DataFrame:
    """TransformSpec function (worker thread): a row group -> one int64 column holding the
    packed row group. Shuffled and truncated on the way, in one copy of the kept values.

    Petastorm passes an int64 column through untouched (no per-row stacking), and pandas
    and Arrow hand it over without copying."""
    key = _row_group_key(frame)
    if file_layout(frame.columns) == COMPACT_LAYOUT:
        return _pack_user_days(frame, cfg, epoch, spec, key)
    layout = packed_layout(spec)
    n = len(frame)
    user_id, request_ts = frame["user_id"].to_numpy(), frame["request_ts"].to_numpy()
    order, keep = draw_order_and_keep(cfg, epoch, user_id, request_ts)
    order = np.arange(n) if order is None else order
    hist_cells, hist_len = _cells(frame, layout.hist)
    tgt_cells, tgt_len = _cells(frame, layout.tgt)
    h_len = hist_len[order] if keep is None else np.minimum(hist_len[order], keep)
    ids = np.char.encode(frame["request_id"].to_numpy()[order].astype(np.str_), "utf-8")
    sections: dict[str, object] = {"request_id": ids, "user_id": user_id[order], "request_ts": request_ts[order],
                                   "hist_offsets": offsets_of(h_len), "tgt_offsets": offsets_of(tgt_len[order])}
    counts = {name: len(v) for name, v in sections.items()}  # type: ignore[arg-type]
    counts.update({name: int(h_len.sum()) for name in layout.hist})
    counts.update({name: int(tgt_len.sum()) for name in layout.tgt})
    width = ids.dtype.itemsize
    sizes = [_aligned(counts[s] * (width if s == "request_id" else layout.dtypes[s].itemsize)) for s in layout.sections]
    payload = np.zeros(layout.header + sum(sizes) // 8, np.int64)
    payload[:layout.header] = [*(counts[s] for s in layout.sections), width, *key]
    raw, at = payload.view(np.uint8), layout.header * 8
    for name, size in zip(layout.sections, sizes):
        dtype = ids.dtype if name == "request_id" else layout.dtypes[name]
        out = raw[at:at + counts[name] * dtype.itemsize].view(dtype)
        at += size
        if name in sections:
            out[:] = sections[name]
            continue
        cells, lengths = (hist_cells[layout.hist.index(name)], h_len) if name in layout.hist else \
            (tgt_cells[layout.tgt.index(name)], None)
        if lengths is None:
            parts = [cells[i] for i in order]
        else:  # the most recent h_len[j] events of request order[j]
            parts = [cells[i][len(cells[i]) - k:] for i, k in zip(order, lengths)]
        if parts:
            np.concatenate(parts, out=out)
    return pd.DataFrame({PAYLOAD: payload}, copy=False)  # pandas would copy it into a block


def _pack_user_days(frame: pd.DataFrame, cfg: ReaderConfig, epoch: int, spec: DatasetSpec, key: list[int]) -> pd.DataFrame:
    """A row group of user-day rows packed as its requests' windows (reader/windows.py): the
    sequences are sent once, and the main thread materialises the windows a piece at a time."""
    layout = packed_layout(spec, COMPACT_LAYOUT)
    table = pa.Table.from_pandas(frame, schema=to_arrow(contracts_of(spec).user_day), preserve_index=False)
    w = windows_of_user_days(table, cfg, epoch, spec)
    ids = np.char.encode(w.request["request_id"].astype(np.str_), "utf-8")
    sections = {"request_id": ids, **{n: w.request[n] for n in layout.numeric}, "hist_start": w.hist_start,
                "hist_len": w.hist_len, "tgt_start": w.tgt_start, "tgt_len": w.tgt_len, **w.hist, **w.tgt}
    width = ids.dtype.itemsize
    sizes = [_aligned(len(sections[s]) * (width if s == "request_id" else layout.dtypes[s].itemsize))
             for s in layout.sections]
    payload = np.zeros(layout.header + sum(sizes) // 8, np.int64)
    payload[:layout.header] = [*(len(sections[s]) for s in layout.sections), width, *key]
    raw, at = payload.view(np.uint8), layout.header * 8
    for name, size in zip(layout.sections, sizes):
        dtype = ids.dtype if name == "request_id" else layout.dtypes[name]
        raw[at:at + len(sections[name]) * dtype.itemsize].view(dtype)[:] = sections[name]
        at += size
    return pd.DataFrame({PAYLOAD: payload}, copy=False)


def _row_group_key(frame: pd.DataFrame) -> list[int]:
    """A row group's identity as its footer statistics give it (row_group_keys): min and
    max user_id, min and max request_ts (of the lists, for user-day rows), rows."""
    if not len(frame):
        return [0, 0, 0, 0, 0]
    user_id, request_ts = frame["user_id"].to_numpy(), frame["request_ts"].to_numpy()
    if request_ts.dtype == object:
        request_ts = np.concatenate(list(request_ts))
    return [user_id.min(), user_id.max(), request_ts.min(), request_ts.max(), len(frame)]


def packed_key(payload: np.ndarray, spec: DatasetSpec = DEFAULT_SPEC, records: str = REQUEST_LAYOUT) -> tuple[int, ...]:
    """The identity of the row group a payload was packed from (see row_group_keys)."""
    layout = packed_layout(spec, records)
    return tuple(payload[layout.key_at:layout.header].tolist())


def row_group_keys(urls: Sequence[str]) -> list[tuple[int, ...]] | None:
    """Each row group's identity from its footer statistics, in Petastorm's piece order
    (files in order, row groups in order); None if statistics are missing or not unique."""
    import pyarrow.parquet as pq

    keys = []
    import pyarrow.fs as pafs

    for url in urls:
        try:
            fs, path = pafs.FileSystem.from_uri(url)
            with fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
        except Exception as e:  # a missing or unreadable file: name it
            raise CorruptRecordsError(f"cannot read {url}: {str(e).strip()}") from None
        paths = [meta.schema.column(i).path for i in range(meta.num_columns)]
        # request_ts is a list of user-day rows: its leaf's statistics cover its values
        columns = [next(i for i, p in enumerate(paths) if p == c or p.startswith(f"{c}.")) for c in ("user_id", "request_ts")]
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            stats = [group.column(i).statistics for i in columns]
            if any(st is None or not st.has_min_max for st in stats):
                return None
            keys.append((stats[0].min, stats[0].max, stats[1].min, stats[1].max, group.num_rows))
    return keys if len(set(keys)) == len(keys) else None


def unpack(payload: np.ndarray, spec: DatasetSpec = DEFAULT_SPEC, records: str = REQUEST_LAYOUT) -> Iterator[RequestChunk]:
    """A packed row group -> RequestChunks of views into it (no copy, but the ids' decoding);
    one of user-day rows -> its windows materialised a piece at a time."""
    layout = packed_layout(spec, records)
    views = _sections(payload, layout)
    request = {"request_id": np.char.decode(views["request_id"], "utf-8"), **{name: views[name] for name in layout.numeric}}
    if records == COMPACT_LAYOUT:
        yield from Windows(request, {n: views[n] for n in layout.hist}, views["hist_start"], views["hist_len"],
                           {n: views[n] for n in layout.tgt}, views["tgt_start"], views["tgt_len"]).pieces()
        return
    yield RequestChunk(request, views["hist_offsets"], {name: views[name] for name in layout.hist},
                       views["tgt_offsets"], {name: views[name] for name in layout.tgt})


def _sections(payload: np.ndarray, layout: PackedLayout) -> dict[str, np.ndarray]:
    """Each section of a payload as a view of its bytes."""
    counts = dict(zip(layout.sections, payload[:len(layout.sections)].tolist()))
    width = int(payload[len(layout.sections)])
    raw, at, views = payload.view(np.uint8), layout.header * 8, {}
    for name in layout.sections:
        dtype = np.dtype(f"S{max(width, 1)}") if name == "request_id" else layout.dtypes[name]
        nbytes = counts[name] * dtype.itemsize
        views[name] = raw[at:at + nbytes].view(dtype)
        at += _aligned(nbytes)
    return views


def _one_layout(urls: Sequence[str]) -> str:
    """The layout of the files (one make_batch_reader reads one schema): days of both are refused."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    layouts = {}
    for url in urls:
        try:
            fs, path = pafs.FileSystem.from_uri(url)
            with fs.open_input_file(path) as f:
                layouts.setdefault(file_layout(pq.ParquetFile(f).schema_arrow.names), url)
        except Exception as e:  # a missing or unreadable file: name it
            raise CorruptRecordsError(f"cannot read {url}: {str(e).strip()}") from None
    if len(layouts) > 1:
        raise LongseqError(f"the files hold both layouts ({', '.join(f'{k}: {v}' for k, v in sorted(layouts.items()))}); "
                           "the Petastorm reader reads one: read them with engine arrow, or build the days in one layout")
    return next(iter(layouts), REQUEST_LAYOUT)


def _escaped_local_filesystem():
    """A pyarrow legacy LocalFileSystem (what Petastorm uses for file://) for paths that are
    still percent-escaped: Petastorm passes the URL's path on as written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pyarrow.filesystem is deprecated; Petastorm needs it
        from pyarrow.filesystem import FileSystem, LocalFileSystem

    class _EscapedLocalFileSystem(FileSystem):
        # the methods pyarrow's legacy ParquetDataset and Petastorm's workers call; not a
        # LocalFileSystem subclass, which pyarrow would bypass by opening the path itself
        def __init__(self) -> None:
            self._local = LocalFileSystem._get_instance()

        def _path(self, path: str) -> str:
            return unquote(path)

        def open(self, path, mode="rb"):
            return self._local.open(self._path(path), mode)

        def exists(self, path) -> bool:
            return self._local.exists(self._path(path))

        def isdir(self, path) -> bool:
            return self._local.isdir(self._path(path))

        def isfile(self, path) -> bool:
            return self._local.isfile(self._path(path))

        def ls(self, path):
            return self._local.ls(self._path(path))

        def stat(self, path):
            return self._local.stat(self._path(path))

        def walk(self, path):
            return self._local.walk(self._path(path))

        def _isfilestore(self) -> bool:
            return True

    return _EscapedLocalFileSystem()


class PetastormRequestReader:
    """With several workers, row groups finish in an order that depends on timing; each
    packed row group carries its identity, so results are put back into the order
    Petastorm handed them out (reader.steps.row_group_schedule): the same batches for
    any number of workers."""

    def __init__(self, urls: Sequence[str], config: ReaderConfig | None = None, spec: DatasetSpec = DEFAULT_SPEC):
        self.config = config or ReaderConfig()
        self.spec = spec
        self.urls = list(urls)
        verify_published(self.urls, self.spec)
        self.layout = _one_layout(self.urls)
        self._keys = row_group_keys(self.urls) if self.config.workers > 1 else None

    def _open(self, epoch: int):
        from petastorm import TransformSpec, make_batch_reader
        from petastorm.errors import NoDataAvailableError

        cfg = self.config
        transform = TransformSpec(partial(pack_row_group, cfg=cfg, epoch=epoch, spec=self.spec),
                                  edit_fields=[(PAYLOAD, np.int64, (), False)], selected_fields=[PAYLOAD])
        shards = {"cur_shard": cfg.shard, "shard_count": cfg.shard_count} if cfg.shard_count > 1 else {}
        local = all(u.startswith("file://") for u in self.urls)
        try:
            return make_batch_reader(
                self.urls, schema_fields=list(contracts_of(self.spec).records(self.layout).names), reader_pool_type="thread",
                workers_count=cfg.workers, results_queue_size=cfg.queue_size, seed=epoch_seed(cfg.seed, epoch),
                shuffle_rows=False, shuffle_row_groups=cfg.shuffle, num_epochs=1, transform_spec=transform,
                filesystem=_escaped_local_filesystem() if local else None, **shards,
            )
        except NoDataAvailableError:
            raise LongseqError(f"fewer row groups than the {cfg.shard_count} shards: every shard needs at least one. "
                               "Read more days, or use fewer processes") from None
        except (OSError, ValueError) as e:  # missing files, not Parquet, schema Petastorm cannot map
            raise CorruptRecordsError(f"cannot open the records ({len(self.urls)} file(s), first {self.urls[0]}): {str(e).strip()}") from None

    def _chunks(self, epoch: int) -> Iterator[RequestChunk]:
        if self._keys is None:
            for payload in self._payloads(epoch):
                yield from unpack(payload, self.spec, self.layout)
            return
        expected = iter([self._keys[i] for i in row_group_schedule(len(self._keys), self.config, epoch)])
        waiting: dict[tuple[int, ...], np.ndarray] = {}
        want = next(expected, None)
        for payload in self._payloads(epoch):
            waiting[packed_key(payload, self.spec, self.layout)] = payload
            while want in waiting:
                yield from unpack(waiting.pop(want), self.spec, self.layout)
                want = next(expected, None)
        if waiting:
            raise CorruptRecordsError(f"{len(waiting)} row group(s) did not match the files' footers; were the files "
                                      "replaced while they were read?")

    def _payloads(self, epoch: int) -> Iterator[np.ndarray]:
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
                yield row.payload
        finally:
            reader.stop()
            reader.join()

    def batches(self, epoch: int = 0) -> Iterator[RequestBatch]:
        return batches_from_chunks(self._chunks(epoch), self.config, epoch, self.spec.tasks)


# Petastorm logs a traceback per failed worker on top of the exception it re-raises here,
# and warns at every reader about pyarrow's legacy API that it uses (docs/STACK.md).
logging.getLogger("petastorm.workers_pool.thread_pool").setLevel(logging.CRITICAL)
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")
