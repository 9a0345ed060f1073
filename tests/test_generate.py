"""The impression-log generator writes valid, deterministic, realistic contract-1 data."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dataset.raw import read_raw_partition
from schemas.contracts import DAY_MS, RAW_LOG, SUCCESS_MARKER, TASKS
from sources import SAMPLE_START
from sources.generate import PROFILES, REPORT_FILE, build_catalogue, build_users, generate, niche_loves

START = SAMPLE_START


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != REPORT_FILE  # the report holds wall-clock seconds
    }


def _frame(root: Path, days: int) -> pd.DataFrame:
    parts = []
    for d in range(days):
        day = START + dt.timedelta(days=d)
        parts.append(read_raw_partition(root, day).to_pandas().assign(ds=day.isoformat()))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def default_sample(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The default profile, shrunk to 300 users x 14 days (about 800k clean events)."""
    out = tmp_path_factory.mktemp("default")
    profile = PROFILES["default"].with_sizes(users=300, days=14)
    generate(out, profile, seed=11, start=START)
    return out, _frame(out, 14)


def test_same_arguments_give_identical_bytes(tmp_path):
    p = PROFILES["tiny"]
    generate(tmp_path / "a", p, seed=5, start=START, dirty=0.1)
    generate(tmp_path / "b", p, seed=5, start=START, dirty=0.1)
    generate(tmp_path / "c", p, seed=6, start=START, dirty=0.1)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b and len(a) >= 4
    assert a.keys() == c.keys() and a != c


def test_partitions_are_complete_and_match_the_contract(tmp_path):
    p = PROFILES["tiny"]
    report = generate(tmp_path, p, seed=1, start=START)
    for d in range(p.days):
        part = tmp_path / f"ds={(START + dt.timedelta(days=d)).isoformat()}"
        assert (part / SUCCESS_MARKER).exists()
        for f in part.glob("*.parquet"):
            assert pq.read_schema(f).names == RAW_LOG.names
    assert not list(tmp_path.glob(".*tmp"))  # no temp dirs left behind
    df = _frame(tmp_path, p.days)
    assert len(df) == report.rows == report.clean_rows
    assert json.loads((tmp_path / REPORT_FILE).read_text())["rows"] == report.rows


def test_clean_data_obeys_the_contract(default_sample):
    _, df = default_sample
    assert df[RAW_LOG.required_names].notna().all().all()
    assert df.event_id.is_unique
    for t in TASKS:
        assert set(df[t].unique()) <= {0, 1}
    assert (df.finish & df.skip).sum() == 0  # a finished video was not skipped
    assert (df.event_ts >= df.request_ts).all()
    day_start = pd.to_datetime(df.ds).astype("int64") // 10**6
    assert ((df.request_ts >= day_start) & (df.request_ts < day_start + DAY_MS)).all()  # ds = UTC date of request_ts
    assert (df[["user_id", "item_id", "author_id"]] > 0).all().all()
    requests = df.groupby("request_id").agg(
        n=("event_id", "size"), users=("user_id", "nunique"), ts=("request_ts", "nunique"),
        pos_min=("position", "min"), pos_max=("position", "max"),
    )
    assert (requests.users == 1).all() and (requests.ts == 1).all()
    assert requests.n.between(4, 16).all() and requests.n.nunique() == 13
    assert (requests.pos_min == 0).all() and (requests.pos_max == requests.n - 1).all()
    rates = df[list(TASKS)].mean()
    assert 0.3 < rates.finish < 0.6 and 0.1 < rates.skip < 0.4 and 0.01 < rates.like < 0.1 and rates.comment < rates.like


def test_activity_is_heavy_tailed(default_sample):
    _, df = default_sample
    per_user = df.groupby("user_id").size()
    assert (per_user > 10_000).mean() >= 0.04  # a real share has 10k+ events in 14 days
    assert (per_user < 300).mean() >= 0.10  # and many have only a few
    assert per_user.max() > 15 * per_user.median()


def test_event_times_cross_midnight_and_arrive_after_later_requests(default_sample):
    """The ETL's traps must be present in clean data: late logs, ties, midnight crossings."""
    _, df = default_sample
    day_end = pd.to_datetime(df.ds).astype("int64") // 10**6 + DAY_MS
    assert (df.event_ts >= day_end).sum() > 100
    # events of one request logged after the same user's next request was served
    req = df.groupby("request_id").agg(user=("user_id", "first"), ts=("request_ts", "first"), last=("event_ts", "max"))
    req = req.sort_values(["user", "ts"])
    nxt = req.groupby("user").ts.shift(-1)
    assert (req["last"] > nxt).mean() > 0.01
    # late batch uploads give equal event_ts within a user: ties are broken by event_id
    assert df.duplicated(["user_id", "event_ts"]).sum() > 1000
    # requests of one user never overlap: the next one starts after this one was served
    assert (req.ts.groupby(req.user).diff().dropna() > 0).all()


def test_catalogue_has_topics_authors_and_zipf_popularity(default_sample):
    _, df = default_sample
    counts = df.item_id.value_counts().to_numpy()
    top = counts[: len(counts) // 100].sum() / counts.sum()
    assert top > 0.15  # the top 1% of items take a large share of impressions
    cat = build_catalogue(PROFILES["default"], seed=11)
    assert len(np.unique(cat.author_id)) < len(cat.item_id) / 5
    topic_of = pd.Series(cat.topic, index=cat.item_id)
    assert topic_of.groupby(pd.Series(cat.author_id, index=cat.item_id)).nunique().max() == 1  # an author, a topic


def test_long_term_niche_interests_reward_long_histories(default_sample):
    """Niche topics surface rarely, and a past outcome on one predicts the next outcome on it."""
    _, df = default_sample
    p = PROFILES["default"]
    cat = build_catalogue(p, seed=11)
    topic = pd.Series(cat.topic, index=cat.item_id)
    df = df.assign(topic=topic.loc[df.item_id].to_numpy()).sort_values(["user_id", "event_ts", "event_id"])
    niche = df[df.topic >= p.main_topics]
    share = len(niche) / len(df)
    assert 0.05 < share < 0.2
    # per (user, niche topic), impressions are rare: a handful across thousands of events
    heavy = df.groupby("user_id").size().pipe(lambda s: s[s > 10_000].index)
    touches = niche[niche.user_id.isin(heavy)].groupby(["user_id", "topic"]).size()
    events = df[df.user_id.isin(heavy)].groupby("user_id").size()
    per_10k = touches.groupby("user_id").mean() / events * 10_000
    assert 1 < per_10k.median() < 10
    # the outcome on the previous touch of a topic predicts the next one
    prev = niche.groupby(["user_id", "topic"]).finish.shift(1)
    nxt = niche.finish[prev.notna()]
    lift = nxt[prev[prev.notna()] == 1].mean() - nxt[prev[prev.notna()] == 0].mean()
    assert lift > 0.3
    # and it is the hidden per-user trait that drives it
    users = build_users(p, seed=11)
    index = pd.Series(np.arange(p.users), index=users.user_id)
    loves = niche_loves(users, index.loc[niche.user_id].to_numpy(), niche.topic.to_numpy() - p.main_topics, p)
    assert niche.finish[loves].mean() - niche.finish[~loves].mean() > 0.4


def test_dirty_rows_are_reported_exactly(tmp_path):
    p = PROFILES["tiny"].with_sizes(users=60, days=2)
    report = generate(tmp_path, p, seed=3, start=START, dirty=0.08)
    df = _frame(tmp_path, p.days)
    assert len(df) == report.rows == report.clean_rows + report.dirty["duplicate_event_id"]
    observed = {
        "duplicate_event_id": int(df.event_id.notna().sum() - df.event_id.dropna().nunique()),
        "missing_required": int(df[RAW_LOG.required_names].isna().any(axis=1).sum()),
        "label_out_of_range": int((~df[list(TASKS)].isin([0, 1]) & df[list(TASKS)].notna()).any(axis=1).sum()),
        "event_before_request": int((df.event_ts < df.request_ts).sum()),
    }
    assert observed == report.dirty
    total = sum(report.dirty.values())
    pieces = p.days * -(-p.users // p.users_per_chunk)  # rounding happens per (day, chunk)
    assert abs(total - 0.08 * report.clean_rows) <= pieces
    assert min(report.dirty.values()) >= total / 4 - pieces


def test_bad_arguments_are_clear_errors(tmp_path):
    from schemas.errors import LongseqError

    with pytest.raises(LongseqError, match="--dirty"):
        generate(tmp_path, PROFILES["tiny"], seed=1, start=START, dirty=0.9)


def test_missing_or_incomplete_partitions_are_clear_errors(tmp_raw_day):
    from schemas.errors import MissingPrerequisiteError

    root, day = tmp_raw_day
    with pytest.raises(MissingPrerequisiteError, match="does not exist"):
        read_raw_partition(root, day + dt.timedelta(days=30))
    (root / f"ds={day.isoformat()}" / SUCCESS_MARKER).unlink()
    with pytest.raises(MissingPrerequisiteError, match="no _SUCCESS marker"):
        read_raw_partition(root, day)


@pytest.fixture
def tmp_raw_day(tmp_path):
    generate(tmp_path, PROFILES["tiny"].with_sizes(users=5, days=1), seed=1, start=START)
    return tmp_path, START
