"""Batches made up for tests and benchmarks: `random_batch` (a batch of a given shape with
random values, when real data is beside the point) and `pointwise` (each target as its own
request: the layout request level batching replaces, as its reference).
"""

from __future__ import annotations

import numpy as np
import torch

from longseq.reader.batch import Jagged, RequestBatch
from longseq.schemas.contracts import DEFAULT_SPEC
from longseq.schemas.spec import DatasetSpec, Feature


def pointwise(batch: RequestBatch) -> RequestBatch:
    """Each target as its own request with its own copy of the history: what a pointwise
    trainer feeds. The reference for request level batching, and the cost it saves."""
    req = torch.repeat_interleave(torch.arange(batch.num_requests), batch.targets.lengths())  # [T]
    h_start, h_len = batch.history.offsets[:-1][req], batch.history.lengths()[req]
    offsets = torch.zeros(len(req) + 1, dtype=torch.int64)
    torch.cumsum(h_len, 0, out=offsets[1:])
    positions = torch.repeat_interleave(h_start - offsets[:-1], h_len) + torch.arange(int(offsets[-1]))
    return RequestBatch(
        request_id=batch.request_id[req.numpy()],
        user_id=batch.user_id[req],
        request_ts=batch.request_ts[req],
        history=Jagged(offsets, {k: v[positions] for k, v in batch.history.values.items()}),
        targets=Jagged(torch.arange(len(req) + 1), dict(batch.targets.values)),
        tasks=batch.tasks,
    )


def random_batch(hist_lengths: list[int], tgt_lengths: list[int], seed: int = 0,
                 request_ts: int = 1_767_225_600_000, spec: DatasetSpec = DEFAULT_SPEC) -> RequestBatch:
    """A batch of random requests of `spec` with these history and target counts: for tests
    and benchmarks that need a given shape rather than real data."""
    g = np.random.default_rng(seed)
    B, N, T = len(hist_lengths), int(sum(hist_lengths)), int(sum(tgt_lengths))
    tasks = spec.tasks

    def offsets(lengths: list[int]) -> torch.Tensor:
        return torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int64)

    ts = torch.tensor(request_ts + g.integers(0, 86_400_000, B), dtype=torch.int64)
    seg = torch.repeat_interleave(torch.arange(B), torch.tensor(hist_lengths, dtype=torch.int64))
    history = {
        "item_id": torch.tensor(g.integers(0, 2**62, N)), "author_id": torch.tensor(g.integers(0, 5_000, N)),
        "event_ts": ts[seg] - torch.tensor(g.integers(1, 10**9, N)),
        "action": torch.tensor(g.integers(0, 1 << len(tasks), N), dtype=torch.int32),
    }
    ids = {"item_id": torch.tensor(g.integers(0, 2**62, T)), "author_id": torch.tensor(g.integers(0, 5_000, T))}
    labels = {t: torch.tensor(g.integers(0, 2, T), dtype=torch.int8) for t in tasks}
    # features drawn last: a spec without any draws what it drew before specs existed
    history.update({f.name: random_feature_values(f, N, g) for f in spec.features_on("history")})
    targets = {**ids, **{f.name: random_feature_values(f, T, g) for f in spec.features_on("target")}, **labels}
    return RequestBatch(np.array([f"r{i}" for i in range(B)]), torch.arange(B, dtype=torch.int64), ts,
                        Jagged(offsets(hist_lengths), history), Jagged(offsets(tgt_lengths), targets), tasks)


def random_feature_values(f: Feature, n: int, g: np.random.Generator) -> torch.Tensor:
    """n values of a feature as records store them: categorical ids (int64, a few hundred
    distinct, so they repeat); bucketized numbers in every bucket alike; normalized ones
    around their mean; log ones non-negative and skewed, as ratios and durations are."""
    if f.kind == "categorical":
        return torch.tensor(g.integers(0, 500, n), dtype=torch.int64)
    if f.transform == "bucketize":  # a bucket uniformly, then a value within it
        low, high = f.boundaries[0], f.boundaries[-1]
        margin = max(high - low, 1.0) / 4
        edges = np.array([0.0 if low > 0 else low - margin, *f.boundaries, high + margin])
        bucket = g.integers(0, len(edges) - 1, n)
        values = g.uniform(edges[bucket], edges[bucket + 1])
    elif f.transform == "normalize":
        values = g.normal(f.mean, f.std, n)
    else:
        values = g.exponential(1.0, n)
    return torch.tensor(values, dtype=torch.float32)
