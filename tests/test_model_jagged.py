"""Attention per length bucket (the CPU's path) computes what the batch padded to its longest
history computes (the padded kernel as on other devices): logits and gradients, on random
jagged batches with empty, one-event and long histories and several targets per request."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longseq.reader.testing import random_batch
from longseq.trainer import model as model_module
from longseq.trainer.model import Layout, length_buckets, loss_fn, make_model
from longseq.trainer.model_config import EMBEDDING_MATCH, PRESETS, ModelConfig

OPTIONS = {"paper": {}, "embedding-match": EMBEDDING_MATCH, "id-match": {"match_prior": 1.0},
           "no-null-slot": {"null_slot": False}, "qk-norm+length-scaled": {"qk_norm": 10.0, "length_scaled": True}}


def jagged_batch(seed: int):
    """Histories of 0, 1 and up to 300 events in random order, 1-5 targets each, some events
    sharing their request's target ids (so that the match priors are not all zero)."""
    g = np.random.default_rng(seed)
    hist = [0, 1, 0, 1, *g.integers(0, 300, 8).tolist()]
    g.shuffle(hist)
    batch = random_batch(hist, g.integers(1, 6, len(hist)).tolist(), seed=seed)
    h, t = batch.history.values, batch.targets.values
    for b in range(batch.num_requests):
        start, end = batch.history.offsets[b:b + 2].tolist()
        if end - start > 2:
            first = int(batch.targets.offsets[b])
            h["item_id"][start + 1], h["author_id"][end - 1] = t["item_id"][first], t["author_id"][first]
    return batch


def logits_and_grads(m, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    m.zero_grad(set_to_none=True)
    logits = m(batch)
    loss_fn(logits, batch).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch, options", [("stca", o) for o in OPTIONS.values()] + [("din", {}), ("transformer", {})],
                         ids=[*OPTIONS, "din", "transformer"])
@pytest.mark.parametrize("seed", [0, 1])
def test_length_buckets_give_the_padded_kernels_logits_and_gradients(arch, options, seed, monkeypatch):
    monkeypatch.setattr(model_module, "BUCKET_KEYS", 8)  # cheap buckets: these short histories split
    batch = jagged_batch(seed)
    torch.manual_seed(seed)
    m = make_model(ModelConfig(**{**PRESETS["tiny"].__dict__, "arch": arch, **options})).double()
    with torch.no_grad():  # weights far from their small init, so that attention weights show in the logits
        for p in m.parameters():
            p.normal_(0.0, 0.3)
    layout = Layout.of(batch)
    assert len(layout.buckets) > 2, "the batch splits into several buckets"
    assert {b.full for b in layout.buckets} == {True, False}, "buckets with padding, and without (no mask)"
    padded_keys = sum(b.B * b.L for b in layout.buckets)
    assert padded_keys < batch.num_requests * batch.history.max_length
    bucketed, bucketed_grads = logits_and_grads(m, batch)
    m.length_buckets = False  # the whole batch padded to its longest history
    assert len(m.layout(batch).buckets) == 1
    padded, padded_grads = logits_and_grads(m, batch)
    torch.testing.assert_close(bucketed, padded, rtol=1e-9, atol=1e-9)
    assert bucketed_grads.keys() == padded_grads.keys() and len(bucketed_grads) > 10
    for name, grad in padded_grads.items():
        torch.testing.assert_close(bucketed_grads[name], grad, rtol=1e-9, atol=1e-9, msg=name)


def test_length_buckets_cover_each_request_once_and_pad_less():
    g = np.random.default_rng(0)
    lengths = np.concatenate([[0, 1, 10_000], g.integers(256, 10_000, 29)])
    groups = length_buckets(lengths, fixed=1024)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    longest = [lengths[grp].max() for grp in groups]
    assert longest == sorted(longest), "buckets run from short to long"
    padded = sum(len(grp) * (1 + lengths[grp].max()) for grp in groups)
    assert padded < 1.3 * (lengths + 1).sum() < len(lengths) * 10_001
    assert len(length_buckets(lengths, fixed=10**9)) == 1, "a bucket costing more than any padding: one"
