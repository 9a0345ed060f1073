"""The readers' `group_user_days` setting, in both layouts and both readers: each user-day's
requests come together, in request_ts order, in consecutive batches; the user-days still
in a shuffled order; the same requests and windows as without it.

Data: generated days built by the polars engine in both layouts, the compact one into
small row groups (many to shuffle), the request layout into one row group a day (a
user-day is then never split between row groups) and into small ones.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from longseq.dataset.storage import file_url
from longseq.features.lengths import LengthSampler
from longseq.reader.batch import RequestBatch
from longseq.reader.chunks import RequestChunk, offsets_of
from longseq.reader.readers import ReaderConfig, open_reader
from longseq.reader.steps import shuffle_user_days
from longseq.schemas.contracts import COMPACT_LAYOUT, DAY_MS, REQUEST_LAYOUT
from longseq.schemas.errors import LongseqError
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES

DAYS = [SAMPLE_START, SAMPLE_START + dt.timedelta(days=1)]
ENGINES = ("arrow", "petastorm")
# (layout, row group bytes): the request layout in one row group a day, and in small ones
BUILDS = {"compact": (COMPACT_LAYOUT, 4096), "request": (REQUEST_LAYOUT, 1 << 30),
          "request-split": (REQUEST_LAYOUT, 16 * 1024)}
GROUPED = ReaderConfig(batch_size=8, token_budget=60, seed=4, shuffle_buffer=12, group_user_days=True,
                       truncation=LengthSampler(min_len=1, max_len=16, multiple=1))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, list[str]]:
    """Each build's files, as URLs."""
    from longseq.etl.batch.build import BuildConfig, build
    from longseq.etl.batch.polars_engine import PolarsEngine
    from longseq.sources.generate import generate

    root = tmp_path_factory.mktemp("grouped")
    generate(root / "raw", PROFILES["tiny"], 5, DAYS[0])
    urls = {}
    for name, (layout, row_group_bytes) in BUILDS.items():
        build(PolarsEngine(row_group_bytes=row_group_bytes),
              BuildConfig(str(root / "raw"), str(root / name), DAYS[0], DAYS[-1], 32, layout=layout), log=lambda m: None)
        urls[name] = [file_url(str(f)) for d in DAYS for f in sorted((root / name / "requests" / f"ds={d}").glob("*.parquet"))]
    return urls


def _batches(urls: list[str], cfg: ReaderConfig, engine: str = "arrow", epoch: int = 0) -> list[RequestBatch]:
    return list(open_reader(urls, cfg, engine).batches(epoch))


def _requests(batches: list[RequestBatch]) -> list[tuple]:
    """(request_id, user_id, request_ts, history item ids, target item ids) in reading order."""
    out = []
    for b in batches:
        ho, to = b.history.offsets.tolist(), b.targets.offsets.tolist()
        items, targets = b.history["item_id"].tolist(), b.targets["item_id"].tolist()
        out += [(str(b.request_id[i]), int(b.user_id[i]), int(b.request_ts[i]), tuple(items[ho[i]:ho[i + 1]]),
                 tuple(targets[to[i]:to[i + 1]])) for i in range(b.num_requests)]
    return out


def _runs(requests: list[tuple]) -> list[tuple[int, int]]:
    """The user-day (user_id, day) of each run of consecutive requests of one user-day."""
    keys = [(r[1], r[2] // DAY_MS) for r in requests]
    return [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]


@pytest.mark.parametrize("build", ["compact", "request"])
@pytest.mark.parametrize("engine", ENGINES)
def test_grouped_user_days_come_whole_in_request_ts_order_with_the_windows_drawn_without_grouping(built, build, engine):
    urls = built[build]
    grouped = _requests(_batches(urls, GROUPED, engine, epoch=1))
    mixed = _requests(_batches(urls, ReaderConfig(**{**GROUPED.__dict__, "group_user_days": False}), engine, epoch=1))
    runs = _runs(grouped)
    assert len(runs) == len(set(runs)) > 20, "each user-day in one run"
    assert len(_runs(mixed)) > 2 * len(runs), "without the setting, requests are shuffled across user-days"
    assert all(a[2] <= b[2] for a, b in zip(grouped, grouped[1:]) if (a[1], a[2] // DAY_MS) == (b[1], b[2] // DAY_MS))
    assert Counter(grouped) == Counter(mixed), "the same requests, each with the window drawn for it"
    in_file_order = _runs(_requests(_batches(urls, ReaderConfig(batch_size=8, shuffle=False), engine)))
    assert runs != in_file_order and sorted(runs) == sorted(in_file_order), "user-days in a shuffled order"
    assert _requests(_batches(urls, GROUPED, engine, epoch=1)) == grouped, "the same seed, the same batches"
    assert _runs(_requests(_batches(urls, GROUPED, engine, epoch=2))) != runs, "another epoch, another order"


@pytest.mark.parametrize("build", ["compact", "request-split"])
def test_both_readers_give_the_same_grouped_batches(built, build):
    """Sharded too; with small request-layout row groups a user-day that the build split
    between two row groups comes in at most one run a row group."""
    cfg = ReaderConfig(**{**GROUPED.__dict__, "shard": 1, "shard_count": 2, "workers": 2})
    for epoch in (0, 3):
        arrow, petastorm = _batches(built[build], cfg, "arrow", epoch), _batches(built[build], cfg, "petastorm", epoch)
        assert arrow and [b.num_requests for b in arrow] == [b.num_requests for b in petastorm]
        assert _requests(arrow) == _requests(petastorm)
    runs = Counter(_runs(_requests(_batches(built[build], GROUPED))))
    spans = _row_groups_per_user_day(built[build])
    assert runs.keys() == spans.keys() and all(runs[k] <= spans[k] for k in runs)
    assert (max(spans.values()) == 1) == (build == "compact"), "the small request-layout row groups split user-days"


def _row_groups_per_user_day(urls: list[str]) -> Counter:
    """In how many row groups each user-day's requests lie."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spans: Counter = Counter()
    for url in urls:
        f = pq.ParquetFile(url.removeprefix("file://"))
        for g in range(f.num_row_groups):
            t = f.read_row_group(g, columns=["user_id", "request_ts"])
            ts = t.column("request_ts").to_pylist()
            if pa.types.is_list(t.schema.field("request_ts").type):  # user-day rows: their requests' first
                ts = [v[0] for v in ts]
            spans.update(set(zip(t.column("user_id").to_pylist(), (v // DAY_MS for v in ts))))
    return spans


def _chunk(user_ids: list[int], first: int) -> RequestChunk:
    """Requests of these users on day 0 at times first, first + 1, ..., each with a history of
    one event."""
    n = len(user_ids)
    ts = first + np.arange(n, dtype=np.int64)
    lengths = np.ones(n, dtype=np.int64)
    return RequestChunk({"request_id": np.array([f"{u}-{t}" for u, t in zip(user_ids, ts)]),
                         "user_id": np.array(user_ids, dtype=np.int64), "request_ts": ts},
                        offsets_of(lengths), {"hist_item_id": ts.copy()}, offsets_of(lengths), {"tgt_item_id": ts.copy()})


def test_the_grouped_shuffle_buffer_lets_a_user_day_larger_than_itself_through_whole():
    """A user who makes 1,000 requests in a day, read in pieces among small user-days: it
    comes out as one run in its order, and the buffer never holds more than its capacity
    and one piece, whatever the user-day's size."""
    capacity, piece = 16, 50
    users = [u for u in range(1, 40) for _ in range(u % 4 + 1)] + [1_000] * 1_000 + [u for u in range(40, 80) for _ in range(3)]
    chunks = [_chunk(users[i:i + piece], i) for i in range(0, len(users), piece)]
    taken = held = 0
    most = 0

    def stream():
        nonlocal taken
        for c in chunks:
            taken += len(c)
            yield c

    out = []
    for c in shuffle_user_days(stream(), capacity, np.random.default_rng(0)):
        out.append(c)
        held = taken - sum(len(o) for o in out)
        most = max(most, held)
    got = [(int(u), int(t)) for c in out for u, t in zip(c.request["user_id"], c.request["request_ts"])]
    assert sorted(got) == sorted((int(u), int(t)) for c in chunks for u, t in zip(c.request["user_id"], c.request["request_ts"]))
    runs = [u for i, (u, _) in enumerate(got) if i == 0 or got[i - 1][0] != u]
    assert len(runs) == len(set(runs)) == 79 + 1
    big = [t for u, t in got if u == 1_000]
    assert big == sorted(big) and len(big) == 1_000
    assert most <= capacity + piece


def test_grouping_and_length_buckets_are_refused_together():
    with pytest.raises(LongseqError, match="group_user_days and bucket_pool"):
        ReaderConfig(group_user_days=True, bucket_pool=64)


def test_train_group_user_days_reaches_the_reader(tmp_path: Path):
    from longseq.cli.main import build_parser
    from longseq.cli.model_commands import train_config
    from longseq.trainer.train_config import TrainConfig, reader_config

    base = ["train", "--data", str(tmp_path), "--start", str(DAYS[0]), "--run-dir", str(tmp_path / "run")]
    assert reader_config(train_config(build_parser().parse_args([*base, "--group-user-days"]))).group_user_days
    assert not reader_config(train_config(build_parser().parse_args(base))).group_user_days
    # a config saved before the setting existed reads as without it
    saved = json.loads(TrainConfig().to_json())
    del saved["group_user_days"]
    assert TrainConfig().same_settings(json.dumps(saved))
    assert not TrainConfig(group_user_days=True).same_settings(json.dumps(saved))
