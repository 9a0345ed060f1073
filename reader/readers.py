"""Published request records -> RequestBatch, through Petastorm or plain pyarrow.

    rows of a row group ──(worker: shuffle rows, truncate histories)──> RequestChunk
      ──(main: shuffle buffer across row groups, batch by requests or tokens)──> RequestBatch

The trainer sees only `RequestReader.batches(epoch)`; which library reads the files is a
constructor choice (`open_reader(..., engine="petastorm" | "arrow")`):

- `PetastormRequestReader` (the default) uses `make_batch_reader` on the Parquet files the
  build wrote. That reader stacks each list column into one matrix and so demands equal
  lengths; a `TransformSpec` turns each row group into one packed row (flat values plus
  offsets for histories and targets), which it stacks fine, with truncation done on the
  worker so that fewer tokens travel. docs/READER.md has the measurements.
- `ArrowRequestReader` reads the same row groups with pyarrow, in the same order as
  Petastorm does for a seed, through the same steps: the reference for tests, and a
  reader with no Petastorm in it.

Both check the bytes of published files against their manifest when they open them
(dataset.published.verify_published), once per process and file. Both read the columns of
one dataset spec (the request record of schemas.contracts.contracts_of(spec)): the default
spec's unless told; `open_published` reads the spec the data was built with (DATA/spec.yaml).

An epoch is one pass over this shard's row groups. Given the files, the config and the
epoch, the batches are the same every time, for any number of workers: row groups that
finish out of order are put back in the order Petastorm handed them out.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from longseq.dataset.compact import file_layout
from longseq.dataset.published import published_files, verify_published
from longseq.dataset.spec_record import spec_for
from longseq.dataset.storage import absolute, local_path, storage_for
from longseq.schemas.contracts import COMPACT_LAYOUT, DEFAULT_SPEC, contracts_of
from longseq.schemas.errors import LongseqError
from longseq.schemas.spec import DatasetSpec
from longseq.reader.batch import RequestBatch
from longseq.reader.chunks import CorruptRecordsError, RequestChunk, chunk_from_arrow, record_columns
from longseq.reader.steps import ReaderConfig, RequestReader, batches_from_chunks, prepare_chunk, row_group_schedule
from longseq.reader.windows import windows_of_user_days

__all__ = ["ArrowRequestReader", "ReaderConfig", "RequestReader", "data_spec", "open_published", "open_reader"]


# ---------------------------------------------------------------- readers


class ArrowRequestReader:
    """Row groups read with pyarrow, in Petastorm's order, on the calling thread."""

    def __init__(self, urls: Sequence[str], config: ReaderConfig | None = None, spec: DatasetSpec = DEFAULT_SPEC):
        import pyarrow.parquet as pq

        self.config = config or ReaderConfig()
        self.spec = spec
        self.urls = list(urls)
        verify_published(self.urls, self.spec)
        self._groups: list[tuple[str, int]] = []
        self._layouts: dict[str, str] = {}
        for url in self.urls:
            try:
                meta = pq.ParquetFile(_local_path(url)).metadata
            except Exception as e:  # a missing or unreadable file: name it
                raise CorruptRecordsError(f"cannot read {url}: {str(e).strip()}") from None
            self._groups += [(url, g) for g in range(meta.num_row_groups)]
            self._layouts[url] = file_layout(meta.schema.to_arrow_schema().names)

    def _chunks(self, epoch: int) -> Iterator[RequestChunk]:
        import pyarrow.parquet as pq

        for index in row_group_schedule(len(self._groups), self.config, epoch):
            url, group = self._groups[index]
            compact = self._layouts[url] == COMPACT_LAYOUT
            columns = contracts_of(self.spec).user_day.names if compact else list(record_columns(self.spec).all)
            try:
                table = pq.ParquetFile(_local_path(url)).read_row_group(group, columns=columns)
            except Exception as e:
                raise CorruptRecordsError(f"cannot read row group {group} of {url}: {str(e).strip()}") from None
            if compact:  # the row group's requests, windows of its user-days, materialised a piece at a time
                yield from windows_of_user_days(table, self.config, epoch, self.spec).pieces()
            else:
                yield prepare_chunk(chunk_from_arrow(table, self.spec), self.config, epoch)

    def batches(self, epoch: int = 0) -> Iterator[RequestBatch]:
        return batches_from_chunks(self._chunks(epoch), self.config, epoch, self.spec.tasks)


def _local_path(url: str) -> str:
    return local_path(url)  # file:// URLs are escaped (a space, '#', '%' in a path)


def open_reader(files: Sequence[str], config: ReaderConfig | None = None, engine: str = "auto",
                spec: DatasetSpec = DEFAULT_SPEC) -> RequestReader:
    """A reader over Parquet files of request records of `spec` (URLs: file:///..., hdfs://...).
    engine: petastorm, arrow, or auto (Petastorm where it is installed, else pyarrow: the
    two give the same batches, and a GPU host may have torch and pyarrow only)."""
    if not files:
        raise LongseqError("no files to read")
    if engine == "auto":
        import importlib.util

        engine = "petastorm" if importlib.util.find_spec("petastorm") is not None else "arrow"
    if engine == "petastorm":
        from longseq.reader.petastorm_reader import PetastormRequestReader

        return PetastormRequestReader(files, config, spec)
    if engine == "arrow":
        return ArrowRequestReader(files, config, spec)
    raise LongseqError(f"unknown reader engine {engine!r}; choose auto, petastorm or arrow")


def data_spec(data: str, wanted: DatasetSpec | str | None = None) -> DatasetSpec:
    """The spec a build's output directory was built with (DATA/spec.yaml; the default spec
    without one), checked against `wanted` (a spec or its file) when given: SpecError otherwise."""
    root = absolute(data).rstrip("/")
    return spec_for(storage_for(root, arrow=True), root, wanted)


def open_published(data: str, start, end=None, config: ReaderConfig | None = None, engine: str = "auto",
                   spec: DatasetSpec | str | None = None) -> RequestReader:
    """A reader over the published days [start, end] of a build's output directory, in the
    spec it was built with; `spec` (a spec or its file), when given, must be that one."""
    recorded = data_spec(data, spec)
    return open_reader([f.url for f in published_files(data, start, end, spec=recorded)], config, engine, recorded)
