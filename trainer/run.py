"""One process's training state (`Run`): the model and optimizer, fresh from the seed or
restored from the newest checkpoint, and one optimizer step on it (`train_step`). The
training loop (trainer/train.py), online training (trainer/follow.py) and the GPU
benchmark all step a `Run`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from longseq.dataset.spec_record import differences_clause
from longseq.reader import RequestBatch, RequestReader, open_reader
from longseq.schemas.contracts import DEFAULT_SPEC
from longseq.schemas.errors import LongseqError
from longseq.schemas.spec import DatasetSpec
from longseq.trainer import checkpoint
from longseq.trainer.distributed import Context
from longseq.trainer.model import loss_fn, make_model, RankingModel
from longseq.trainer.optimizers import TrainOptimizer, clip_gradients, make_optimizer
from longseq.trainer.provenance import DataRecord, OtherDataError, check_data, check_model_spec, write_data
from longseq.trainer.train_config import TrainConfig, learning_rate, reader_config

if TYPE_CHECKING:
    from longseq.dataset.published import PinnedFiles


class TrainingDiverged(LongseqError):
    """The loss became NaN or infinite."""


@dataclass
class Run:
    """One process's training state, and what it needs to take a step or save a checkpoint."""

    dir: Path
    cfg: TrainConfig
    ctx: Context
    total: int  # steps the lr schedule is sized to
    model: RankingModel
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper: forward through this
    optimizer: torch.optim.Optimizer | TrainOptimizer
    position: checkpoint.Position
    last_good: Path | None  # the newest checkpoint, named when the loss diverges
    # the first step whose loss was not finite (-1: none yet) and that loss, kept on the device
    # so that a step never waits for the GPU; read at log steps and before every checkpoint
    bad_step: torch.Tensor | None = None
    bad_loss: torch.Tensor | None = None
    data_changes: list[dict] = field(default_factory=list)  # data.json's: resumes on other data
    pinned: PinnedFiles | None = None  # the published files being trained on, held to their bytes

    def check_pinned(self) -> None:
        """Stop if a file being trained on changed since the run listed it."""
        if self.pinned is not None:
            self.pinned.check()

    def watch(self, loss: torch.Tensor) -> None:
        """Note the step if its loss is not finite (the first such step only), on the device."""
        loss = loss.detach().float()
        if self.bad_step is None:
            self.bad_step = torch.full((), -1, dtype=torch.int64, device=loss.device)
            self.bad_loss = torch.zeros((), device=loss.device)
        first = ~torch.isfinite(loss) & (self.bad_step < 0)
        self.bad_step = torch.where(first, self.position.step, self.bad_step)
        self.bad_loss = torch.where(first, loss, self.bad_loss)

    def require_finite(self, lr: float) -> None:
        """Stop, naming the last good checkpoint, once a loss was not finite: its weights and
        those after it are never saved."""
        if self.bad_step is not None and int(self.bad_step) >= 0:
            raise TrainingDiverged(
                f"loss is {float(self.bad_loss)} at step {int(self.bad_step)} (epoch {self.position.epoch}); the last "
                f"good checkpoint is {self.last_good or 'none'}. Lower lr (now {lr:.2e}) or grad_clip, or check the data")

    def save(self) -> None:
        self.require_finite(learning_rate(self.cfg, self.position.step, self.total))
        self.check_pinned()
        self.last_good = checkpoint.save(self.dir, self.model, self.optimizer, self.position, self.cfg.to_json(),
                                         self.model.spec)


def open_run(run_dir: Path, cfg: TrainConfig, ctx: Context, total: int, log: Callable[[str], None],
              data: DataRecord | None = None, allow_other_data: bool = False, spec: DatasetSpec = DEFAULT_SPEC) -> Run:
    """The model of `spec` and its optimizer: fresh from cfg.seed, or restored from run_dir's
    newest readable checkpoint (falling back past unreadable ones, said through log), which
    must be of the same spec. With data, a resume must read what data.json records (unless
    allow_other_data); a fresh run records it."""
    torch.manual_seed(cfg.seed)  # before building the model: its initial weights come from this seed
    with ctx.device:  # built where it trains: no host copy of tables that may not fit on the host
        model = make_model(cfg.model_config(), spec, cfg.attention)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.embedding_optimizer, cfg.embedding_lr)
    position = checkpoint.Position()
    found = checkpoint.newest(run_dir, log)
    resumed, changes = None, []
    if found is not None:
        resumed, state = found
        differences = cfg.differences(state["config"])
        if differences:
            raise LongseqError(f"{run_dir} holds a run with other settings ({'; '.join(differences)}); "
                               "use a new --run-dir, or the same settings to resume it")
        saved_spec = checkpoint.spec_of(state, resumed)
        check_model_spec(saved_spec, spec, run_dir, data.data if data else "the data")
        if saved_spec.model_fingerprint != spec.model_fingerprint:  # same records, other tables or transforms
            raise OtherDataError(
                f"{run_dir} holds a model of dataset spec {saved_spec.name!r} ({saved_spec.model_fingerprint}) whose "
                f"features are set up otherwise than in spec {spec.name!r} ({spec.model_fingerprint})"
                f"{differences_clause(saved_spec, spec, side='model')}: resume with the spec the run was started "
                f"with (--spec), or train a new --run-dir")
        if data is not None:
            changes = check_data(run_dir, data, int(state["step"]), allow_other_data, ctx.is_main, log)
        position = checkpoint.restore(state, resumed, model, optimizer)
        log(f"resuming {run_dir} from {resumed.name}: step {position.step}, epoch {position.epoch}, "
            f"batch {position.batch_in_epoch}")
    elif ctx.is_main:
        (run_dir / "config.json").write_text(json.dumps(json.loads(cfg.to_json()), indent=2))
        if data is not None:
            write_data(run_dir, data, [])
    net: torch.nn.Module = model
    if ctx.distributed:
        # the baseline arch "none" leaves the sequence encoder out of the graph
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=cfg.model_config().arch == "none")
    if cfg.compile:  # batches are jagged: every shape is dynamic, compiled once
        net = torch.compile(net, dynamic=True)
    return Run(run_dir, cfg, ctx, total, model, net, optimizer, position, last_good=resumed, data_changes=changes)


def train_reader(urls: list[str], cfg: TrainConfig, ctx: Context, spec: DatasetSpec = DEFAULT_SPEC) -> RequestReader:
    return open_reader(urls, reader_config(cfg, ctx.rank, ctx.world, ctx.device.type == "cuda"), spec=spec)


def train_step(run: Run, batch: RequestBatch, autocast: torch.autocast) -> tuple[RequestBatch, torch.Tensor, float]:
    """One optimizer step at run.position.step; returns the batch (on the device), its loss and the lr used."""
    lr = learning_rate(run.cfg, run.position.step, run.total)
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    batch = batch.to(run.ctx.device, non_blocking=True)
    with autocast:
        loss = loss_fn(run.net(batch), batch)
    run.watch(loss)  # no host sync: checked at log steps and before checkpoints
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(run.model.parameters(), run.cfg.grad_clip)
    run.optimizer.step()
    return batch, loss, lr


def weights_digest(model: torch.nn.Module) -> str:
    """A fingerprint of the weights: equal digests, equal weights (ranks in step, exact resume)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
