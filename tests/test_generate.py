"""The impression-log generator writes valid, deterministic, realistic contract-1 data: the
default spec's short-video logs (unchanged byte for byte) and the logs of another spec."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from longseq.dataset.parquet_files import check_parquet_files, read_arrow
from longseq.dataset.raw import read_raw_partition
from longseq.dataset.storage import LocalStorage
from longseq.schemas.contracts import DAY_MS, DEFAULT_SPEC, RAW_LOG, SUCCESS_MARKER, TASKS, contracts_of
from longseq.schemas.errors import SchemaMismatchError
from longseq.schemas.spec import SPECS_DIR, load_spec, spec_from_dict
from longseq.sources import SAMPLE_START
from longseq.sources.generate import (
    FUNNEL, PROFILES, REPORT_FILE, build_catalogue, build_users, generate, input_role, niche_loves,
)

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


@pytest.mark.slow
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


@pytest.mark.slow
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
    from longseq.schemas.errors import LongseqError

    with pytest.raises(LongseqError, match="--dirty"):
        generate(tmp_path, PROFILES["tiny"], seed=1, start=START, dirty=0.9)


def test_missing_or_incomplete_partitions_are_clear_errors(tmp_raw_day):
    from longseq.schemas.errors import MissingPrerequisiteError

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


# ---------------------------------------------------------------- the default spec, unchanged

# sha256 of the values of PROFILES["tiny"], seed 5, dirty 0.1, as the generator wrote them
# before it knew of specs (commit 51563e7): the default spec's logs must not change.
TINY_SEED5_DIRTY10_VALUES = "5120fb7f27bf634cadafe79f1c2e24141b06dde03dfc57b63aea60251fcc8ff0"


def values_digest(root: Path) -> str:
    """sha256 of every part file's path and values (not its bytes: a pyarrow upgrade may
    change the footer, the values must not change)."""
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.parquet")):
        h.update(str(f.relative_to(root)).encode())
        h.update(pq.read_table(f).to_pandas().to_csv(index=False).encode())
    return h.hexdigest()


def test_the_default_spec_writes_what_it_always_wrote(tmp_path):
    generate(tmp_path / "none", PROFILES["tiny"], seed=5, start=START, dirty=0.1)
    assert values_digest(tmp_path / "none") == TINY_SEED5_DIRTY10_VALUES
    # the default spec given explicitly, by file, or a spec with its raw log (a feature added,
    # another name): the same bytes
    renamed = spec_from_dict({**DEFAULT_SPEC.to_dict(), "name": "mine", "features": {
        "watch": {"kind": "numeric", "source": "play_ms", "transform": "log", "sides": ["history"]}}})
    for name, spec in (("default", DEFAULT_SPEC), ("file", SPECS_DIR / "default.yaml"), ("renamed", renamed)):
        generate(tmp_path / name, PROFILES["tiny"], seed=5, start=START, dirty=0.1, spec=spec)
        assert _digest(tmp_path / name) == _digest(tmp_path / "none"), name


# ---------------------------------------------------------------- another spec: e-commerce

ECOMMERCE = load_spec(SPECS_DIR / "ecommerce.yaml")
ECOMMERCE_RAW = contracts_of(ECOMMERCE).raw_log


def _spec_frame(root: Path, spec) -> pd.DataFrame:
    days, raw_log = sorted(root.glob("ds=*")), contracts_of(spec).raw_log
    return pd.concat([read_arrow(str(d), raw_log, names=spec.raw_names).to_pandas().assign(ds=d.name[3:])
                      for d in days], ignore_index=True)


@pytest.fixture(scope="module")
def ecommerce_sample(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("ecommerce")
    report = generate(out, PROFILES["small"].with_sizes(users=200, days=3), seed=7, start=START, spec=ECOMMERCE)
    assert report.spec == {"name": "ecommerce", "fingerprint": ECOMMERCE.fingerprint}
    return out, _spec_frame(out, ECOMMERCE)


def test_spec_logs_pass_the_spec_raw_contract_and_not_the_default(ecommerce_sample):
    out, df = ecommerce_sample
    days = sorted(out.glob("ds=*"))
    assert len(days) == 3 and all((d / SUCCESS_MARKER).exists() for d in days)
    for d in days:
        assert check_parquet_files(LocalStorage(), str(d), ECOMMERCE_RAW, names=ECOMMERCE.raw_names)
        with pytest.raises(SchemaMismatchError, match="column 'product_id'"):  # the logs' own name
            check_parquet_files(LocalStorage(), str(d), ECOMMERCE_RAW)
        with pytest.raises(SchemaMismatchError):
            check_parquet_files(LocalStorage(), str(d), RAW_LOG)
    assert list(df.columns[:-1]) == ECOMMERCE_RAW.names
    assert df[ECOMMERCE_RAW.required_names].notna().all().all() and df.event_id.is_unique
    assert (df.event_ts >= df.request_ts).all()
    assert (df[["user_id", "item_id", "author_id", "category_id", "price_cents"]] > 0).all().all()


def test_spec_tasks_are_a_funnel_driven_by_the_latent_model(ecommerce_sample):
    _, df = ecommerce_sample
    click, cart, purchase = df.click, df.cart, df.purchase
    assert set(pd.unique(df[["click", "cart", "purchase"]].to_numpy().ravel())) == {0, 1}
    assert cart[click == 0].sum() == 0 and purchase[cart == 0].sum() == 0  # P(cart | no click) == 0, ...
    rates = {"click": click.mean(), "cart|click": cart[click == 1].mean(), "purchase|cart": purchase[cart == 1].mean()}
    assert 0.08 < rates["click"] < 0.3 and 0.15 < rates["cart|click"] < 0.6 and 0.15 < rates["purchase|cart"] < 0.7
    assert len({round(r, 2) for r in rates.values()}) == 3  # each step has its own rate
    # the niche topics a user loves get clicked far more: the same hidden trait as the default logs
    p = PROFILES["small"].with_sizes(users=200, days=3)
    cat, users = build_catalogue(p, seed=7), build_users(p, seed=7)
    topic = pd.Series(cat.topic, index=cat.item_id).loc[df.item_id].to_numpy()
    niche = topic >= p.main_topics
    user_index = pd.Series(np.arange(p.users), index=users.user_id).loc[df.user_id[niche]].to_numpy()
    loves = niche_loves(users, user_index, topic[niche] - p.main_topics, p)
    assert click[niche][loves].mean() - click[niche][~loves].mean() > 0.2


def test_integer_inputs_are_item_attributes_of_the_topic_and_carry_signal(ecommerce_sample):
    _, df = ecommerce_sample
    p = PROFILES["small"]
    cat = build_catalogue(p, seed=7)
    topic = pd.Series(cat.topic, index=cat.item_id).loc[df.item_id].to_numpy()
    assert input_role(ECOMMERCE.input("category_id")) == "attribute"
    assert (df.groupby("item_id").category_id.nunique() == 1).all()  # an item has one category
    per_topic = pd.Series(df.category_id.to_numpy()).groupby(topic).nunique()
    assert per_topic.max() <= FUNNEL.values_per_topic
    assert (pd.Series(topic).groupby(df.category_id.to_numpy()).nunique() == 1).all()  # a category, a topic
    # a user's last click in a category predicts the next one there, beyond what the user's
    # own click rate explains (the same lift with categories shuffled over the items)
    df = df.sort_values(["user_id", "event_ts", "event_id"])
    items = df.drop_duplicates("item_id").set_index("item_id").category_id
    shuffled = pd.Series(np.random.default_rng(0).permutation(items.to_numpy()), index=items.index)

    def lift(category: np.ndarray) -> float:
        prev = df.groupby([df.user_id.to_numpy(), category]).click.shift(1)
        nxt, prev = df.click[prev.notna()], prev[prev.notna()]
        return nxt[prev == 1].mean() - nxt[prev == 0].mean()

    assert lift(df.category_id.to_numpy()) > lift(shuffled.loc[df.item_id].to_numpy()) + 0.02


def test_price_like_inputs_are_per_item_fill_their_features_buckets_and_matter(ecommerce_sample):
    _, df = ecommerce_sample
    assert input_role(ECOMMERCE.input("price_cents")) == "amount"
    assert (df.groupby("item_id").price_cents.nunique() == 1).all()
    # price_bucket reads it: every bucket of its boundaries, the two outer ones too, gets its share of rows
    boundaries = next(f.boundaries for f in ECOMMERCE.features if f.source == "price_cents")
    shares = np.bincount(np.searchsorted(boundaries, df.price_cents, side="right")) / len(df)
    assert len(shares) == len(boundaries) + 1 and shares.min() > 0.5 / len(shares), shares.round(3)
    assert (df.price_cents > 0).all()
    carted = df[df.cart == 1]
    cheap = carted.price_cents <= carted.price_cents.median()
    assert carted.purchase[cheap].mean() - carted.purchase[~cheap].mean() > 0.05  # pricier: bought less


def test_optional_inputs_have_some_nulls_and_zeros_and_dwell_follows_the_click(ecommerce_sample):
    _, df = ecommerce_sample
    for name in ("dwell_ms", "image_ms"):
        assert not ECOMMERCE.input(name).required
        assert 0.005 < df[name].isna().mean() < 0.05, name
    assert (df.image_ms == 0).mean() > 0.002 and (df.image_ms > 0).mean() > 0.9
    logged = df[df.dwell_ms.notna()]
    assert (logged.dwell_ms[logged.click == 0] == 0).all()  # time after a click: none without one
    assert (logged.dwell_ms[logged.click == 1] > 0).mean() > 0.95
    # and it grows with each step reached: the history feature dwell_ratio carries the outcome
    by_step = logged[logged.click == 1].groupby(logged.cart + logged.purchase).dwell_ms.median()
    assert by_step.is_monotonic_increasing and len(by_step) == 3


def test_spec_logs_are_deterministic_by_seed(tmp_path):
    p = PROFILES["tiny"]
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate(tmp_path / name, p, seed=seed, start=START, dirty=0.1, spec=SPECS_DIR / "ecommerce.yaml")
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b and len(a) >= 4
    assert a.keys() == c.keys() and a != c
    generate(tmp_path / "default", p, seed=5, start=START, dirty=0.1)
    assert _digest(tmp_path / "default").keys() == a.keys() and _digest(tmp_path / "default") != a


def test_spec_dirty_rows_are_reported_exactly(tmp_path):
    p = PROFILES["tiny"].with_sizes(users=60, days=2)
    report = generate(tmp_path, p, seed=3, start=START, dirty=0.08, spec=ECOMMERCE)
    df = _spec_frame(tmp_path, ECOMMERCE)
    tasks = list(ECOMMERCE.tasks)
    assert len(df) == report.rows == report.clean_rows + report.dirty["duplicate_event_id"]
    observed = {
        "duplicate_event_id": int(df.event_id.notna().sum() - df.event_id.dropna().nunique()),
        # an optional input's nulls are clean: only the required columns count
        "missing_required": int(df[ECOMMERCE_RAW.required_names].isna().any(axis=1).sum()),
        "label_out_of_range": int((~df[tasks].isin([0, 1]) & df[tasks].notna()).any(axis=1).sum()),
        "event_before_request": int((df.event_ts < df.request_ts).sum()),
    }
    assert observed == report.dirty and min(report.dirty.values()) > 0
    assert df.dwell_ms.isna().sum() > 0


def test_every_input_type_and_role_is_filled_within_its_type(tmp_path):
    spec = spec_from_dict({
        "name": "kinds", "tasks": ["view", "save"],
        "inputs": {
            "shelf": {"type": "int8", "required": True}, "zone": {"type": "int32"},
            "score": {"type": "float32", "required": True}, "amount_paid": {"type": "float64"},
            "watch_ms": {"type": "int64", "required": True}, "dwell_time": {"type": "int32"},
            "clip_length": {"type": "int32", "required": True},
        },
    })
    roles = {i.name: input_role(i) for i in spec.inputs}
    assert roles == {"shelf": "attribute", "zone": "attribute", "score": "amount", "amount_paid": "amount",
                     "watch_ms": "view_ms", "dwell_time": "engaged_ms", "clip_length": "length_ms"}
    p = PROFILES["tiny"].with_sizes(users=20, days=1)
    generate(tmp_path, p, seed=2, start=START, spec=spec)
    df = _spec_frame(tmp_path, spec)
    assert len(df) > 500
    assert df.shelf.between(1, 127).all() and df.zone.dropna().between(0, 2**31 - 1).all()
    assert df[["shelf", "score", "watch_ms"]].notna().all().all()  # required: never null in clean data
    assert (df.score > 0).all() and df.score.nunique() > 50
    # no feature reads it: an amount keeps its log-normal per item, median 25
    paid = df.dropna(subset=["amount_paid"]).drop_duplicates("item_id").amount_paid
    paid = paid[paid > 0]
    assert 12 < paid.median() < 50 and 0.5 < np.log(paid).std() < 1.3, (paid.median(), np.log(paid).std())
    assert (df.save <= df.view).all()
    assert (df.dwell_time.dropna()[df.view == 0] == 0).all()
    cat = build_catalogue(p, seed=2)
    assert (df.clip_length == pd.Series(cat.duration_ms, index=cat.item_id).loc[df.item_id].to_numpy()).all()
    assert (df.watch_ms <= 2 * df.clip_length).all()  # time on screen: at most a replay
