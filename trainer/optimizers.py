"""The training optimizers: AdamW for the dense layers, and for the id embedding tables
either the same AdamW (dense gradients, the default) or row-wise Adagrad on sparse gradients.

Row-wise Adagrad (TorchRec's default for embedding tables) keeps one accumulator per table
row, the running sum of the row's mean squared gradient, and touches only the rows a batch
looked up. At the paper's vocabularies (4M items and 1M authors of 1,024) that is the
difference between 5.4B parameters of gradients and two Adam moments (about 86 GB with the
weights) and the weights plus 5M accumulators (about 22 GB).
"""

from __future__ import annotations

import torch

from longseq.schemas.errors import LongseqError

EMBEDDING_OPTIMIZERS = ("adamw", "rowwise_adagrad")


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per row, for embedding tables with sparse gradients:
    s[r] += mean_j g[r, j]^2; w[r] -= lr * g[r] / (sqrt(s[r]) + eps), for the rows r in the
    batch only (a dense gradient updates every row)."""

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ARG002 - the Optimizer signature
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["sum"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
                if p.grad.is_sparse:
                    grad = p.grad.coalesce()  # a row looked up twice appears once, summed
                    rows, values = grad.indices()[0], grad.values()
                else:
                    rows, values = torch.arange(p.shape[0], device=p.device), p.grad
                state["sum"].index_add_(0, rows, values.float().pow(2).mean(1))
                std = state["sum"][rows].sqrt().add_(group["eps"])  # [R]
                p.index_add_(0, rows, (values.float() / std[:, None]).mul_(-group["lr"]).to(p.dtype))


class TrainOptimizer:
    """AdamW for the dense layers and RowWiseAdagrad for the id tables, stepped, zeroed and
    checkpointed as one. Each param group's lr is the schedule's times its lr_scale."""

    def __init__(self, dense: torch.optim.Optimizer, tables: torch.optim.Optimizer):
        self.dense, self.tables = dense, tables

    @property
    def param_groups(self) -> list[dict]:
        return self.dense.param_groups + self.tables.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none=set_to_none)
        self.tables.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.dense.step()
        self.tables.step()

    def state_dict(self) -> dict:
        return {"dense": self.dense.state_dict(), "tables": self.tables.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"dense", "tables"}:
            raise LongseqError("this checkpoint's optimizer is not AdamW + row-wise Adagrad: resume it with the "
                               "embedding_optimizer it was trained with")
        self.dense.load_state_dict(state["dense"])
        self.tables.load_state_dict(state["tables"])


def id_tables(model: torch.nn.Module) -> list[torch.nn.Embedding]:
    """The item and author tables: the model's only large parameters."""
    return [model.embed.item, model.embed.author]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, embedding_optimizer: str = "adamw",
                   embedding_lr: float | None = None) -> torch.optim.Optimizer | TrainOptimizer:
    """AdamW, with weight decay on the dense layers' matrices, not on embeddings, norms or
    biases. embedding_optimizer "rowwise_adagrad": the id tables switch to sparse gradients
    and RowWiseAdagrad at embedding_lr (default lr)."""
    if embedding_optimizer not in EMBEDDING_OPTIMIZERS:
        raise LongseqError(f"unknown embedding_optimizer {embedding_optimizer!r}; choose {' or '.join(EMBEDDING_OPTIMIZERS)}")
    tables = id_tables(model) if embedding_optimizer == "rowwise_adagrad" else []
    separate = {id(t.weight) for t in tables}
    decay = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    decayed = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in decayed and id(p) not in separate]
    # on the CPU the fused kernel: one pass over each parameter and its moments, not one per
    # arithmetic op (the same update); elsewhere torch's default
    fused = all(p.device.type == "cpu" for p in model.parameters()) or None
    dense = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                               {"params": rest, "weight_decay": 0.0}], lr=lr, fused=fused)
    if not tables:
        return dense
    for table in tables:
        table.sparse = True  # nn.Embedding reads this at every lookup: row-sparse gradients from now on
    scale = (embedding_lr or lr) / lr
    return TrainOptimizer(dense, RowWiseAdagrad([{"params": [t.weight for t in tables], "lr_scale": scale}],
                                                lr=lr * scale))


@torch.no_grad()
def clip_gradients(params, max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ that also takes row-sparse gradients (torch's refuses them); with
    dense gradients only, it is torch's own."""
    params = [p for p in params if p.grad is not None]
    if not any(p.grad.is_sparse for p in params):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    for p in params:
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
    norms = [(p.grad.values() if p.grad.is_sparse else p.grad).float().norm() for p in params]
    total = torch.stack(norms).norm()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in params:
        (p.grad.values() if p.grad.is_sparse else p.grad).mul_(coef.to(p.grad.dtype))
    return total
