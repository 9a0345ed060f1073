"""How a CPU training step runs, apart from what it computes: the fused AdamW, embedding
gradients by index_add_, threads per process, and freed memory kept between steps."""

from __future__ import annotations

import resource

import torch

from longseq.trainer.distributed import cpu_threads, keep_freed_memory
from longseq.trainer.model import lookup, make_model
from longseq.trainer.model_config import PRESETS
from longseq.trainer.optimizers import make_optimizer


def test_the_cpu_optimizer_is_fused_and_steps_as_adamw():
    torch.manual_seed(0)
    model, reference = make_model(PRESETS["tiny"]), make_model(PRESETS["tiny"])
    reference.load_state_dict(model.state_dict())
    fused = make_optimizer(model, lr=1e-2, weight_decay=0.1)
    assert all(group["fused"] for group in fused.param_groups)
    initial = model.heads.weight.detach().clone()
    same = dict(zip(model.parameters(), reference.parameters()))  # the reference's parameter of each of ours
    plain = torch.optim.AdamW([{"params": [same[p] for p in g["params"]], "weight_decay": g["weight_decay"]}
                               for g in fused.param_groups], lr=1e-2, foreach=False)
    for step in range(3):
        for m in (model, reference):
            for i, p in enumerate(m.parameters()):
                p.grad = torch.full_like(p, 0.01 * (i + 1) * (step + 1))
        fused.step()
        plain.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(model.heads.weight, initial), "the steps moved the weights"


def test_lookup_gradients_are_the_embeddings():
    table = torch.nn.Embedding(50, 8)
    rows = torch.tensor([3, 7, 3, 0, 49, 3])
    grad = torch.randn(len(rows), 8)
    lookup(table, rows).backward(grad)
    ours = table.weight.grad.clone()
    table.weight.grad = None
    table(rows).backward(grad)
    torch.testing.assert_close(ours, table.weight.grad)
    assert ours[3].abs().sum() > 0 and ours[1].abs().sum() == 0


def test_threads_are_a_ranks_share_of_the_cores_or_omp_num_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert cpu_threads() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert cpu_threads() == 8
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert cpu_threads() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert cpu_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3


def test_freed_memory_is_reused_without_faulting_pages_in():
    keep_freed_memory()

    def faults_of_large_tensors() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            torch.ones(16 << 20)  # 64 MB, filled and freed: by default a fresh mmap each time
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    for _ in range(3):  # the heap grows, then settles
        faults_of_large_tensors()
    assert faults_of_large_tensors() < 2_000, "5 x 64 MB would fault in about 80,000 pages"
