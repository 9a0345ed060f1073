"""Synthetic short-video impression logs (contract 1) from a latent user model.

Real impression logs are private, so tests, benchmarks and the demo run on this. The model
(docs/GENERATOR.md has the full story):

- A catalogue of items grouped into topics. Main topics are big and shown often; niche
  topics are small (a couple of authors each) and shown rarely, to every user alike.
- Users with heavy-tailed activity (log-normal request rates, bursty days), a dense
  affinity over main topics, and hidden love/dislike for each niche topic.
- Each day a user opens sessions; a session has a short-term interest topic; requests in
  a session serve 4-16 impressions drawn from that topic, the user's main topics, niche
  topics or global popularity.
- Labels come from a logit of item quality, user bias, main-topic affinity, the session
  boost and the niche affinity. A niche topic turns up a few times in 10k events, so only
  a model that sees a long history can learn which niche topics a user loves.
- event_ts = request_ts + watch time of the items up to and including this one + a
  logging delay; a few requests upload late, all events in one batch (equal event_ts,
  some after the user's next request, some after midnight).

Everything is drawn from numpy Generators seeded by (seed, day, chunk), so the same
arguments give byte-identical files; a day is generated in chunks of users, so memory is
bounded by the chunk, not by the data set.

Logs in the shape of another dataset spec (generate(spec=...); docs/GENERATOR.md, "Other
specs"): the same users, catalogue, requests, times, late uploads and dirt, but the spec's
tasks are a funnel driven by the same latent logit (task k can only be 1 where task k-1
is), and its inputs are filled by role, read from the input's type and name (input_role):
item attributes tied to the item's topic, log-normal amounts, time on screen, time spent
after engaging. The features then shape them: a value a bucketize or normalize feature
reads (directly, or as a ratio's numerator) keeps its role's order but takes the feature's
distribution (every bucket, the mean and std), and each target feature's value moves the
latent logit a little, so a model with the feature can beat one without it. A spec whose
raw log is the default one's gets the short-video logs above, byte for byte.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longseq.dataset.raw import RawPartitionWriter
from longseq.dataset.spec_record import spec_summary
from longseq.features.hashing import mix64, name_salt
from longseq.schemas.contracts import (
    DAY_MS, DEFAULT_CONTRACTS, DEFAULT_SPEC, RAW_LOG, TASKS, Contracts, contracts_of, day_start_ms,
)
from longseq.schemas.errors import LongseqError
from longseq.schemas.forms import to_arrow
from longseq.schemas.spec import DatasetSpec, Feature, Input, resolve_spec
from longseq.schemas.types import Schema

REPORT_FILE = "_generator_report.json"
DIRTY_KINDS = ("duplicate_event_id", "missing_required", "label_out_of_range", "event_before_request")


@dataclass(frozen=True)
class GeneratorProfile:
    """Sizes and the latent model's knobs. Named profiles are in PROFILES."""

    name: str
    users: int
    days: int
    # activity: requests/day ~ median * exp(sigma * N(0,1)) per user, times a Gamma day factor
    median_requests_per_day: float = 6.0
    activity_sigma: float = 1.8
    day_shape: float = 2.0  # Gamma shape of the per-day factor: lower = burstier days
    max_requests_per_day: float = 200.0  # about 2,000 videos: a whole waking day of watching
    mean_session_requests: float = 6.0
    impressions_min: int = 4
    impressions_max: int = 16
    evening_share: float = 0.6  # sessions around 20:30 UTC, the rest uniform over the day
    # catalogue
    main_topics: int = 24
    niche_topics: int = 256
    items_per_main_topic: int = 3000
    items_per_niche_topic: int = 30
    authors_per_main_topic: int = 150
    authors_per_niche_topic: int = 2
    zipf_exponent: float = 1.05
    # where an impression comes from (the rest: global popularity)
    p_session: float = 0.35
    p_main: float = 0.40
    p_niche: float = 0.12
    feed_temperature: float = 1.0
    # label model (logit of finish)
    base_logit: float = -0.7
    quality_sd: float = 0.6
    user_bias_sd: float = 0.4
    w_main: float = 0.5
    w_session: float = 0.8
    niche_love_prob: float = 0.25
    niche_love: float = 2.6
    niche_dislike: float = -1.2
    position_decay: float = 0.02
    # logging
    log_delay_median_ms: float = 1500.0
    late_upload_prob: float = 0.03
    late_upload_median_ms: float = 30 * 60_000.0
    users_per_chunk: int = 1000

    @property
    def topics(self) -> int:
        return self.main_topics + self.niche_topics

    def with_sizes(self, users: int | None, days: int | None) -> "GeneratorProfile":
        return dataclasses.replace(self, users=users or self.users, days=days or self.days)


PROFILES: dict[str, GeneratorProfile] = {
    p.name: p
    for p in (
        # a few thousand events: unit tests
        GeneratorProfile(
            "tiny", users=30, days=2, median_requests_per_day=3.0, activity_sigma=0.8,
            main_topics=6, niche_topics=16, items_per_main_topic=200, items_per_niche_topic=10,
            authors_per_main_topic=20, users_per_chunk=16,
        ),
        # about 100k events: the demo
        GeneratorProfile("small", users=200, days=4, median_requests_per_day=4.0),
        # the default: heavy tail with a real share of users past 10k events
        GeneratorProfile("default", users=1000, days=14),
        # benchmark sizes
        GeneratorProfile("bench-1m", users=400, days=12),
        GeneratorProfile("bench-10m", users=4000, days=12),
        GeneratorProfile("bench-50m", users=20000, days=12),
    )
}


@dataclass
class GenerateReport:
    out: str
    profile: str
    seed: int
    start: str
    days: int
    users: int
    dirty_fraction: float
    rows: int = 0
    clean_rows: int = 0
    requests: int = 0
    dirty: dict[str, int] = field(default_factory=lambda: {k: 0 for k in DIRTY_KINDS})
    per_day: dict[str, dict[str, int]] = field(default_factory=dict)
    events_per_user: dict[str, float] = field(default_factory=dict)
    users_over_10k_events: int = 0
    seconds: float = 0.0
    spec: dict[str, str] = field(default_factory=dict)  # spec_summary of the spec the logs follow

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


# ---------------------------------------------------------------- the world


def _zipf_weights(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    """Zipf weights 1/rank^s over n things, with ranks in random order."""
    return 1.0 / (rng.permutation(n) + 1.0) ** s


def _segment_keys(weights: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sampling keys for categorical draws within segments [offsets[g], offsets[g+1]).

    key = g + (cumulative weight within g, normalised to (0, 1]); the last key of a segment
    is exactly g + 1, so searchsorted(keys, g + u) for u in [0, 1) lands inside segment g.
    """
    group = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    cum = np.cumsum(weights)
    start = np.concatenate([[0.0], cum])[offsets[:-1]]
    total = cum[offsets[1:] - 1] - start
    within = (cum - start[group]) / total[group]
    within[offsets[1:] - 1] = 1.0
    return group + within


def _draw_in_segments(keys: np.ndarray, offsets: np.ndarray, group: np.ndarray, u: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(keys, group + u, side="right")
    return np.clip(idx, offsets[group], offsets[group + 1] - 1)


def _positive_ids(n: int, salt: int) -> np.ndarray:
    """n distinct positive int64 ids that look random (a bijection of 0..n-1)."""
    return (mix64(np.arange(n, dtype=np.uint64), salt) >> np.uint64(2)).astype(np.int64) + 1


@dataclass
class Catalogue:
    item_id: np.ndarray  # int64, items sorted by topic
    author_id: np.ndarray  # int64 per item
    topic: np.ndarray  # int32 per item; >= main_topics means niche
    quality: np.ndarray  # float32 per item
    duration_ms: np.ndarray  # int32 per item
    topic_offsets: np.ndarray  # items of topic t are [topic_offsets[t], topic_offsets[t+1])
    topic_keys: np.ndarray  # _segment_keys of Zipf popularity within topics
    popular_keys: np.ndarray  # cumulative global popularity over main-topic items, in (0, 1]


def build_catalogue(p: GeneratorProfile, seed: int) -> Catalogue:
    rng = np.random.default_rng([seed, 0xCA7A])
    per_topic = np.array([p.items_per_main_topic] * p.main_topics + [p.items_per_niche_topic] * p.niche_topics)
    authors_per = np.array([p.authors_per_main_topic] * p.main_topics + [p.authors_per_niche_topic] * p.niche_topics)
    topic_offsets = np.concatenate([[0], np.cumsum(per_topic)])
    author_offsets = np.concatenate([[0], np.cumsum(authors_per)])
    n_items = int(topic_offsets[-1])
    topic = np.repeat(np.arange(p.topics, dtype=np.int32), per_topic)

    # Prolific authors: each item's author is a Zipf draw among its topic's authors.
    author_keys = _segment_keys(_zipf_weights(rng, int(author_offsets[-1]), 1.0), author_offsets)
    author_index = _draw_in_segments(author_keys, author_offsets, topic, rng.random(n_items))
    author_ids = _positive_ids(int(author_offsets[-1]), seed * 7919 + 2)

    popularity = _zipf_weights(rng, n_items, p.zipf_exponent)
    main_pop = popularity[: topic_offsets[p.main_topics]]
    popular_keys = np.cumsum(main_pop) / main_pop.sum()
    popular_keys[-1] = 1.0
    duration = _durations(rng, n_items)
    return Catalogue(
        item_id=_positive_ids(n_items, seed * 7919 + 1),
        author_id=author_ids[author_index],
        topic=topic,
        quality=rng.normal(0.0, p.quality_sd, n_items).astype(np.float32),
        duration_ms=duration.astype(np.int32),
        topic_offsets=topic_offsets,
        topic_keys=_segment_keys(popularity, topic_offsets),
        popular_keys=popular_keys,
    )


def _durations(rng: np.random.Generator, n: int) -> np.ndarray:
    """n item lengths in ms: log-normal, median 20 s, within 3 s and 5 min."""
    return np.clip(rng.lognormal(np.log(20_000), 0.7, n), 3_000, 300_000)


@dataclass
class Users:
    user_id: np.ndarray  # int64
    rate: np.ndarray  # mean requests per day
    main_affinity: np.ndarray  # (users, main_topics) float32, N(0,1)
    bias: np.ndarray
    like_bias: np.ndarray
    comment_bias: np.ndarray
    niche_salt: int


def build_users(p: GeneratorProfile, seed: int) -> Users:
    rng = np.random.default_rng([seed, 0x05E5])
    n = p.users
    return Users(
        user_id=_positive_ids(n, seed * 7919 + 3),
        rate=p.median_requests_per_day * np.exp(p.activity_sigma * rng.standard_normal(n)),
        main_affinity=rng.standard_normal((n, p.main_topics)).astype(np.float32),
        bias=rng.normal(0.0, p.user_bias_sd, n),
        like_bias=rng.normal(0.0, 0.5, n),
        comment_bias=rng.normal(0.0, 0.5, n),
        niche_salt=seed * 7919 + 4,
    )


def niche_loves(users: Users, user_index: np.ndarray, niche_topic: np.ndarray, p: GeneratorProfile) -> np.ndarray:
    """Whether each user loves each niche topic: a fixed hidden trait, hashed (no table)."""
    key = user_index.astype(np.uint64) * np.uint64(p.niche_topics) + niche_topic.astype(np.uint64)
    u = (mix64(key, users.niche_salt) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return u < p.niche_love_prob


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _within_segment_cumsum(x: np.ndarray, segment: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum of x restarting at each segment (rows sorted by segment)."""
    total = np.cumsum(x)
    before = total - x
    return total - before[first[segment]]


# ---------------------------------------------------------------- logs of another spec


@dataclass(frozen=True)
class FunnelModel:
    """The knobs of spec-shaped logs (docs/GENERATOR.md, "Other specs")."""

    # task 0 ~ sigmoid(logit + offsets[0]); task k ~ task k-1 and sigmoid(step_slope * logit
    # + offsets[k] - amount_weight * the item's amount z-score); the last offset repeats
    offsets: tuple[float, ...] = (-2.0, -1.2, -0.9)
    step_slope: float = 0.6
    task_bias_sd: float = 0.4  # per user and task: some users cart a lot, some never buy
    amount_weight: float = 0.4  # a pricier item goes past the first step less often
    values_per_topic: int = 3  # distinct values of an item attribute within one topic
    amount_median: float = 25.0  # an amount's median; x100 for a name ending in _cents
    amount_topic_sd: float = 0.8  # log-normal sd of an amount between topics
    amount_item_sd: float = 0.5  # and within a topic
    engaged_median_ms: float = 30_000.0  # time spent after engaging (a product page), per step reached
    optional_null: float = 0.02  # share of an optional input left null (not logged)
    optional_zero: float = 0.01  # and share set to 0 (logged as zero)
    # what a target feature's value adds to the latent logit: its sd over the items (small
    # beside the niche love and the topic affinity, but more than an item id can learn alone)
    feature_effect_sd: float = 0.5
    log_median: float = 100.0  # an attribute a log feature reads: log-normal, this median, sd 1 in log


FUNNEL = FunnelModel()
ITEM_ROLES = ("amount", "length_ms", "attribute")  # one value per item; the other roles, one per impression
SHAPING = ("bucketize", "normalize")  # transforms whose distribution a value read by them takes


def input_role(i: Input) -> str:
    """How the generator fills an input, from its type and name (docs/GENERATOR.md), the
    first rule that fits: a float, or a name with price/amount or ending in _cents: a
    log-normal amount of the item; a name with dwell: time spent after engaging (0 without
    the first task); a name with duration or length: the item's length; a name ending in
    _ms: the item's time on screen; any other integer: an attribute of the item, tied to its topic."""
    if i.type.startswith("float") or "price" in i.name or "amount" in i.name or i.name.endswith("_cents"):
        return "amount"
    if "dwell" in i.name:
        return "engaged_ms"
    if "duration" in i.name or "length" in i.name:
        return "length_ms"
    if i.name.endswith("_ms"):
        return "view_ms"
    return "attribute"


def value_feature(spec: DatasetSpec, name: str, attribute: bool = False) -> Feature | None:
    """The feature whose distribution an input or derived value takes: the first bucketize
    feature reading it, else the first normalize one; for an attribute (ids, no scale of its
    own), else the first log one. None: the value keeps its role's distribution."""
    numeric = [f for f in spec.features if f.source == name and f.kind == "numeric"]
    for transform in SHAPING + (("log",) if attribute else ()):
        f = next((f for f in numeric if f.transform == transform), None)
        if f is not None:
            return f
    return None


def input_role_in(spec: DatasetSpec, i: Input) -> str:
    """input_role, but an input that a categorical feature reads (and no bucketize or
    normalize one) is an attribute whatever its name: a categorical feature reads ids."""
    categorical = any(f.source == i.name and f.kind == "categorical" for f in spec.features)
    if categorical and value_feature(spec, i.name) is None:
        return "attribute"
    return input_role(i)


def _raw_shape(raw_log: Schema) -> tuple:
    return tuple((f.name, f.dtype, f.required) for f in raw_log)


def has_default_raw_log(spec: DatasetSpec) -> bool:
    """The spec's raw log is the default one's (features may differ): the short-video logs fit it."""
    return _raw_shape(contracts_of(spec).raw_log) == _raw_shape(RAW_LOG)


@dataclass
class SpecWorld:
    """What spec-shaped logs add to the catalogue and the users."""

    spec: DatasetSpec
    roles: dict[str, str]  # input -> input_role_in
    item_values: dict[str, np.ndarray]  # per catalogue item: the inputs of ITEM_ROLES, as floats or ids
    amount_z: np.ndarray  # per item: z-score of the log of the first amount input (0 without one)
    task_bias: np.ndarray  # (users, tasks) float64
    item_effect: np.ndarray  # per item: what its target features' values add to the latent logit
    row_shaped: dict[str, Feature]  # per-impression inputs -> the feature whose distribution they take
    row_ratios: list[tuple[str, str, Feature]]  # (numerator, denominator, feature) shaped per impression


@functools.cache
def _normal_table() -> tuple[np.ndarray, np.ndarray]:
    z = np.linspace(-6.0, 6.0, 12_001)
    return np.array([NormalDist().cdf(x) for x in z]), z


def _normal_quantile(u: np.ndarray) -> np.ndarray:
    """The standard normal's quantile function, interpolated (numpy has none; to 1e-6 here)."""
    cdf, z = _normal_table()
    return np.interp(u, cdf, z)


def _bucket_values(boundaries: tuple[float, ...], u: np.ndarray, integer: bool) -> np.ndarray:
    """Values spread evenly over the len(boundaries) + 1 buckets (bucket i holds [b(i-1), b(i)))
    and within each, increasing with u in (0, 1). The outer buckets reach one typical bucket
    beyond the first and last boundary; with positive boundaries everything is geometric
    (prices, times), so the values stay positive."""
    b = np.asarray(boundaries, dtype=np.float64)
    k = len(b)
    geometric = b[0] > 0
    if geometric:
        step = (b[-1] / b[0]) ** (1 / (k - 1)) if k > 1 else 2.0
        edges = np.concatenate([[b[0] / step], b, [b[-1] * step]])
    else:
        width = (b[-1] - b[0]) / (k - 1) if k > 1 else max(abs(b[0]), 1.0)
        edges = np.concatenate([[b[0] - width], b, [b[-1] + width]])
    pos = u * (k + 1)
    j = np.minimum(pos.astype(np.int64), k)
    lo, hi, frac = edges[j], edges[j + 1], pos - j
    x = lo * (hi / lo) ** frac if geometric else lo + frac * (hi - lo)
    # an integer input takes the integers of the bucket: floor, never below its lower edge
    return np.maximum(np.ceil(lo), np.floor(x)) if integer else np.maximum(lo, x)


def feature_distribution(f: Feature, u: np.ndarray, integer: bool = False) -> np.ndarray:
    """Values with the distribution feature f expects, increasing with the quantiles u in
    (0, 1): bucketize, an equal share in each bucket; normalize, N(mean, std); log, log-normal."""
    if f.transform == "bucketize":
        return _bucket_values(f.boundaries, u, integer)
    z = _normal_quantile(u)
    x = f.mean + f.std * z if f.transform == "normalize" else FUNNEL.log_median * np.exp(z)
    return np.rint(x) if integer else x


def _impression_share(cat: Catalogue, p: GeneratorProfile) -> np.ndarray:
    """Per item, its expected share of the impressions: its topic's (the main topics alike,
    on average over users) times its popularity within the topic, plus its global draws."""
    cum = cat.topic_keys - cat.topic  # within-topic cumulative popularity, in (0, 1]
    before = np.concatenate([[0.0], cum[:-1]])
    before[cat.topic_offsets[:-1]] = 0.0
    topic_share = np.where(np.arange(p.topics) < p.main_topics, (p.p_session + p.p_main) / p.main_topics,
                           p.p_niche / p.niche_topics)
    share = topic_share[cat.topic] * (cum - before)
    n_main = int(cat.topic_offsets[p.main_topics])
    share[:n_main] += (1.0 - p.p_session - p.p_main - p.p_niche) * np.diff(cat.popular_keys, prepend=0.0)
    return share


def _share_quantiles(key: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Per item, the quantile in (0, 1) of its key among impressions, not items: popular items
    weigh more, so a value made from it has the wanted distribution over the logged rows."""
    order = np.argsort(key, kind="stable")
    cum = np.cumsum(share[order])
    u = np.empty(len(key))
    u[order] = (cum - share[order] / 2) / cum[-1]
    return u


def _row_quantiles(rng: np.random.Generator, key: np.ndarray) -> np.ndarray:
    """Per row, the quantile in (0, 1) of its key among the rows, ties in random order (so
    the zeros of a time spent after engaging do not sort by user)."""
    n = len(key)
    u = np.empty(n)
    u[np.lexsort((rng.random(n), key))] = (np.arange(n) + 0.5) / max(n, 1)
    return u


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is not positive (as a Derived value)."""
    positive = denominator > 0
    return np.where(positive, numerator / np.where(positive, denominator, 1), 0.0)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """values as an input's type: an integer rounded and kept within the type's range."""
    if dtype.kind == "i":
        info = np.iinfo(dtype)
        if values.dtype.kind == "f":
            values = np.rint(np.clip(values, info.min, np.nextafter(float(info.max), 0)))
        else:
            values = np.clip(values, info.min, info.max)
    return values.astype(dtype)


def _shaped_ratios(spec: DatasetSpec) -> list[tuple[str, str, Feature]]:
    """(numerator, denominator, feature) of each ratio that a bucketize or normalize feature
    reads: its numerator becomes the feature's value times the denominator. A numerator a
    feature reads itself, or an earlier such ratio took, keeps its values; a ratio comes after
    the one that remakes its denominator."""
    taken = {f.source for f in spec.features}
    pending = []
    for d in spec.derived:
        f, (a, b) = value_feature(spec, d.name), d.ratio
        if f is not None and a != b and a not in taken:
            taken.add(a)
            pending.append((a, b, f))
    ordered = []
    while pending:
        numerators = {r[0] for r in pending}
        r = next((r for r in pending if r[1] not in numerators), pending[0])  # pending[0]: a cycle
        pending.remove(r)
        ordered.append(r)
    return ordered


def _feature_effect(rng: np.random.Generator, f: Feature, value: np.ndarray) -> np.ndarray:
    """Per item, what a target feature's value adds to the latent logit, sd about
    feature_effect_sd: each id or bucket its own effect, evenly spread over +-sqrt(3) sd in a
    seeded order (no level is left near 0 by chance); a number, its standardised value times
    the sd, of a seeded sign."""
    sd = FUNNEL.feature_effect_sd
    if f.embedded:
        level = value if f.kind == "categorical" else np.searchsorted(f.boundaries, value, side="right")
        levels, index = np.unique(level, return_inverse=True)
        if len(levels) < 2:
            return np.zeros(len(value))
        return sd * np.sqrt(3.0) * rng.permutation(np.linspace(-1.0, 1.0, len(levels)))[index]
    if f.transform == "normalize":
        z = (value - f.mean) / f.std
    else:
        x = np.log1p(np.maximum(value, 0.0))
        z = (x - x.mean()) / max(x.std(), 1e-9)
    return sd * rng.choice([-1.0, 1.0]) * np.clip(z, -3.0, 3.0)


def _attribute_values(cat: Catalogue, rng: np.random.Generator, i: Input, seed: int) -> np.ndarray:
    """Per item: one of values_per_topic ids of its topic, positive and within the input's type."""
    k = FUNNEL.values_per_topic
    key = cat.topic.astype(np.uint64) * np.uint64(k) + rng.integers(0, k, len(cat.topic)).astype(np.uint64)
    top = np.uint64(np.iinfo(np.dtype(i.type)).max)
    return (mix64(key, seed * 7919 + name_salt(i.name)) % top + np.uint64(1)).astype(i.type)


def _topic_latent(cat: Catalogue, p: GeneratorProfile, rng: np.random.Generator) -> np.ndarray:
    """Per item: a normal of its topic (sd amount_topic_sd) plus one of its own (amount_item_sd)."""
    by_topic = rng.normal(0.0, FUNNEL.amount_topic_sd, p.topics)
    return by_topic[cat.topic] + rng.normal(0.0, FUNNEL.amount_item_sd, len(cat.topic))


def _item_values(
    cat: Catalogue, p: GeneratorProfile, rng: np.random.Generator, i: Input, role: str, first_length: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(values, the key that orders them) per item: an amount (log-normal by topic and item;
    the key its log), a length (the catalogue's duration for the first length input, one of
    its own for any other), or for an attribute a feature reads as a number, a normal of
    its topic and of the item (the value a feature's distribution replaces)."""
    if role == "amount":
        median = FUNNEL.amount_median * (100 if i.name.endswith("_cents") else 1)
        log_value = np.log(median) + _topic_latent(cat, p, rng)
        value = np.exp(log_value)
        return (np.maximum(np.round(value), 1) if np.dtype(i.type).kind == "i" else value), log_value
    if role == "length_ms":
        value = cat.duration_ms if first_length else _durations(rng, len(cat.topic)).astype(np.int32)
        return value, value
    latent = _topic_latent(cat, p, rng)
    return latent, latent


def build_spec_world(spec: DatasetSpec, cat: Catalogue, p: GeneratorProfile, seed: int) -> SpecWorld:
    """The per-item values and effects of a spec's logs (docs/GENERATOR.md, "Other specs")."""
    rng = np.random.default_rng([seed, 0x5BEC])  # its own stream: the catalogue and users stay as they are
    task_bias = rng.normal(0.0, FUNNEL.task_bias_sd, (p.users, len(spec.tasks)))
    share = _impression_share(cat, p)
    roles = {i.name: input_role_in(spec, i) for i in spec.inputs}
    item_values: dict[str, np.ndarray] = {}
    row_shaped: dict[str, Feature] = {}
    amount_z = None
    for i in spec.inputs:
        role = roles[i.name]
        f = value_feature(spec, i.name, attribute=role == "attribute")
        if role not in ITEM_ROLES:
            if f is not None:
                row_shaped[i.name] = f
            continue
        if role == "attribute" and f is None:
            item_values[i.name] = _attribute_values(cat, rng, i, seed)
            continue
        first_length = not any(roles[j.name] == "length_ms" for j in spec.inputs[:spec.inputs.index(i)])
        value, key = _item_values(cat, p, rng, i, role, first_length)
        if role == "amount" and amount_z is None:
            amount_z = (key - key.mean()) / max(key.std(), 1e-9)
        integer = np.dtype(i.type).kind == "i"
        item_values[i.name] = value if f is None else feature_distribution(f, _share_quantiles(key, share), integer)
    row_ratios = []
    for a, b, f in _shaped_ratios(spec):
        if roles[a] in ITEM_ROLES and roles[b] in ITEM_ROLES:  # both per item: so is the ratio
            r = feature_distribution(f, _share_quantiles(_ratio(item_values[a], item_values[b]), share))
            item_values[a] = r * item_values[b]
        else:
            row_ratios.append((a, b, f))
    ratios = {d.name: d.ratio for d in spec.derived}
    effect = np.zeros(len(cat.topic))
    for f in spec.features_on("target"):  # a value known before the impression: an item's
        parts = ratios.get(f.source, (f.source,))
        if all(part in item_values for part in parts):
            values = [item_values[part].astype(np.float64) if f.kind == "numeric" else item_values[part]
                      for part in parts]
            effect += _feature_effect(rng, f, values[0] if len(values) == 1 else _ratio(*values))
    no_amount = np.zeros(len(cat.topic))
    return SpecWorld(spec, roles, item_values, no_amount if amount_z is None else amount_z, task_bias, effect,
                     row_shaped, row_ratios)


def _draw_funnel(
    rng: np.random.Generator, world: SpecWorld, user_global: np.ndarray, item: np.ndarray, logit: np.ndarray
) -> list[np.ndarray]:
    """The spec's tasks, each (N,) bool, in order: a funnel, task k only where task k-1."""
    n, offsets = len(logit), FUNNEL.offsets
    logit = logit + world.item_effect[item]
    reached = np.ones(n, dtype=bool)
    labels = []
    for k in range(len(world.spec.tasks)):
        offset = offsets[min(k, len(offsets) - 1)]
        step = logit if k == 0 else FUNNEL.step_slope * logit - FUNNEL.amount_weight * world.amount_z[item]
        reached = reached & (rng.random(n) < _sigmoid(step + offset + world.task_bias[user_global, k]))
        labels.append(reached)
    return labels


def _draw_engaged(rng: np.random.Generator, labels: list[np.ndarray]) -> np.ndarray:
    """(N,) int64 ms spent after engaging: log-normal per funnel step reached, 0 without the first."""
    steps = np.sum(labels, axis=0)
    n = len(steps)
    return (steps * rng.lognormal(np.log(FUNNEL.engaged_median_ms), 0.8, n)).astype(np.int64)


def _spec_inputs(
    rng: np.random.Generator,
    world: SpecWorld,
    item: np.ndarray,
    view: np.ndarray,
    engaged: np.ndarray,
    duration: np.ndarray,
    labels: list[np.ndarray],
) -> dict[str, np.ndarray]:
    """The spec's input columns for impressions of `item`; an optional input gets some nulls
    (masked) and some zeros, a required one neither. view and engaged are the times the
    event times follow: the first input of each role logs them, any other draws its own (two
    time inputs are never one draw, so a ratio of them varies)."""
    n = len(item)
    first = {"engaged_ms": engaged, "view_ms": view}
    raw: dict[str, np.ndarray] = {}
    for i in world.spec.inputs:
        role = world.roles[i.name]
        if i.name in world.item_values:
            raw[i.name] = world.item_values[i.name][item]
        elif role in first:
            raw[i.name] = first.pop(role)
        elif role == "view_ms":
            raw[i.name] = (duration * rng.uniform(0.1, 1.0, n)).astype(np.int64)
        else:
            raw[i.name] = _draw_engaged(rng, labels)
    values = dict(raw)
    for name, f in world.row_shaped.items():  # the role's order, the feature's distribution
        integer = np.dtype(world.spec.input(name).type).kind == "i"
        values[name] = feature_distribution(f, _row_quantiles(rng, raw[name]), integer)
    for a, b, f in world.row_ratios:
        values[a] = feature_distribution(f, _row_quantiles(rng, _ratio(raw[a], raw[b]))) * values[b]
    cols: dict[str, np.ndarray] = {}
    for i in world.spec.inputs:
        column = _cast(values[i.name], np.dtype(i.type))
        u = rng.random(n)  # drawn for required inputs too: adding `required` changes no other column
        if not i.required:
            column[(u >= FUNNEL.optional_null) & (u < FUNNEL.optional_null + FUNNEL.optional_zero)] = 0
            column = np.ma.masked_array(column, mask=u < FUNNEL.optional_null)
        cols[i.name] = column
    return cols


# ---------------------------------------------------------------- one chunk of one day
#
# generate_chunk draws everything from one Generator; the helpers below take it in turn, so
# the order in which generate_chunk calls them is part of the output (byte-identical files).
# Shapes: U users in the chunk, R requests, S sessions, N impressions.


@dataclass
class _Requests:
    """One chunk's requests and sessions, grouped by (local) user."""

    user: np.ndarray  # (R,) local user index
    new_session: np.ndarray  # (R,) bool: the request opens a session
    session: np.ndarray  # (R,) session index
    sess_user: np.ndarray  # (S,) local user index
    sess_topic: np.ndarray  # (S,) int32 main topic of the session's short-term interest
    sess_start: np.ndarray  # (S,) drawn start in ms after midnight, a user's sessions in time order


@dataclass
class _Impressions:
    request: np.ndarray  # (N,) request index, grouped by request
    req_offsets: np.ndarray  # (R+1,) impressions of request r are [req_offsets[r], req_offsets[r+1])
    position: np.ndarray  # (N,) int32
    user: np.ndarray  # (N,) local user index
    session: np.ndarray  # (N,) session index
    topic: np.ndarray  # (N,) int32
    item: np.ndarray  # (N,) catalogue index


def _main_topic_sampler(
    rng: np.random.Generator, users: Users, p: GeneratorProfile, lo: int, hi: int
) -> Callable[[np.ndarray], np.ndarray]:
    """A draw of one main topic per given local user, from the user's feed preferences."""
    affinity = users.main_affinity[lo:hi].astype(np.float64) * p.feed_temperature
    feed_probs = np.exp(affinity - affinity.max(axis=1, keepdims=True))
    user_topic_offsets = np.arange(hi - lo + 1) * p.main_topics
    user_topic_keys = _segment_keys(feed_probs.ravel(), user_topic_offsets)

    def main_topic_for(user_local: np.ndarray) -> np.ndarray:
        drawn = _draw_in_segments(user_topic_keys, user_topic_offsets, user_local, rng.random(len(user_local)))
        return (drawn - user_topic_offsets[user_local]).astype(np.int32)

    return main_topic_for


def _draw_requests(
    rng: np.random.Generator,
    users: Users,
    p: GeneratorProfile,
    lo: int,
    hi: int,
    main_topic_for: Callable[[np.ndarray], np.ndarray],
) -> _Requests:
    """How many requests each user makes today, cut into sessions with a topic and a start."""
    n_users = hi - lo
    n_req = rng.poisson(np.minimum(users.rate[lo:hi] * rng.gamma(p.day_shape, 1.0 / p.day_shape, n_users), p.max_requests_per_day))
    req_user = np.repeat(np.arange(n_users), n_req)  # local user index, grouped by user
    n_requests = len(req_user)
    new_session = rng.random(n_requests) < 1.0 / p.mean_session_requests
    new_session[_offsets(n_req)[:-1][n_req > 0]] = True
    req_session = np.cumsum(new_session) - 1
    sess_user = req_user[new_session]
    n_sessions = len(sess_user)

    sess_topic = main_topic_for(sess_user)
    evening = (rng.normal(20.5 * 3600, 2.5 * 3600, n_sessions) % 86_400) * 1000
    uniform = rng.uniform(0, DAY_MS, n_sessions)
    sess_start = np.where(rng.random(n_sessions) < p.evening_share, evening, uniform)
    sess_start = sess_start[np.lexsort((sess_start, sess_user))]  # sessions of a user in time order
    return _Requests(req_user, new_session, req_session, sess_user, sess_topic, sess_start)


def _draw_impressions(
    rng: np.random.Generator,
    cat: Catalogue,
    p: GeneratorProfile,
    req: _Requests,
    main_topic_for: Callable[[np.ndarray], np.ndarray],
) -> _Impressions:
    """Each request's impressions: where each comes from, its topic and its item."""
    n_requests = len(req.user)
    n_imp = rng.integers(p.impressions_min, p.impressions_max + 1, n_requests)
    req_offsets = _offsets(n_imp)
    imp_req = np.repeat(np.arange(n_requests), n_imp)
    n = len(imp_req)
    position = (np.arange(n) - req_offsets[imp_req]).astype(np.int32)
    imp_user = req.user[imp_req]
    imp_session = req.session[imp_req]
    source = np.searchsorted(np.cumsum([p.p_session, p.p_main, p.p_niche]), rng.random(n), side="right")
    topic = np.empty(n, dtype=np.int32)
    s_session, s_main, s_niche = (source == 0), (source == 1), (source == 2)
    topic[s_session] = req.sess_topic[imp_session[s_session]]
    topic[s_main] = main_topic_for(imp_user[s_main])
    topic[s_niche] = p.main_topics + rng.integers(0, p.niche_topics, int(s_niche.sum()))
    item = np.empty(n, dtype=np.int64)
    by_topic = source <= 2
    item[by_topic] = _draw_in_segments(cat.topic_keys, cat.topic_offsets, topic[by_topic], rng.random(int(by_topic.sum())))
    popular = ~by_topic  # global popularity: the topic follows from the item
    item[popular] = np.searchsorted(cat.popular_keys, rng.random(int(popular.sum())), side="right")
    topic[popular] = cat.topic[item[popular]]
    return _Impressions(imp_req, req_offsets, position, imp_user, imp_session, topic, item)


def _label_logit(
    cat: Catalogue,
    users: Users,
    p: GeneratorProfile,
    req: _Requests,
    imp: _Impressions,
    user_global: np.ndarray,
    duration: np.ndarray,
) -> np.ndarray:
    """(N,) logit of finishing each impression under the latent model (no draws)."""
    topic = imp.topic
    is_niche = topic >= p.main_topics
    main_eff = np.where(
        is_niche, 0.0, users.main_affinity[user_global, np.minimum(topic, p.main_topics - 1)]
    )
    loves = niche_loves(users, user_global, np.maximum(topic - p.main_topics, 0), p)
    niche_eff = np.where(is_niche, np.where(loves, p.niche_love, p.niche_dislike), 0.0)
    return (
        p.base_logit
        + cat.quality[imp.item]
        + users.bias[user_global]
        + p.w_main * main_eff
        + niche_eff
        + p.w_session * (topic == req.sess_topic[imp.session])
        - p.position_decay * imp.position
        - 0.3 * np.log(duration / 20_000)
    )


def _draw_labels(
    rng: np.random.Generator, users: Users, user_global: np.ndarray, logit: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(finish, skip, like, comment), each (N,) bool, in TASKS order."""
    n = len(logit)
    finish = rng.random(n) < _sigmoid(logit)
    skip = ~finish & (rng.random(n) < _sigmoid(-0.9 * logit - 0.6))
    like = rng.random(n) < _sigmoid(logit + users.like_bias[user_global] - 3.2) * np.where(finish, 1.0, 0.25)
    comment = rng.random(n) < _sigmoid(logit + users.comment_bias[user_global] - 5.0)
    return finish, skip, like, comment


def _draw_play(rng: np.random.Generator, duration: np.ndarray, finish: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """(N,) int64 watch time: a finish (sometimes replayed), a quick skip, or a partial watch."""
    n = len(duration)
    replay = np.where(rng.random(n) < 0.08, 1.0 + rng.random(n), 1.0)
    return np.where(
        finish,
        duration * replay,
        np.where(skip, np.minimum(duration, rng.uniform(300, 2500, n)), duration * rng.uniform(0.1, 0.9, n)),
    ).astype(np.int64)


def _schedule_sessions(
    sess_start: np.ndarray, sess_user: np.ndarray, busy: np.ndarray, sess_first_req: np.ndarray
) -> np.ndarray:
    """(S,) int64 session starts pushed back so a user's sessions never overlap.

    A session starts at its drawn time or when the user's previous session ends, whichever
    is later: start'_k = P_k + max_{j<=k} (start_j - P_j), P = the user's busy time before
    session k. The user offset makes one running max restart per user.
    """
    n_sessions = len(sess_user)
    sess_busy = np.add.reduceat(busy, sess_first_req) if n_sessions else np.zeros(0, np.int64)
    sess_first = np.concatenate([[True], sess_user[1:] != sess_user[:-1]]) if n_sessions else np.zeros(0, bool)
    before = _within_segment_cumsum(sess_busy, np.cumsum(sess_first) - 1, np.flatnonzero(sess_first)) - sess_busy
    user_offset = sess_user.astype(np.int64) * (1 << 45)
    return before + np.maximum.accumulate(sess_start.astype(np.int64) - before + user_offset) - user_offset


def _request_times(
    rng: np.random.Generator, req: _Requests, imp: _Impressions, play: np.ndarray, start_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(request_ts (R,), watch time done in the request up to each impression (N,), request duration (R,))."""
    n_requests = len(req.user)
    consumed = play + 400  # a swipe between videos
    first_imp = imp.req_offsets[:-1]
    done_in_request = _within_segment_cumsum(consumed, imp.request, first_imp)
    req_duration = np.add.reduceat(consumed, first_imp) if n_requests else np.zeros(0, np.int64)
    think = rng.uniform(1_000, 8_000, n_requests)
    sess_first_req = np.flatnonzero(req.new_session)
    busy = (req_duration + think).astype(np.int64)
    req_end = _within_segment_cumsum(busy, req.session, sess_first_req)
    sess_start = _schedule_sessions(req.sess_start, req.sess_user, busy, sess_first_req)
    request_ts = (start_ms + sess_start[req.session] + req_end - busy).astype(np.int64)
    return request_ts, done_in_request, req_duration


def _event_times(
    rng: np.random.Generator,
    p: GeneratorProfile,
    imp: _Impressions,
    request_ts: np.ndarray,
    done_in_request: np.ndarray,
    req_duration: np.ndarray,
) -> np.ndarray:
    """(N,) event_ts: the outcome is known, plus a logging delay; late requests upload as one batch."""
    imp_req = imp.request
    log_delay = rng.lognormal(np.log(p.log_delay_median_ms), 1.0, len(imp_req))
    event_ts = request_ts[imp_req] + done_in_request + log_delay.astype(np.int64)
    late = rng.random(len(request_ts)) < p.late_upload_prob
    late_delay = rng.lognormal(np.log(p.late_upload_median_ms), 1.5, len(request_ts)).astype(np.int64)
    late_at = request_ts + req_duration + late_delay
    return np.where(late[imp_req], late_at[imp_req], event_ts)  # one batch: equal event_ts


def generate_chunk(
    cat: Catalogue,
    users: Users,
    p: GeneratorProfile,
    seed: int,
    day_index: int,
    chunk: int,
    start_ms: int,
    world: "SpecWorld | None" = None,
) -> dict[str, np.ndarray]:
    """Clean impressions of users [chunk*users_per_chunk, ...) on one day, as numpy columns
    (a column with nulls as a numpy masked array). world: the spec-shaped logs (SpecWorld);
    None: the short-video logs of the default spec."""
    rng = np.random.default_rng([seed, day_index, chunk])  # the only source of randomness: keep call order
    lo = chunk * p.users_per_chunk
    hi = min(p.users, lo + p.users_per_chunk)
    main_topic_for = _main_topic_sampler(rng, users, p, lo, hi)
    req = _draw_requests(rng, users, p, lo, hi, main_topic_for)
    imp = _draw_impressions(rng, cat, p, req, main_topic_for)
    user_global = lo + imp.user
    duration = cat.duration_ms[imp.item].astype(np.float64)
    logit = _label_logit(cat, users, p, req, imp, user_global, duration)
    if world is None:
        labels = _draw_labels(rng, users, user_global, logit)
        play = _draw_play(rng, duration, labels[0], labels[1])
        spent = play
    else:
        labels = _draw_funnel(rng, world, user_global, imp.item, logit)
        play = _draw_play(rng, duration, labels[0], np.zeros(len(logit), dtype=bool))  # time on screen
        engaged = _draw_engaged(rng, labels)
        spent = play + engaged
    request_ts, done_in_request, req_duration = _request_times(rng, req, imp, spent, start_ms)
    event_ts = _event_times(rng, p, imp, request_ts, done_in_request, req_duration)

    # a request belongs to the day its request_ts falls in; sessions running past midnight stop
    keep = request_ts[imp.request] < start_ms + DAY_MS
    n = len(imp.request)
    event_key = (np.uint64(day_index) << np.uint64(40)) | (np.uint64(chunk) << np.uint64(26))
    request_key = event_key | imp.request.astype(np.uint64)
    cols = {
        "event_id": mix64(event_key | np.arange(n, dtype=np.uint64), seed * 7919 + 5),
        "request_id": mix64(request_key, seed * 7919 + 6),
        "user_id": users.user_id[user_global],
        "request_ts": request_ts[imp.request],
        "item_id": cat.item_id[imp.item],
        "author_id": cat.author_id[imp.item],
        "position": imp.position,
        "event_ts": event_ts,
    }
    if world is None:
        cols["play_ms"] = np.minimum(play, np.iinfo(np.int32).max).astype(np.int32)
        cols["duration_ms"] = duration.astype(np.int32)
        cols.update({t: v.astype(np.int8) for t, v in zip(TASKS, labels)})
    else:
        cols.update(_spec_inputs(rng, world, imp.item, play, engaged, duration, labels))
        cols.update({t: v.astype(np.int8) for t, v in zip(world.spec.tasks, labels)})
    order = np.argsort(event_ts[keep], kind="stable")  # logs arrive in event_ts order
    return {k: v[keep][order] for k, v in cols.items()}


# ---------------------------------------------------------------- dirt and output


def inject_dirt(
    cols: dict[str, np.ndarray],
    fraction: float,
    rng: np.random.Generator,
    contracts: Contracts = DEFAULT_CONTRACTS,
) -> tuple[pa.Table, dict[str, int]]:
    """Turn clean columns into a contract-1 table (the spec's raw log) with `fraction` of
    rows made dirty. A masked column's masked values are written as nulls.

    Kinds are split evenly over disjoint rows: duplicated event_ids (exact re-deliveries,
    appended), a missing required value, a label outside {0,1}, event_ts < request_ts.
    """
    raw_log, tasks = contracts.raw_log, contracts.tasks
    n = len(cols["event_id"])
    counts = {k: 0 for k in DIRTY_KINDS}
    masks = {name: np.ma.getmaskarray(cols[name]).copy() for name in raw_log.names}
    cols = {k: np.ma.getdata(v).copy() for k, v in cols.items()}
    n_dirty = min(n, int(round(fraction * n)))
    chosen = rng.permutation(n)[:n_dirty]
    kind_rows = {k: np.sort(chosen[i :: len(DIRTY_KINDS)]) for i, k in enumerate(DIRTY_KINDS)}
    required = raw_log.required_names
    rows = kind_rows["missing_required"]
    for r, c in zip(rows, rng.integers(0, len(required), len(rows))):
        masks[required[c]][r] = True
    rows = kind_rows["label_out_of_range"]
    for r, t, v in zip(rows, rng.integers(0, len(tasks), len(rows)), rng.choice([-1, 2, 3], len(rows))):
        cols[tasks[t]][r] = v
    rows = kind_rows["event_before_request"]
    cols["event_ts"][rows] = cols["request_ts"][rows] - rng.integers(1, 600_000, len(rows))
    for k in DIRTY_KINDS[1:]:
        counts[k] = len(kind_rows[k])

    dup = kind_rows["duplicate_event_id"]
    counts["duplicate_event_id"] = len(dup)
    arrow_schema = to_arrow(raw_log)
    arrays = []
    for f in arrow_schema:
        values, mask = cols[f.name], masks[f.name]
        if len(dup):
            values, mask = np.concatenate([values, values[dup]]), np.concatenate([mask, mask[dup]])
        if f.name in ("event_id", "request_id"):  # ids are decimal strings of distinct uint64s
            arr = pa.array(values, type=pa.uint64()).cast(pa.string())
            arrays.append(pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), arr) if mask.any() else arr)
        else:
            arrays.append(pa.array(values, type=f.type, mask=mask if mask.any() else None))
    return pa.Table.from_arrays(arrays, schema=arrow_schema), counts


def _percentiles(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {}
    qs = {"min": 0, "p50": 50, "p90": 90, "p99": 99, "max": 100}
    return {k: float(np.percentile(x, q)) for k, q in qs.items()}


def generate(
    out: Path,
    profile: GeneratorProfile,
    seed: int,
    start: dt.date,
    dirty: float = 0.0,
    progress: Callable[[str], None] | None = None,
    spec: DatasetSpec | Path | str = DEFAULT_SPEC,
) -> GenerateReport:
    """Write profile.days days of contract-1 Parquet under `out`, one ds partition per day,
    in the shape of `spec` (a DatasetSpec or its YAML file): the short-video logs for the
    default spec (and any spec with its raw log), the spec-shaped logs otherwise."""
    spec = resolve_spec(spec)
    contracts = contracts_of(spec)
    if not 0.0 <= dirty <= 0.5:
        raise LongseqError(f"--dirty must be a fraction in [0, 0.5], got {dirty}")
    if profile.users < 1 or profile.days < 1:
        raise LongseqError(f"need at least one user and one day, got users={profile.users} days={profile.days}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cat = build_catalogue(profile, seed)
    users = build_users(profile, seed)
    world = None if has_default_raw_log(spec) else build_spec_world(spec, cat, profile, seed)
    report = GenerateReport(
        out=str(out), profile=profile.name, seed=seed, start=start.isoformat(), days=profile.days,
        users=profile.users, dirty_fraction=dirty, spec=spec_summary(spec),
    )
    events_per_user = np.zeros(profile.users, dtype=np.int64)
    by_id = np.argsort(users.user_id)
    n_chunks = -(-profile.users // profile.users_per_chunk)
    for d in range(profile.days):
        t_day = time.perf_counter()
        day = start + dt.timedelta(days=d)
        start_ms = day_start_ms(day)
        writer, day_rows, day_requests = RawPartitionWriter(out, day, spec.raw_names), 0, 0
        for c in range(n_chunks):
            cols = generate_chunk(cat, users, profile, seed, d, c, start_ms, world)
            table, counts = inject_dirt(cols, dirty, np.random.default_rng([seed, d, c, 0xD1]), contracts)
            writer.write(table)
            for k, v in counts.items():
                report.dirty[k] += v
            index = by_id[np.searchsorted(users.user_id, cols["user_id"], sorter=by_id)]
            events_per_user += np.bincount(index, minlength=profile.users)
            day_rows += table.num_rows
            report.clean_rows += len(cols["event_id"])
            day_requests += len(np.unique(cols["request_id"]))
        writer.commit()
        report.rows += day_rows
        report.requests += day_requests
        report.per_day[day.isoformat()] = {"rows": day_rows, "requests": day_requests}
        if progress:
            secs = time.perf_counter() - t_day
            progress(f"ds={day.isoformat()}: {day_rows:,} rows, {day_requests:,} requests ({secs:.1f} s)")
    report.events_per_user = _percentiles(events_per_user)
    report.users_over_10k_events = int((events_per_user > 10_000).sum())
    report.seconds = round(time.perf_counter() - t0, 3)
    (out / REPORT_FILE).write_text(report.to_json())
    return report
