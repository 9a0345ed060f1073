"""The trainer's readers against references built directly from the Parquet files.

Data: two generated days built by the polars engine into small row groups (so that there
are many to shard and shuffle), published, then read through Petastorm and pyarrow.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from longseq.pipelines.sample import prepare_generated
from longseq.dataset.published import PublishedDataError, published_files
from longseq.features.lengths import LengthSampler
from longseq.schemas.contracts import HIST_PREFIX, REQUEST_LAYOUT, REQUEST_RECORD, TGT_PREFIX
from longseq.schemas.errors import LongseqError
from longseq.schemas.forms import to_arrow
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES
from longseq.reader.batch import RequestBatch
from longseq.reader.chunks import HIST_NAMES, TGT_NAMES, CorruptRecordsError, chunk_from_arrow, concat, select, slice_chunk
from longseq.reader.readers import ReaderConfig, open_published, open_reader
from longseq.reader.steps import batch_ends

START = SAMPLE_START
END = START + dt.timedelta(days=1)
MAX_LEN = 64
ENGINES = ("petastorm", "arrow")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from longseq.etl.batch.polars_engine import PolarsEngine

    sample = prepare_generated(tmp_path_factory.mktemp("reader"), PROFILES["tiny"], seed=11, max_len=MAX_LEN,
                               engine=PolarsEngine(row_group_bytes=16 * 1024), layout=REQUEST_LAYOUT)
    assert (sample.start, sample.end) == (START, END)
    return sample.data


@pytest.fixture(scope="module")
def urls(data) -> list[str]:
    return [f.url for f in published_files(str(data), START, END)]


@pytest.fixture(scope="module")
def records(urls) -> list[dict]:
    """Every record, in file and row order, straight from pyarrow."""
    return [r for u in urls for r in pq.read_table(u.removeprefix("file://")).to_pylist()]


def _all(reader, epoch: int = 0) -> list[RequestBatch]:
    return list(reader.batches(epoch))


def _requests(batches: list[RequestBatch]) -> list[dict]:
    """Batches back to per-request dicts in contract-2 form (the inverse of the reader)."""
    out = []
    for b in batches:
        ho, to = b.history.offsets.tolist(), b.targets.offsets.tolist()
        for i in range(b.num_requests):
            r = {"request_id": str(b.request_id[i]), "user_id": int(b.user_id[i]), "request_ts": int(b.request_ts[i])}
            r.update({HIST_PREFIX + k: v[ho[i]:ho[i + 1]].tolist() for k, v in b.history.values.items()})
            r.update({TGT_PREFIX + k: v[to[i]:to[i + 1]].tolist() for k, v in b.targets.values.items()})
            out.append(r)
    return out


def _same(a: list[RequestBatch], b: list[RequestBatch]) -> bool:
    return len(a) == len(b) and all(x.num_requests == y.num_requests and _requests([x]) == _requests([y]) for x, y in zip(a, b))


def test_the_fixture_has_what_the_tests_need(data, records, urls):
    groups = sum(pq.ParquetFile(u.removeprefix("file://")).metadata.num_row_groups for u in urls)
    lengths = [len(r["hist_item_id"]) for r in records]
    assert groups >= 6, "several row groups per day, to shard and shuffle"
    assert 0 in lengths and max(lengths) == MAX_LEN, "empty and full histories"
    assert len({len(r["tgt_item_id"]) for r in records}) > 1, "requests with different numbers of targets"


@pytest.mark.parametrize("engine", ENGINES)
def test_batches_equal_a_padded_reference(urls, records, engine):
    """File order, full length, fixed batch size: each batch, padded, equals the padded
    matrices built from the Parquet rows."""
    batches = _all(open_reader(urls, ReaderConfig(batch_size=7, shuffle=False), engine))
    assert [b.num_requests for b in batches] == [7] * (len(records) // 7) + ([len(records) % 7] if len(records) % 7 else [])
    for b, rows in zip(batches, (records[i:i + 7] for i in range(0, len(records), 7))):
        assert list(b.request_id) == [r["request_id"] for r in rows]
        assert b.user_id.tolist() == [r["user_id"] for r in rows]
        for side, names, prefix in ((b.history, HIST_NAMES, HIST_PREFIX), (b.targets, TGT_NAMES, TGT_PREFIX)):
            width = max(len(r[names[0]]) for r in rows)
            lengths = side.lengths()
            assert lengths.tolist() == [len(r[names[0]]) for r in rows]
            mask = torch.arange(width)[None, :] < lengths[:, None]
            for name in names:
                reference = torch.zeros(len(rows), width, dtype=torch.int64)
                for i, r in enumerate(rows):
                    reference[i, :len(r[name])] = torch.tensor(r[name], dtype=torch.int64)
                padded = torch.zeros(len(rows), width, dtype=torch.int64)
                padded[mask] = side[name.removeprefix(prefix)].long()
                assert torch.equal(padded, reference), name
        assert b.num_history_tokens == sum(len(r["hist_item_id"]) for r in rows)
        assert b.labels().shape == (b.num_targets, 4)


@pytest.mark.parametrize("engine", ENGINES)
def test_across_shards_every_record_comes_out_once_per_epoch(urls, records, engine):
    by_id = {r["request_id"]: r for r in records}
    for epoch in (0, 1):
        seen = []
        for shard in range(3):
            cfg = ReaderConfig(batch_size=5, shuffle=True, seed=3, shard=shard, shard_count=3)
            got = _requests(_all(open_reader(urls, cfg, engine), epoch))
            assert got, f"shard {shard} is empty"
            seen += got
        assert sorted(r["request_id"] for r in seen) == sorted(by_id)
        assert all(r == by_id[r["request_id"]] for r in seen), "records come out whole and unchanged"


@pytest.mark.parametrize("bucket_pool", [0, 50])
def test_petastorm_and_pyarrow_readers_give_the_same_batches(urls, bucket_pool):
    """Same schedule, same steps: shuffling, truncation, sharding, token batching and length
    buckets agree."""
    cfg = ReaderConfig(batch_size=32, token_budget=300, shuffle=True, shuffle_buffer=40, seed=5, shard=1, shard_count=2,
                       truncation=LengthSampler(min_len=8, max_len=MAX_LEN, multiple=8), bucket_pool=bucket_pool)
    for epoch in (0, 2):
        a = _all(open_reader(urls, cfg, "petastorm"), epoch)
        b = _all(open_reader(urls, cfg, "arrow"), epoch)
        assert a and _same(a, b)


def _padded_keys(batches: list[RequestBatch]) -> int:
    return sum(b.num_requests * int(b.history.lengths().max()) for b in batches)


@pytest.mark.parametrize("engine", ENGINES)
def test_length_buckets_pad_less_and_keep_every_request_as_drawn(urls, records, engine):
    """Bucketing regroups the same requests, truncated as without it, into batches of
    neighbouring lengths; training shuffles the batches of a pool; each batch is full but
    the last."""
    cfg = ReaderConfig(batch_size=8, shuffle=True, seed=2, truncation=LengthSampler(min_len=8, max_len=MAX_LEN, multiple=8))
    bucketed_cfg = ReaderConfig(**{**cfg.__dict__, "bucket_pool": 64})
    key = lambda r: r["request_id"]  # noqa: E731
    for epoch in (0, 1):
        plain = _all(open_reader(urls, cfg, engine), epoch)
        bucketed = _all(open_reader(urls, bucketed_cfg, engine), epoch)
        assert sorted(_requests(bucketed), key=key) == sorted(_requests(plain), key=key)
        assert [b.num_requests for b in bucketed[:-1]] == [8] * (len(bucketed) - 1)
        assert _padded_keys(bucketed) < 0.8 * _padded_keys(plain)
        longest = [int(b.history.lengths().max()) for b in bucketed]
        assert longest != sorted(longest), "a pool's batches come in random order"
    assert _same(bucketed, _all(open_reader(urls, bucketed_cfg, engine), 1))
    # scoring, one pool: every request once, in order of length
    one_pool = _all(open_reader(urls, ReaderConfig(batch_size=8, shuffle=False, bucket_pool=len(records)), engine))
    assert sorted(_requests(one_pool), key=key) == sorted(records, key=key)
    lengths = [n for b in one_pool for n in b.history.lengths().tolist()]
    assert lengths == sorted(lengths)
    dropped = _all(open_reader(urls, ReaderConfig(batch_size=8, shuffle=False, bucket_pool=30, drop_last=True), engine))
    assert {b.num_requests for b in dropped} == {8} and sum(b.num_requests for b in dropped) == len(records) // 8 * 8


def test_several_workers_give_the_same_batches_as_one(urls):
    """Row groups finish out of order on several threads; the reader restores the order."""
    cfg = ReaderConfig(batch_size=9, shuffle=True, seed=4, truncation=LengthSampler(min_len=8, max_len=MAX_LEN, multiple=8))
    one = _all(open_reader(urls, cfg))
    for epoch in (0, 1):
        many = _all(open_reader(urls, ReaderConfig(**{**cfg.__dict__, "workers": 3, "queue_size": 4})), epoch)
        assert _same(_all(open_reader(urls, cfg), epoch) if epoch else one, many)


def test_the_same_seed_gives_the_same_batches(urls):
    cfg = ReaderConfig(batch_size=9, shuffle=True, seed=1, truncation=LengthSampler(min_len=8, max_len=MAX_LEN, multiple=8))
    first = _all(open_reader(urls, cfg))
    assert _same(first, _all(open_reader(urls, cfg)))
    assert not _same(first, _all(open_reader(urls, cfg), epoch=1)), "each epoch has its own order"
    other = ReaderConfig(**{**cfg.__dict__, "seed": 2})
    assert not _same(first, _all(open_reader(urls, other)))


def test_training_truncation_keeps_the_most_recent_suffix(urls, records):
    by_id = {r["request_id"]: r for r in records}
    sampler = LengthSampler(min_len=8, max_len=40, multiple=8)
    got = _requests(_all(open_reader(urls, ReaderConfig(shuffle=True, truncation=sampler))))
    assert len(got) == len(records)
    kept = []
    for r in got:
        full = by_id[r["request_id"]]
        n = len(r["hist_item_id"])
        assert n <= 40 and (n % 8 == 0 or n == len(full["hist_item_id"]))
        for name in HIST_NAMES:
            assert r[name] == full[name][len(full[name]) - n:], "the most recent events"
        assert all(r[t] == full[t] for t in TGT_NAMES), "targets are never cut"
        kept.append(n / max(len(full["hist_item_id"]), 1))
    assert min(kept) < 0.5, "some histories were cut"
    # scoring: full length, or a serving cap
    full = _requests(_all(open_reader(urls, ReaderConfig(shuffle=False))))
    assert full == records
    capped = _requests(_all(open_reader(urls, ReaderConfig(shuffle=False, max_len=16))))
    assert all(r["hist_item_id"] == f["hist_item_id"][-16:] if f["hist_item_id"] else not r["hist_item_id"]
               for r, f in zip(capped, records))


@pytest.mark.parametrize("engine", ENGINES)
def test_token_budget_batches_cost_about_the_same(urls, records, engine):
    budget = 200
    batches = _all(open_reader(urls, ReaderConfig(batch_size=1000, token_budget=budget, shuffle=False), engine))
    assert sum(b.num_requests for b in batches) == len(records)
    lengths = [len(r["hist_item_id"]) for r in records]
    start = 0
    for b in batches[:-1]:
        tokens = b.num_history_tokens
        assert tokens <= budget or b.num_requests == 1
        assert tokens + lengths[start + b.num_requests] > budget, "a batch closes when the next request does not fit"
        start += b.num_requests
    assert len({b.num_requests for b in batches}) > 1, "short histories make bigger batches"


def test_batch_ends():
    assert batch_ends(np.array([1] * 10), 4, None) == ([4, 8], 8)
    assert batch_ends(np.array([5, 5, 5, 20, 1]), 10, 10) == ([2, 3, 4], 4)  # [5,5] [5] [20 alone] | [1] open
    assert batch_ends(np.array([3, 3, 3]), 2, 100) == ([2], 2)  # the request cap closes a batch
    assert batch_ends(np.array([4, 6]), 10, 10) == ([2], 2)  # exactly full is complete


def test_chunk_operations_match_python_lists(records):
    table = pa.Table.from_pylist(records[:40], schema=to_arrow(REQUEST_RECORD))
    chunk = chunk_from_arrow(table)
    rng = np.random.default_rng(0)
    index = rng.permutation(40)[:25]
    keep = rng.integers(0, 10, 25)
    picked = select(chunk, index, keep)
    for j, i in enumerate(index):
        h = slice(picked.hist_offsets[j], picked.hist_offsets[j + 1])
        full = records[i]["hist_item_id"]
        assert picked.hist["hist_item_id"][h].tolist() == full[len(full) - min(len(full), keep[j]):]
    joined = concat([slice_chunk(chunk, 0, 13), slice_chunk(chunk, 13, 40)])
    assert all(np.array_equal(joined.hist[k], chunk.hist[k]) for k in HIST_NAMES)
    assert np.array_equal(joined.tgt_offsets, chunk.tgt_offsets)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_corrupt_file_gives_a_clear_error(urls, tmp_path, engine):
    bad = tmp_path / "part-00000.parquet"
    good = Path(urls[0].removeprefix("file://")).read_bytes()
    footer = int.from_bytes(good[-8:-4], "little") + 8
    for broken in (good[:4] + bytes(len(good) - 8) + good[-4:],  # no footer
                   good[:4] + bytes(len(good) - 4 - footer) + good[-footer:]):  # a footer, zeroed pages
        bad.write_bytes(broken)
        with pytest.raises(CorruptRecordsError, match="cannot (read|open)"):
            _all(open_reader([f"file://{bad}"], ReaderConfig(shuffle=False), engine))
    with pytest.raises(CorruptRecordsError, match="cannot (read|open)"):
        _all(open_reader([f"file://{tmp_path}/missing.parquet"], ReaderConfig(shuffle=False), engine))


def test_published_files_are_checked_against_their_manifest(data, tmp_path):
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(data, copy)
    part = copy / "requests" / f"ds={END}" / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[:-100])
    with pytest.raises(PublishedDataError, match="truncated"):
        open_published(str(copy), START, END)
    part.unlink()
    with pytest.raises(PublishedDataError, match="is missing"):
        open_published(str(copy), START, END)
    with pytest.raises(LongseqError, match="not published"):
        open_published(str(copy), START, END + dt.timedelta(days=1))


def test_more_shards_than_row_groups_is_refused(urls):
    for engine in ENGINES:
        with pytest.raises(LongseqError, match="shards"):
            _all(open_reader(urls[:1], ReaderConfig(shard=0, shard_count=1000), engine))


def test_a_batch_moves_to_a_device(urls):
    batch = next(iter(open_reader(urls, ReaderConfig(batch_size=4)).batches()))
    moved = batch.to("cpu")
    assert torch.equal(moved.history["item_id"], batch.history["item_id"])
    assert moved.history.segment_ids().tolist() == [i for i, n in enumerate(batch.history.lengths().tolist()) for _ in range(n)]
    if torch.cuda.is_available():  # pinned host memory, then an asynchronous copy
        on_gpu = batch.pin_memory().to("cuda", non_blocking=True)
        assert torch.equal(on_gpu.targets["item_id"].cpu(), batch.targets["item_id"])
