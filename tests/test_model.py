"""The STCA model and its baselines: request level batching is exact, requests do not leak
into each other, empty and 10k-event histories work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longseq.reader.batch import Jagged, RequestBatch
from longseq.reader.testing import pointwise, random_batch
from longseq.trainer.model import history_chunks, loss_fn, make_model, num_parameters, RankingModel
from longseq.trainer.model_config import ARCHS, EXTENSIONS, PRESETS, ModelConfig

def make_batch(hist_lengths: list[int], tgt_lengths: list[int], seed: int = 0) -> RequestBatch:
    return random_batch(hist_lengths, tgt_lengths, seed)


def model(arch: str, seed: int = 0, **options) -> RankingModel:
    torch.manual_seed(seed)
    return make_model(ModelConfig(**{**PRESETS["tiny"].__dict__, "arch": arch, **options})).double()


# the ablation switches (ModelConfig), each away from the default
ABLATIONS = [{"ffn": "mlp"}, {"time_delta": False}, {"query_fusion": False}, {"null_slot": False}, EXTENSIONS,
             {"match_prior": 1.0, "match_by": "embedding"}, {"hashes": 2}, {"qk_norm": 10.0}]


@pytest.mark.parametrize("arch, options", [(a, {}) for a in ARCHS] + [("stca", o) for o in ABLATIONS],
                         ids=[*ARCHS, *("stca-" + "-".join(f"{k}={v}" for k, v in o.items()) for o in ABLATIONS)])
def test_request_level_batching_equals_pointwise_forward_and_gradients(arch, options):
    batch = make_batch([37, 0, 5, 120], [3, 2, 1, 8])
    m = model(arch, **options)
    rlb_loss = loss_fn(m(batch), batch)
    rlb_loss.backward()
    rlb_grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad()
    flat = pointwise(batch)
    assert flat.num_requests == batch.num_targets and flat.num_history_tokens == 37 * 3 + 5 + 120 * 8
    pw_logits = m(flat)
    torch.testing.assert_close(m(batch), pw_logits)
    loss_fn(pw_logits, flat).backward()
    assert rlb_grads
    for name, p in m.named_parameters():
        if name in rlb_grads:
            torch.testing.assert_close(p.grad, rlb_grads[name], msg=name)


def test_history_chunks_end_at_requests():
    assert history_chunks([37, 0, 5, 120, 64, 1], tokens=40) == ([3, 1, 1, 1], [42, 120, 64, 1])
    assert history_chunks([0, 0], tokens=40) == ([2], [0]) and history_chunks([], tokens=40) == ([], [])


@pytest.mark.parametrize("options", [{}, {"match_prior": 1.0, "match_by": "embedding"}], ids=["paper", "embedding-match"])
def test_the_history_path_in_chunks_equals_it_whole(options):
    """On the CPU each layer's history path and K/V projection run chunk by chunk
    (chunk_bytes); chunks ending at request boundaries give the whole batch's logits and
    gradients."""
    batch = make_batch([37, 0, 5, 120, 64, 1], [3, 2, 1, 8, 2, 1])
    results = []
    for events, chunks in ((0, 1), (40, 4)):  # 0: the whole batch
        m = model("stca", **options)
        m.chunk_bytes = events * 4 * m.cfg.ffn_mult * m.cfg.dim  # chunks of at least 40 events
        assert len(m.layout(batch).chunks[0]) == chunks
        logits = m(batch)
        loss_fn(logits, batch).backward()
        results.append((logits, {n: p.grad for n, p in m.named_parameters() if p.grad is not None}))
    (whole, whole_grads), (chunked, chunked_grads) = results
    torch.testing.assert_close(chunked, whole)
    assert chunked_grads.keys() == whole_grads.keys()
    for name, grad in whole_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, msg=name)


def stack(batches: list[RequestBatch]) -> RequestBatch:
    def join(sides: list[Jagged]) -> Jagged:
        lengths = torch.cat([j.lengths() for j in sides])
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        return Jagged(offsets, {k: torch.cat([j.values[k] for j in sides]) for k in sides[0].values})

    return RequestBatch(np.concatenate([b.request_id for b in batches]), torch.cat([b.user_id for b in batches]),
                        torch.cat([b.request_ts for b in batches]), join([b.history for b in batches]),
                        join([b.targets for b in batches]))


@pytest.mark.parametrize("arch", ARCHS)
def test_a_request_sees_only_its_own_history(arch):
    """Changing one request's history (values and length) leaves the others' scores alone."""
    r0, r1, r1_long, r2 = make_batch([30], [2], 1), make_batch([12], [3], 2), make_batch([400], [3], 3), make_batch([0], [1], 4)
    r1_long.targets = r1.targets
    m = model(arch)
    a, b = m(stack([r0, r1, r2])), m(stack([r0, r1_long, r2]))
    torch.testing.assert_close(a[:2], b[:2])  # request 0's targets
    torch.testing.assert_close(a[-1:], b[-1:])  # request 2's target (empty history)
    if arch != "none":
        assert not torch.allclose(a[2:5], b[2:5]), "request 1's own history matters"


@pytest.mark.parametrize("arch", ["stca", "din", "mean"])
def test_scores_a_10k_history_trained_or_not(arch):
    batch = make_batch([10_000, 0], [16, 1])
    with torch.no_grad():
        logits = model(arch).float()(batch)
    assert logits.shape == (17, 4) and torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_scoring_without_gradients_gives_the_training_forwards_numbers(arch):
    """Without autograd the feed-forward blocks work in place (SwiGLU.forward): bit for bit the
    same logits as the forward that trains."""
    batch, m = make_batch([40, 0, 7], [3, 1, 2]), model(arch).float()
    with torch.no_grad():
        scored = m(batch)
    assert torch.equal(scored, m(batch).detach())


def test_no_position_table_ties_the_model_to_a_length():
    m = make_model(PRESETS["tiny"])
    sizes = {s for p in m.parameters() for s in p.shape}
    assert not sizes & {512, 1_000, 2_000, 10_000}, "no parameter is sized by a history length"


def test_each_ablation_switch_removes_what_it_names():
    batch = make_batch([20, 0, 7], [2, 3, 1], seed=3)
    names = lambda m: {n for n, _ in m.named_parameters()}  # noqa: E731
    full = model("stca")
    assert not names(model("stca", ffn="mlp")) & {n for n in names(full) if n.endswith(".w3.weight")}, "no gate"
    assert not any(n.startswith("fuse") for n in names(model("stca", query_fusion=False)))
    assert "embed.delta.weight" not in names(model("stca", time_delta=False))
    no_delta = model("stca", time_delta=False)
    moved = make_batch([20, 0, 7], [2, 3, 1], seed=3)
    moved.history.values["event_ts"] = moved.history["event_ts"] - 10**9  # every event much older
    torch.testing.assert_close(no_delta(batch), no_delta(moved))
    assert not torch.allclose(full(batch), full(moved)), "with the feature, event times matter"
    no_null = model("stca", null_slot=False)
    assert not any("null_kv" in n for n in names(no_null))
    from longseq.trainer.model import Layout

    layout = Layout.of(batch)
    out = no_null.layers[0].attn(torch.randn(batch.num_targets, 32, dtype=torch.float64),
                                 torch.randn(batch.num_history_tokens, 32, dtype=torch.float64), layout)
    torch.testing.assert_close(out[2:5], torch.zeros(3, 32, dtype=torch.float64))  # an empty history: zero summary
    assert torch.isfinite(no_null(batch)).all()
    with pytest.raises(ValueError, match="unknown ffn"):
        ModelConfig(ffn="relu")


def test_presets_have_the_paper_size():
    paper = PRESETS["paper"]
    assert (paper.layers, paper.heads, paper.head_dim, paper.dim) == (4, 16, 64, 1024)
    assert num_parameters(make_model(PRESETS["tiny"])) < num_parameters(make_model(PRESETS["small"]))
    with pytest.raises(ValueError, match="unknown arch"):
        ModelConfig(arch="hstu")


def train_finish_probe(make, cfg: dict, steps: int = 150) -> RankingModel:
    """Train the tiny preset (changed by cfg) on the finish label of batches make(step)."""
    torch.manual_seed(0)
    m = make_model(ModelConfig(**{**PRESETS["tiny"].__dict__, **cfg}))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for step in range(steps):
        b = make(step)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m(b)[:, 0], b.targets["finish"].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m


def finish_auc(m: RankingModel, b: RequestBatch) -> float:
    from longseq.trainer.metrics import auc

    with torch.no_grad():
        return auc(b.targets["finish"].numpy(), m(b)[:, 0].numpy())


@pytest.mark.slow
def test_stca_learns_a_rule_that_needs_the_history():
    """A target is finished iff its author appears among the request's finished history
    events (anywhere in 200); every author is as often positive as negative, so only the
    history tells. STCA with longseq's extensions must learn to match target and history
    (the skill the generated data rewards); the no-history baseline cannot."""
    g = np.random.default_rng(0)

    def batch(seed: int) -> RequestBatch:
        b = random_batch([200] * 16, [8] * 16, seed)
        b.history.values["author_id"] = b.history["author_id"] % 1_000
        finished = (b.history["action"] & 1).bool()
        for i in range(16):
            h = slice(int(b.history.offsets[i]), int(b.history.offsets[i + 1]))
            t = slice(int(b.targets.offsets[i]), int(b.targets.offsets[i + 1]))
            liked = sorted(set(b.history["author_id"][h][finished[h]].tolist()))
            others = sorted(set(range(1_000)) - set(liked))
            labels = g.integers(0, 2, 8)
            b.targets.values["author_id"][t] = torch.tensor([g.choice(liked) if y else g.choice(others) for y in labels])
            b.targets.values["finish"][t] = torch.tensor(labels, dtype=torch.int8)
        return b

    results = {arch: finish_auc(train_finish_probe(batch, {"arch": arch, **EXTENSIONS}), batch(10_000))
               for arch in ("stca", "none")}
    assert results["stca"] > 0.85 and results["none"] < 0.6, results


def needle_batch(length: int, seed: int, requests: int = 16, targets: int = 8) -> RequestBatch:
    """Each target's author appears exactly once in its request's `length` events, finished
    iff the target is; every other event has an author no target has."""
    g = np.random.default_rng(seed)
    b = random_batch([length] * requests, [targets] * requests, seed)
    b.history.values["author_id"] = torch.tensor(g.integers(10**6, 10**9, requests * length))
    labels = torch.tensor(g.integers(0, 2, requests * targets), dtype=torch.int8)
    authors = torch.arange(requests * targets) + 1 + seed * 1_000
    slots = torch.arange(requests).repeat_interleave(targets) * length + torch.tensor(
        np.concatenate([g.choice(length, targets, replace=False) for _ in range(requests)]))
    b.history.values["author_id"][slots] = authors
    b.history.values["action"][slots] = (b.history["action"][slots] & ~1) | labels.int()
    b.targets.values["author_id"] = authors
    b.targets.values["finish"] = labels
    return b


@pytest.mark.slow
def test_one_needle_is_found_at_any_length():
    """One relevant event among 2,000, trained at 2k and scored at 10k: with the extensions
    attention does not fade with length (the log n scaled prior, docs/TRAINER.md); without
    the prior the model stays at chance."""
    stca = train_finish_probe(lambda s: needle_batch(2_000, s), EXTENSIONS, steps=100)
    assert finish_auc(stca, needle_batch(2_000, 10**6)) > 0.95
    assert finish_auc(stca, needle_batch(10_000, 10**6, requests=4)) > 0.95
    plain = train_finish_probe(lambda s: needle_batch(2_000, s), {**EXTENSIONS, "match_prior": None}, steps=100)
    assert finish_auc(plain, needle_batch(2_000, 10**6)) < 0.65


def test_the_default_model_is_the_papers():
    """No extension is on unless asked for: plain softmax attention, no id channel."""
    cfg = ModelConfig()
    assert cfg.length_scaled is False and cfg.match_prior is None
    assert all(getattr(p, k) == getattr(cfg, k) for p in PRESETS.values() for k in EXTENSIONS)
    names = {n for n, _ in make_model(PRESETS["tiny"]).named_parameters()}
    assert not any("length_scale" in n or "match_weight" in n for n in names)


@pytest.mark.parametrize("options", [{}, EXTENSIONS], ids=["paper", "extensions"])
def test_target_attention_equals_a_per_target_loop(options):
    """The batched attention (padding, null slot, and with the extensions log n scaling and
    the per-head id-match prior) against the formula written out one target and one head
    at a time."""
    import math

    import dataclasses

    from longseq.trainer.model import Layout, PaddedTargetAttention, match_log_n

    batch = make_batch([9, 0, 40], [2, 3, 4], seed=5)
    h, t = batch.history.values, batch.targets.values
    h["item_id"][[3, 45]] = t["item_id"][[0, 7]]  # request 0's target 0 and request 2's target 2 match by item
    h["author_id"][[4, 5, 20]] = t["author_id"][[1, 1, 6]]  # and by author, twice for one target
    cfg = ModelConfig(**{**PRESETS["tiny"].__dict__, **options})
    torch.manual_seed(0)
    attn = PaddedTargetAttention(cfg).double()
    with torch.no_grad():
        attn.null_kv.normal_()
        if cfg.length_scaled:
            attn.length_scale.uniform_(0.1, 0.5)
        if cfg.match_prior is not None:
            attn.match_weight.uniform_(-1.0, 3.0)
    D, H, K = cfg.dim, cfg.heads, cfg.head_dim
    q, x = torch.randn(batch.num_targets, D, dtype=torch.float64), torch.randn(batch.num_history_tokens, D, dtype=torch.float64)
    layout = Layout.of(batch)
    layout = dataclasses.replace(layout, match_log_n=match_log_n(batch, layout))
    got = attn(q, x, layout)

    hist_off, tgt_off = batch.history.offsets.tolist(), batch.targets.offsets.tolist()
    rows = []
    for b in range(batch.num_requests):
        hs, he = hist_off[b], hist_off[b + 1]
        log_n = math.log(he - hs + 1)
        for j in range(tgt_off[b], tgt_off[b + 1]):
            heads = []
            for head in range(H):
                cols = slice(head * K, (head + 1) * K)
                qh = attn.wq(q[j])[cols]
                keys = torch.cat([attn.null_kv[0, head][None], attn.wk(x[hs:he])[:, cols]])
                values = torch.cat([attn.null_kv[1, head][None], attn.wv(x[hs:he])[:, cols]])
                scale = log_n * attn.length_scale[head] if cfg.length_scaled else 1.0
                logits = scale * (keys @ qh) / math.sqrt(K)
                for l in range(hs, he) if cfg.match_prior is not None else ():
                    same_item, same_author = bool(h["item_id"][l] == t["item_id"][j]), bool(h["author_id"][l] == t["author_id"][j])
                    logits[1 + l - hs] += log_n * (attn.match_weight[0, head] * same_item + attn.match_weight[1, head] * same_author)
                heads.append(torch.softmax(logits, 0) @ values)
            rows.append(attn.wo(torch.cat(heads)))
    torch.testing.assert_close(got, torch.stack(rows))


def test_embedding_match_prior_is_the_cosine_of_id_embeddings():
    """match_by="embedding": log(n) * cos(target, event) per side, written out pair by pair;
    with ids equal it is log(n), as the id-match prior's."""
    import math

    from longseq.trainer.model import Layout, similarity_log_n

    batch = make_batch([6, 0, 11], [2, 1, 3], seed=7)
    h, t = batch.history.values, batch.targets.values
    h["item_id"][2], h["author_id"][8] = t["item_id"][0], t["author_id"][4]
    m = model("stca", match_prior=1.0, match_by="embedding", hashes=2)
    layout = Layout.of(batch, bucketed=False)  # one bucket: the whole batch padded
    (got,) = similarity_log_n(m.embed, batch, layout)  # [B, 2, M, 1+L]
    assert got.shape == (3, 2, 3, 12)
    hist_off, tgt_off = batch.history.offsets.tolist(), batch.targets.offsets.tolist()
    want = torch.zeros_like(got)
    for b in range(batch.num_requests):
        hs, he = hist_off[b], hist_off[b + 1]
        for j in range(tgt_off[b], tgt_off[b + 1]):
            for l in range(hs, he):
                for side in range(2):
                    tv = m.embed.id_vectors(t["item_id"][j:j + 1], t["author_id"][j:j + 1])[side][0]
                    hv = m.embed.id_vectors(h["item_id"][l:l + 1], h["author_id"][l:l + 1])[side][0]
                    want[b, side, j - tgt_off[b], 1 + l - hs] = math.log(he - hs + 1) * torch.cosine_similarity(tv, hv, 0)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got[0, 0, 0, 3], torch.tensor(math.log(7), dtype=got.dtype))  # the same item
    got.sum().backward()
    assert m.embed.item.weight.grad.abs().sum() > 0, "the similarity is learned: gradients reach the embeddings"


def test_hash_embeddings_keep_colliding_ids_apart():
    """With one hash two ids can share their row; with two they share all rows only if both
    hashes collide."""
    from longseq.features.hashing import hash_ids

    ids = torch.arange(1, 20_001)
    one = hash_ids(ids, 1 << 12, salt=1)
    both = torch.stack([one, hash_ids(ids, 1 << 12, salt=3)], 1)
    assert len(torch.unique(one)) < 5_000 and len(torch.unique(both, dim=0)) > 19_900
    m = model("stca", hashes=2)
    shared = int(torch.nonzero(one == one[0]).flatten()[1])  # an id on id 1's row under the first hash
    a, b = m.embed.ids(ids[:1], ids[:1]), m.embed.ids(ids[shared:shared + 1], ids[:1])
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("arch,options", [
    ("stca", {}), ("stca", {"null_slot": False}), ("stca", {"length_scaled": True}), ("stca", {"qk_norm": 10.0}),
    ("stca", {"match_prior": 1.0}), ("din", {"match_prior": 1.0, "null_slot": False}), ("transformer", {})])
def test_the_flex_kernel_equals_the_padded_one(arch, options):
    """Jagged FlexAttention (block mask from the offsets, id-match prior as a score_mod)
    against the padded SDPA reference, on requests with empty, short and long histories.
    Forward only: FlexAttention has no CPU backward (tests/test_gpu.py covers gradients)."""
    import warnings

    torch.manual_seed(0)
    reference = make_model(ModelConfig(**{**PRESETS["tiny"].__dict__, "arch": arch, **options})).double().eval()
    with torch.no_grad():  # weights far from their small init, so that attention weights show in the logits
        for p in reference.parameters():
            p.normal_(0.0, 0.5)
    flex = make_model(reference.cfg, kernel="flex").double().eval()
    flex.load_state_dict(reference.state_dict())
    batch = make_batch([0, 3, 200, 17, 130], [2, 1, 4, 3, 5], seed=1)
    batch.history.values["item_id"][:40] = batch.targets["item_id"][5]  # some events match a target
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager FlexAttention warns that it is unfused
        torch.testing.assert_close(flex(batch), reference(batch), rtol=1e-9, atol=1e-9)


def test_the_flex_kernel_refuses_the_embedding_match_prior():
    with pytest.raises(ValueError, match="padded kernel"):
        make_model(ModelConfig(**{**PRESETS["tiny"].__dict__, "match_prior": 1.0, "match_by": "embedding"}), kernel="flex")
