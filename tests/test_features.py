"""Feature functions shared by the ETL and the trainer, against independent references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
import torch

from longseq.features import ACTION_BITS, LengthSampler, NUM_TIME_BUCKETS, decode_actions, encode_actions, hash_ids, mix64
from longseq.features.time_buckets import time_delta_bucket
from longseq.schemas.contracts import TASKS


# ---------------------------------------------------------------- action flags


def test_action_bits_are_the_documented_ones():
    assert ACTION_BITS == {"finish": 1, "skip": 2, "like": 4, "comment": 8}


def test_encode_decode_all_label_combinations():
    combos = np.array(list(itertools.product([0, 1], repeat=len(TASKS))), dtype=np.int8)
    labels = {t: combos[:, i] for i, t in enumerate(TASKS)}
    flags = encode_actions(labels)
    expected = [sum(int(c) << i for i, c in enumerate(row)) for row in combos]  # independent: bit i = task i
    assert flags.tolist() == expected
    assert sorted(set(expected)) == list(range(16))
    back = decode_actions(flags)
    for t in TASKS:
        np.testing.assert_array_equal(back[t], labels[t])


def test_encode_works_on_polars_expressions_and_torch():
    df = pl.DataFrame({t: [1, 0, 1] for t in TASKS}).with_columns((1 - pl.col("skip")).alias("skip"))
    flags = df.select(encode_actions({t: pl.col(t) for t in TASKS}).alias("a"))["a"].to_list()
    assert flags == [1 + 4 + 8, 2, 1 + 4 + 8]
    t = encode_actions({t: torch.tensor([1, 0]) for t in TASKS})
    assert t.tolist() == [15, 0]


@pytest.mark.spark
def test_encode_works_on_spark_columns(spark):
    from pyspark.sql import functions as F

    df = spark.createDataFrame([(1, 0, 1, 0), (0, 1, 0, 1)], list(TASKS))
    got = df.select(encode_actions({t: F.col(t) for t in TASKS}).alias("a")).collect()
    assert [r.a for r in got] == [5, 10]


# ---------------------------------------------------------------- time buckets


def test_time_buckets_are_log_scale_and_clipped():
    delta_ms = np.array([0, 399, 500, 1000, 60_000, 3_600_000, 86_400_000, 10**15, -5])
    got = time_delta_bucket(delta_ms)
    ref = [min(NUM_TIME_BUCKETS - 1, int(math.floor(2 * math.log2(1 + max(d, 0) / 1000)))) for d in delta_ms]
    assert got.tolist() == ref
    assert got[0] == 0 and got[-1] == 0 and got[-2] == NUM_TIME_BUCKETS - 1
    dense = time_delta_bucket(np.arange(0, 10**8, 997))
    assert np.all(np.diff(dense) >= 0)  # monotone in the delay
    assert len(np.unique(dense)) > 30  # resolves seconds to days


def test_time_buckets_numpy_and_torch_agree():
    delta = np.random.default_rng(0).integers(0, 10**11, 1000)
    np.testing.assert_array_equal(time_delta_bucket(torch.from_numpy(delta)).numpy(), time_delta_bucket(delta))


# ---------------------------------------------------------------- hashing


def _splitmix_reference(x: int, salt: int) -> int:
    """splitmix64 finalizer in plain Python integers."""
    m = (1 << 64) - 1
    z = (x + salt * 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_mix64_matches_plain_python_reference():
    xs = [0, 1, 2, 12345, 2**63 - 1, 2**64 - 1]
    for salt in (0, 3, 2**40 + 7):
        got = mix64(np.array(xs, dtype=np.uint64), salt).tolist()
        assert got == [_splitmix_reference(x, salt) for x in xs]


def test_hash_ids_range_determinism_and_spread():
    ids = np.arange(-50_000, 150_000, dtype=np.int64)
    h = hash_ids(ids, vocab_size=1001, salt=1)
    assert h.dtype == np.int64 and h.min() >= 1 and h.max() <= 1000
    np.testing.assert_array_equal(h, hash_ids(ids, vocab_size=1001, salt=1))
    counts = np.bincount(h, minlength=1001)[1:]
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()
    assert (hash_ids(ids, 1001, salt=2) != h).mean() > 0.99
    ref = [1 + _splitmix_reference(int(i) & ((1 << 64) - 1), 1) % 1000 for i in ids[:100]]
    assert h[:100].tolist() == ref


def test_hash_ids_rejects_tiny_vocab():
    with pytest.raises(ValueError):
        hash_ids(np.array([1]), vocab_size=1)


# ---------------------------------------------------------------- length sampler


def test_lengths_are_multiples_of_8_within_bounds_and_deterministic():
    s = LengthSampler(min_len=100, max_len=10_000)
    x = s.sample(np.random.default_rng(3), 200_000)
    assert x.dtype == np.int64
    assert np.all(x % 8 == 0) and x.min() >= 104 and x.max() <= 10_000
    np.testing.assert_array_equal(x, s.sample(np.random.default_rng(3), 200_000))
    assert not np.array_equal(x, s.sample(np.random.default_rng(4), 200_000))


def test_lengths_are_u_shaped_with_the_expected_mean():
    s = LengthSampler()  # defaults: about 2k on average, within [256, 10000]
    x = s.sample(np.random.default_rng(0), 400_000)
    assert 1800 < s.mean < 2200
    assert abs(x.mean() - s.mean) < 0.02 * s.mean
    hist, _ = np.histogram(x, bins=10, range=(s.min_len, s.max_len))
    middle = hist[3:7].mean()
    assert hist[0] > 10 * middle and hist[-1] > 2 * middle  # mass piles up at both ends


def test_a_share_of_long_windows_mixes_with_the_short_ones_and_leaves_other_draws_alone():
    short = LengthSampler(alpha=1.0, beta=1.0, max_len=2_000)
    mixed = LengthSampler(alpha=1.0, beta=1.0, max_len=2_000, long_share=0.1, long_len=10_000)
    x = mixed.sample(np.random.default_rng(0), 200_000)
    assert abs((x == 10_000).mean() - 0.1) < 0.005
    assert x[x != 10_000].max() <= 2_000 and abs(x.mean() - mixed.mean) < 0.01 * mixed.mean
    base = short.sample(np.random.default_rng(0), 1_000)
    np.testing.assert_array_equal(base, LengthSampler(alpha=1.0, beta=1.0, max_len=2_000, long_share=0.0)
                                  .sample(np.random.default_rng(0), 1_000))
    y = mixed.sample(np.random.default_rng(0), 1_000)
    np.testing.assert_array_equal(y[y != 10_000], base[y != 10_000]), "the short windows are the Beta's own draws"


@pytest.mark.parametrize(
    "kwargs", [dict(min_len=0), dict(min_len=500, max_len=100), dict(alpha=0), dict(multiple=0), dict(min_len=1, max_len=7),
               dict(long_share=1.5), dict(long_share=-0.1), dict(long_share=0.1, long_len=0)]
)
def test_length_sampler_rejects_bad_config(kwargs):
    with pytest.raises(ValueError):
        LengthSampler(**kwargs)


def test_hash_ids_gives_the_same_buckets_in_torch_and_numpy():
    import torch

    from longseq.features.hashing import hash_ids

    ids = np.random.default_rng(0).integers(-(2**63), 2**63 - 1, 20_000, dtype=np.int64)
    for vocab, salt in ((2, 0), (1_000, 3), (2**20, 0), (2**31 + 11, 7)):
        expected = hash_ids(ids, vocab, salt)
        assert np.array_equal(hash_ids(torch.from_numpy(ids), vocab, salt).numpy(), expected)
        assert expected.min() >= 1 and expected.max() < vocab
