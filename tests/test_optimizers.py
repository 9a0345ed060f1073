"""The embedding optimizer against references written out by hand: row-wise Adagrad on
sparse gradients, and gradient clipping that takes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longseq.schemas.errors import LongseqError
from longseq.reader.testing import random_batch
from longseq.trainer.model import loss_fn, make_model
from longseq.trainer.model_config import PRESETS
from longseq.trainer.optimizers import RowWiseAdagrad, TrainOptimizer, clip_gradients, make_optimizer


def test_rowwise_adagrad_updates_the_rows_looked_up_as_a_loop_over_rows_does():
    torch.manual_seed(0)
    table = torch.nn.Embedding(6, 3, sparse=True)
    w = table.weight.detach().double().numpy().copy()
    acc = np.zeros(6)
    opt = RowWiseAdagrad(table.parameters(), lr=0.1, eps=1e-8)
    for ids in ([1, 1, 4], [4, 2], [0, 1, 1, 1]):  # a row looked up more than once sums its gradients
        target = torch.arange(len(ids) * 3, dtype=torch.float32).view(len(ids), 3) / 10
        loss = ((table(torch.tensor(ids)) - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        grad = np.zeros_like(w)
        for i, r in enumerate(ids):  # d/dw of sum (w_r - t_i)^2
            grad[r] += 2 * (w[r] - target[i].double().numpy())
        for r in sorted(set(ids)):
            acc[r] += (grad[r] ** 2).mean()
            w[r] -= 0.1 * grad[r] / (np.sqrt(acc[r]) + 1e-8)
        opt.step()
        np.testing.assert_allclose(table.weight.detach().double().numpy(), w, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    untouched = torch.nn.Embedding(6, 3).weight.detach()[[3, 5]]
    assert torch.equal(table.weight.detach()[[3, 5]], untouched), "rows never looked up never move"


def test_clipping_sparse_gradients_equals_clipping_their_dense_form():
    torch.manual_seed(1)
    dense_model = torch.nn.Sequential(torch.nn.Embedding(8, 4), torch.nn.Linear(4, 1))
    sparse_model = torch.nn.Sequential(torch.nn.Embedding(8, 4, sparse=True), torch.nn.Linear(4, 1))
    sparse_model.load_state_dict(dense_model.state_dict())
    ids = torch.tensor([3, 3, 5, 0])
    for model in (dense_model, sparse_model):
        (model(ids) ** 2).sum().mul(10).backward()
    reference = torch.nn.utils.clip_grad_norm_(dense_model.parameters(), 0.5)
    total = clip_gradients(sparse_model.parameters(), 0.5)
    assert sparse_model[0].weight.grad.is_sparse
    torch.testing.assert_close(total, reference)
    for d, s in zip(dense_model.parameters(), sparse_model.parameters()):
        torch.testing.assert_close(s.grad.to_dense(), d.grad)


def test_rowwise_adagrad_trains_the_model_and_only_its_id_tables_go_sparse():
    torch.manual_seed(0)
    model = make_model(PRESETS["tiny"])
    opt = make_optimizer(model, lr=1e-2, weight_decay=0.01, embedding_optimizer="rowwise_adagrad", embedding_lr=5e-2)
    assert isinstance(opt, TrainOptimizer)
    assert model.embed.item.sparse and model.embed.author.sparse and not model.embed.action.sparse
    assert {g.get("lr_scale", 1.0) for g in opt.param_groups} == {1.0, 5.0}
    in_tables = {id(p) for g in opt.tables.param_groups for p in g["params"]}
    in_dense = {id(p) for g in opt.dense.param_groups for p in g["params"]}
    assert in_tables.isdisjoint(in_dense) and in_tables | in_dense == {id(p) for p in model.parameters()}
    with pytest.raises(LongseqError, match="embedding_optimizer"):
        make_optimizer(model, 1e-2, 0.0, embedding_optimizer="sgd")
    with pytest.raises(LongseqError, match="row-wise Adagrad"):
        opt.load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())


def test_a_rowwise_adagrad_state_round_trips(tmp_path):
    torch.manual_seed(0)
    table = torch.nn.Embedding(5, 2, sparse=True)
    opt = RowWiseAdagrad(table.parameters(), lr=0.1)
    table(torch.tensor([1, 2])).sum().backward()
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    other = RowWiseAdagrad(table.parameters(), lr=0.1)
    other.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert torch.equal(other.state[table.weight]["sum"], opt.state[table.weight]["sum"])
    assert other.state[table.weight]["sum"].nonzero().flatten().tolist() == [1, 2]


def test_loss_fn_reaches_both_optimizers():
    """One step moves the dense layers and the looked-up table rows, nothing else of the tables."""
    torch.manual_seed(0)
    model = make_model(PRESETS["tiny"])
    opt = make_optimizer(model, lr=1e-2, weight_decay=0.0, embedding_optimizer="rowwise_adagrad")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = random_batch([5, 0, 12], [2, 3, 1], 0)
    loss_fn(model(batch), batch).backward()
    clip_gradients(model.parameters(), 1.0)
    opt.step()
    moved_rows = (model.embed.item.weight != before["embed.item.weight"]).any(1).nonzero().flatten()
    assert 0 < len(moved_rows) < model.embed.item.num_embeddings
    assert not torch.equal(model.output.w2.weight, before["output.w2.weight"])
