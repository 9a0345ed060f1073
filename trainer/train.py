"""`longseq train`: STCA (or a baseline) on published days, with exact resume.

    RUN/config.json        the TrainConfig, as run
    RUN/data.json          what it trains on: the data directory, the days, each day's published build,
                           and the dataset spec the data was built with (none recorded: the default)
    RUN/checkpoints/       every checkpoint_every steps and at the end (trainer/checkpoint.py)
    RUN/train_log.csv      step, epoch, loss, lr, requests/s, tokens/s
    RUN/tensorboard/       the same curves for TensorBoard
    RUN/train_summary.json what the run did

Training reads U-shaped random-length suffixes of the histories (features/lengths.py);
evaluation and scoring read full length (trainer/evaluate.py). A run directory that holds
checkpoints is resumed from the newest, and reaches the same weights as a run that was
never interrupted: the reader gives the same batches for a seed and epoch, and the
checkpoint says how many of them were consumed. A resume must read the data the run was
started on (data.json: the same days of the same builds) unless allowed otherwise.

The dataset spec comes from the data (DATA/spec.yaml, dataset/spec_record.py): it sets the
model's tasks and side features. Each checkpoint records it; a resume on data of another
spec is refused whatever is allowed, as the model's tables and heads are its spec's.

`max_steps` trains that many steps, going on into further epochs as needed; with `epochs`
also set, the first limit reached stops the run. The lr schedule is sized to the steps the
run will take (`plan_steps`), so its cosine decay ends at the last step.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from longseq.dataset.spec_record import spec_summary
from longseq.features.lengths import LengthSampler
from longseq.schemas.contracts import DEFAULT_SPEC
from longseq.schemas.errors import LongseqError
from longseq.schemas.spec import DatasetSpec
from longseq.trainer import checkpoint
from longseq.reader.batch import RequestBatch, device_batches
from longseq.trainer.distributed import Context, all_have_batch, setup, teardown
from longseq.trainer.model import RankingModel, check_kernel, loss_fn, num_parameters
from longseq.trainer.model_config import DEFAULT_PRESET, PRESETS, ModelConfig
from longseq.trainer.optimizers import EMBEDDING_OPTIMIZERS, TrainOptimizer, clip_gradients, make_optimizer
from longseq.reader.readers import ReaderConfig, RequestReader, data_spec, open_reader

if TYPE_CHECKING:
    from tqdm import tqdm

    from longseq.dataset.published import PublishedFile


class TrainingDiverged(LongseqError):
    """The loss became NaN or infinite."""


# TrainConfig fields added after configs were first saved, at the value that does what
# training did before them: a saved config without one is read so, whatever the default is now
ADDED_FIELDS = {"bucket_pool": 0, "embedding_optimizer": "adamw", "embedding_lr": None, "compile": False,
                "attention": "padded", "spec": None}


@dataclass
class TrainConfig:
    preset: str = DEFAULT_PRESET  # a trainer.model_config.PRESETS name
    # ModelConfig fields overriding the preset (arch, dim, ...); settings files check them against ModelConfig
    model: dict = field(default_factory=dict, metadata={"settings": ModelConfig})
    # passes over the days; None: one, or as many as max_steps needs. With max_steps too, the first limit stops
    epochs: int | None = None
    batch_size: int = 128  # requests; with token_budget, the most a batch may hold
    token_budget: int | None = None  # history tokens per batch
    truncation: bool = True  # train on random-length suffixes (U-shaped Beta)
    # LengthSampler fields: min_len, max_len, alpha, beta, multiple
    length: dict = field(default_factory=dict, metadata={"settings": LengthSampler})
    max_len: int | None = None  # cap on training history length (with truncation off: train at a fixed length)
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1  # cosine decay from lr to lr * min_lr_ratio
    grad_clip: float = 1.0
    seed: int = 0
    shuffle_buffer: int = 512
    bucket_pool: int = 0  # >0: batch requests of similar sampled length from pools of this many (less padding)
    embedding_optimizer: str = "adamw"  # or rowwise_adagrad: sparse gradients for the id tables (trainer/optimizers.py)
    embedding_lr: float | None = None  # rowwise_adagrad's peak lr (None: lr); follows the same schedule
    compile: bool = False  # torch.compile the model (dynamic shapes): for GPUs, where it can pay off
    attention: str = "padded"  # or flex: jagged FlexAttention, no padding (CUDA; the same numbers)
    checkpoint_every: int = 100  # steps
    log_every: int = 10
    max_steps: int | None = None  # train this many steps, over as many epochs as it takes (see epochs)
    device: str = "auto"  # auto: cuda if present, else cpu
    # a dataset spec file, which must be the one the data was built with (DATA/spec.yaml); None:
    # the data's. Not a setting of the run: the data's spec is, checked on every resume
    spec: str | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise LongseqError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        try:
            check_kernel(self.model_config(), self.attention)
            self.sampler()
        except (TypeError, ValueError) as e:
            raise LongseqError(f"bad model, attention or length settings: {e}") from None
        if (self.epochs or 1) < 1 or (self.max_steps or 1) < 1 or self.batch_size < 1 or self.lr <= 0 \
                or (self.embedding_lr or 1) <= 0:
            raise LongseqError("epochs, max_steps and batch_size must be >= 1, lr and embedding_lr > 0")
        if self.embedding_optimizer not in EMBEDDING_OPTIMIZERS:
            raise LongseqError(f"unknown embedding_optimizer {self.embedding_optimizer!r}; "
                               f"choose {' or '.join(EMBEDDING_OPTIMIZERS)}")

    def epoch_limit(self) -> int | None:
        """Epochs the run may take: epochs if set, else 1, or no limit when max_steps is set."""
        if self.epochs is not None:
            return self.epochs
        return None if self.max_steps is not None else 1

    def model_config(self) -> ModelConfig:
        return dataclasses.replace(PRESETS[self.preset], **self.model)

    def sampler(self) -> LengthSampler | None:
        return LengthSampler(**self.length) if self.truncation else None

    def to_json(self) -> str:
        settings = dataclasses.asdict(self)
        if settings["spec"] is None:  # as configs were saved before the field: the same bytes
            del settings["spec"]
        return json.dumps(settings, sort_keys=True)

    def same_settings(self, other_json: str) -> bool:
        """Whether a config saved as JSON (a checkpoint's, a benchmark cache's) has these
        settings; a field it lacks, being newer than it, means what training did before it."""
        try:
            return TrainConfig(**{**ADDED_FIELDS, **json.loads(other_json)})._canonical() == self._canonical()
        except (TypeError, ValueError, LongseqError):
            return False

    def _canonical(self) -> "TrainConfig":
        # epochs unset without max_steps is one epoch: a config saved with epochs 1 (as all were
        # before epochs could be unset) has the same settings. The spec file only says where the
        # spec was read from: the spec itself is checked against the checkpoint's (check_model_spec)
        epochs = self.epoch_limit() if self.max_steps is None else self.epochs
        return dataclasses.replace(self, epochs=epochs, spec=None)

    @staticmethod
    def from_file(path: Path | str, **overrides) -> "TrainConfig":
        """A YAML/JSON settings file, each value checked against its field's type (one-line
        errors naming the file and field), with overrides (command-line flags) on top."""
        from longseq.schemas.settings_file import load_settings

        return TrainConfig(**{**load_settings(TrainConfig, path, "training config"), **overrides})


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio at the last of `total` steps
    (step total - 1: the run's last step trains at the schedule's end)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - 1 - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def reader_config(cfg: TrainConfig, rank: int = 0, world: int = 1, cuda: bool = False) -> ReaderConfig:
    """How training reads: the batches, shuffle and length draws of a seed (the same on every read)."""
    return ReaderConfig(
        batch_size=cfg.batch_size, token_budget=cfg.token_budget, shuffle=True, shuffle_buffer=cfg.shuffle_buffer,
        seed=cfg.seed, shard=rank, shard_count=world, truncation=cfg.sampler(), max_len=cfg.max_len, pin_memory=cuda,
        bucket_pool=cfg.bucket_pool)


# ---------------------------------------------------------------- how many steps


@dataclass(frozen=True)
class StepPlan:
    """How many steps a run takes from step 0, and so the length of its lr schedule."""

    total: int  # steps the run takes, and the steps the lr schedule decays over
    epochs: float  # those steps in epochs: 2.07 is two epochs and 7% of the third
    per_epoch: int  # batches (per process) in the first epoch
    exact: bool  # False with a token_budget: batches per epoch are then the fewest there can be
    stopped_by: str  # "max_steps" or "epochs"

    def describe(self, cfg: TrainConfig) -> str:
        text = (f"training {self.total:,} steps = {self.epochs:.2f} epochs of {self.per_epoch:,} batches, "
                f"the lr schedule sized to them")
        if cfg.max_steps is not None and cfg.epochs is not None:
            text += f" (epochs {cfg.epochs} and max_steps {cfg.max_steps}: the first limit reached, {self.stopped_by}, stops)"
        if not self.exact and self.stopped_by == "epochs":
            text += (f"; token_budget: an epoch has at least {self.per_epoch:,} batches (more when budgets fill "
                     f"first), known only as read, so an epochs limit may run past the schedule's end, at its last lr")
        return text


def plan_steps(cfg: TrainConfig, files: list[PublishedFile], world: int = 1) -> StepPlan:
    """The steps a run of cfg takes on files with `world` processes: max_steps, over as many
    epochs as it needs; or its epochs' batches; with both, whichever comes first.

    Batches by request count are exact: ceil(rows / batch_size) an epoch, or with several
    processes the fewest of any rank's shard that epoch (every rank stops when one runs
    out). With a token budget the count depends on the sampled lengths: ceil(rows /
    batch_size) is the fewest, and is used."""
    rows = sum(f.rows for f in files)
    if rows == 0:
        raise LongseqError("the days hold no requests to train on")
    batches, exact = _epoch_batches(cfg, files, world)
    limit, cap = cfg.epoch_limit(), cfg.max_steps
    first = batches(0)
    if first == 0:
        raise LongseqError(f"a process has no batch in the first epoch: {world} processes for {rows:,} requests")
    if exact and world > 1:  # epochs differ by shard: count them one by one
        total, epochs, epoch = 0, 0.0, 0
        while (limit is None or epoch < limit) and (cap is None or total < cap):
            n = batches(epoch)
            if n == 0:  # an epoch with no batch would never reach max_steps
                break
            take = n if cap is None else min(n, cap - total)
            total, epochs, epoch = total + take, epochs + take / n, epoch + 1
    else:
        by_epochs = None if limit is None else limit * first
        total = by_epochs if cap is None else cap if by_epochs is None else min(cap, by_epochs)
        epochs = total / first
    stopped_by = "max_steps" if cap is not None and total >= cap else "epochs"
    return StepPlan(total, epochs, first, exact, stopped_by)


def _epoch_batches(cfg: TrainConfig, files: list[PublishedFile], world: int) -> tuple[Callable[[int], int], bool]:
    """Batches per process in an epoch (a function of the epoch), and whether that is exact."""
    from longseq.reader.steps import row_group_schedule

    rows = sum(f.rows for f in files)
    if cfg.token_budget is not None or world == 1:
        n = math.ceil(rows / world / cfg.batch_size)
        return (lambda epoch: n), cfg.token_budget is None
    groups = _row_group_rows([f.url for f in files])
    configs = [reader_config(cfg, rank, world) for rank in range(world)]

    def batches(epoch: int) -> int:  # the training loop stops when any rank has no batch left
        return min(math.ceil(sum(groups[i] for i in row_group_schedule(len(groups), c, epoch)) / cfg.batch_size)
                   for c in configs)

    return batches, True


def _row_group_rows(urls: list[str]) -> list[int]:
    """Rows of each row group, numbered across the files in order (as shards number them)."""
    import pyarrow.parquet as pq

    from longseq.dataset.storage import open_input  # escaped file:// URLs and cluster URIs alike

    rows = []
    for url in urls:
        with open_input(url) as f:
            meta = pq.ParquetFile(f).metadata
        rows += [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    return rows


# ---------------------------------------------------------------- what a run reads


class OtherDataError(LongseqError):
    """A resume that would read other data than the run was started on."""


@dataclass(frozen=True)
class DataRecord:
    """What a run reads (RUN/data.json): the build's output directory, the days, and each
    day's published build: its build run and digest (a rebuild changes them), rows, and a
    digest of its files' names, sizes and rows (a republish with other files changes it);
    and the dataset spec the data was built with."""

    data: str
    days: dict[str, dict]  # "YYYY-MM-DD" -> {"build_run", "build_digest", "rows", "files"}
    # {"name", "fingerprint"} of the data's spec; None: the default spec, which data.json leaves
    # unsaid, as it did before specs existed
    spec: dict | None = None

    @staticmethod
    def read(data: str, start, end, spec: DatasetSpec = DEFAULT_SPEC) -> "DataRecord":
        from longseq.dataset.layout import BuildLayout, day_range
        from longseq.dataset.storage import absolute, storage_for

        root = absolute(data).rstrip("/")
        storage, layout = storage_for(root, arrow=True), BuildLayout(root)
        days = {}
        for day in day_range(start, end):
            manifest = json.loads(storage.read_text(layout.manifest(day)))
            # the files as published_files checked them against this manifest (with checksums where it has them)
            mine = sorted([f["name"], f["bytes"], f["rows"], f.get("sha256")] for f in manifest["files"])
            days[day.isoformat()] = {"build_run": manifest.get("build_run"), "build_digest": manifest.get("build_digest"),
                                     "rows": sum(f[2] for f in mine),
                                     "files": hashlib.sha256(json.dumps(mine).encode()).hexdigest()[:16]}
        return DataRecord(root, days, None if _is_default(spec) else spec_summary(spec))

    def spec_or_default(self) -> dict:
        from longseq.dataset.published import built_spec_summary

        return built_spec_summary({"spec": self.spec})

    def to_dict(self) -> dict:
        """data.json's form: no spec entry for the default spec."""
        record = dataclasses.asdict(self)
        if record["spec"] is None:
            del record["spec"]
        return record

    def span(self) -> str:
        days = sorted(self.days)
        return f"{days[0]}..{days[-1]}" if days else "no days"

    def differences(self, before: "DataRecord") -> list[str]:
        """What this data has that `before` had otherwise, in words; [] for the same days of
        the same builds, wherever they are read from."""
        diffs = []
        spec, spec_before = self.spec_or_default(), before.spec_or_default()
        if spec != spec_before:
            diffs.append(f"dataset spec {spec_before['name']} ({spec_before['fingerprint']}), now {spec['name']} "
                         f"({spec['fingerprint']})")
        if set(self.days) != set(before.days):
            diffs.append(f"days {before.span()}, now {self.span()}")
        changed = []
        for day in sorted(set(self.days) & set(before.days)):
            was, now = before.days[day], self.days[day]
            if (was["build_digest"], was["build_run"]) != (now["build_digest"], now["build_run"]):
                changed.append(f"ds={day} was rebuilt (build {was['build_run']}, now {now['build_run']})")
            elif was != now:
                changed.append(f"ds={day} was republished with other files")
        diffs += changed[:3] + ([f"and {len(changed) - 3} more days"] if len(changed) > 3 else [])
        if diffs and self.data != before.data:
            diffs.insert(0, f"data {before.data}, now {self.data}")
        return diffs


def _is_default(spec: DatasetSpec) -> bool:
    return spec.fingerprint == DEFAULT_SPEC.fingerprint


def check_model_spec(model_spec: DatasetSpec, data_spec: DatasetSpec, run_dir: Path | str, data: str) -> None:
    """OtherDataError unless the data is of the spec the run's model was built for: its
    tables, heads and metrics are that spec's."""
    if model_spec.fingerprint != data_spec.fingerprint:
        raise OtherDataError(
            f"{run_dir} holds a model of dataset spec {model_spec.name!r} ({model_spec.fingerprint}), but {data} holds "
            f"data of spec {data_spec.name!r} ({data_spec.fingerprint}): a model reads only records of its own spec; "
            f"use data of spec {model_spec.name!r}, or train a new --run-dir on this data")


def _check_data(run_dir: Path, record: DataRecord, step: int, allow_other_data: bool, write: bool,
                log: Callable[[str], None]) -> list[dict]:
    """Refuse to resume on other data than data.json records, unless allowed; record what
    the run reads from now on (and what changed, at which step). Returns the changes so far."""
    path = run_dir / "data.json"
    saved: dict | None = None
    try:
        saved = json.loads(path.read_text())
        before = DataRecord(saved["data"], saved["days"], saved.get("spec"))
    except FileNotFoundError:  # a run from before data.json existed: its data is whatever it reads now
        log(f"{run_dir} has no record of the data it was trained on (older than data.json); recording "
            f"{record.data} {record.span()} at step {step}")
        before = record
    except (OSError, ValueError, KeyError, TypeError) as e:
        if not allow_other_data:
            raise OtherDataError(f"{path} is unreadable ({type(e).__name__}: {e}), so this resume cannot be "
                                 "checked against the run's data; pass --allow-other-data to record the data "
                                 "read now") from None
        before = DataRecord("?", {})
    changes = list((saved or {}).get("changes", []))
    diffs = record.differences(before)
    if diffs and not allow_other_data:
        raise OtherDataError(
            f"{run_dir} was trained on {before.data} {before.span()}, not the data asked for now: {'; '.join(diffs)}. "
            "Resume with the same --data/--start/--end, use a new --run-dir, or pass --allow-other-data to go on "
            "with this data (recorded in data.json)")
    if diffs:
        log(f"resuming {run_dir} at step {step} on other data (--allow-other-data): {'; '.join(diffs)}")
        changes.append({"at_step": step, "allowed_by": "--allow-other-data", "differences": diffs,
                        "before": before.to_dict()})
    elif record.data != before.data:  # the same builds, moved or copied: the same records
        log(f"{run_dir} reads the same builds from {record.data} now (was {before.data})")
        changes.append({"at_step": step, "differences": [f"data {before.data}, now {record.data} (the same builds)"]})
    if write and (saved is None or diffs or record.data != before.data):
        _write_data(run_dir, record, changes)
    return changes


def _write_data(run_dir: Path, record: DataRecord, changes: list[dict]) -> None:
    tmp = run_dir / "data.json.tmp"
    tmp.write_text(json.dumps({**record.to_dict(), "changes": changes}, indent=2))
    tmp.replace(run_dir / "data.json")


def _reader(urls: list[str], cfg: TrainConfig, ctx: Context, spec: DatasetSpec = DEFAULT_SPEC) -> RequestReader:
    return open_reader(urls, reader_config(cfg, ctx.rank, ctx.world, ctx.device.type == "cuda"), spec=spec)


class _Log:
    """train_log.csv and TensorBoard, written by rank 0."""

    FIELDS = ("step", "epoch", "loss", "lr", "requests_per_s", "tokens_per_s")

    def __init__(self, run_dir: Path):
        path = run_dir / "train_log.csv"
        new = not path.exists()
        self._file = open(path, "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=self.FIELDS)
        if new:
            self._csv.writeheader()
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, row: dict) -> None:
        self._csv.writerow(row)
        self._file.flush()
        for key in ("loss", "lr", "requests_per_s", "tokens_per_s"):
            self._tb.add_scalar(f"train/{key}", row[key], row["step"])

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def train(data: str, start, end, run_dir: Path | str, cfg: TrainConfig | None = None,
          log: Callable[[str], None] = print, stop_after: int | None = None, allow_other_data: bool = False) -> dict:
    """Train on the published days [start, end]; resume if run_dir holds checkpoints.

    A resume must read the days and builds the run was started on (RUN/data.json), unless
    allow_other_data, which data.json then records; and data of the spec its checkpoints
    record, always. The spec is the data's (cfg.spec, when set, must be it). stop_after: stop
    (with a checkpoint) after this many steps of this call, as if killed: for tests of resuming."""
    from longseq.dataset.published import published_files

    cfg = cfg or TrainConfig()
    run_dir = Path(run_dir)
    spec = data_spec(data, cfg.spec)
    files = published_files(data, start, end, spec=spec)
    record = DataRecord.read(data, start, end, spec)
    ctx = setup(cfg.device)
    try:
        return _train(files, record, run_dir, cfg, ctx, log, stop_after, allow_other_data, spec)
    finally:
        teardown(ctx)


def _train(files: list[PublishedFile], record: DataRecord, run_dir: Path, cfg: TrainConfig, ctx: Context,
           log: Callable[[str], None], stop_after: int | None, allow_other_data: bool,
           spec: DatasetSpec = DEFAULT_SPEC) -> dict:
    from tqdm import tqdm

    if cfg.attention == "flex" and ctx.device.type != "cuda":
        raise LongseqError("attention flex trains on CUDA only (FlexAttention has no CPU backward); "
                           "use attention padded, which computes the same")
    if ctx.distributed and ctx.device.type == "cuda" and cfg.embedding_optimizer == "rowwise_adagrad":
        # DDP all-reduces the tables' row-sparse gradients, and NCCL has no sparse all-reduce
        raise LongseqError("embedding_optimizer rowwise_adagrad trains on one GPU, or on several CPU processes "
                           "(gloo); with several GPUs use embedding_optimizer adamw")
    run_dir.mkdir(parents=True, exist_ok=True)
    urls, rows = [f.url for f in files], sum(f.rows for f in files)
    plan = plan_steps(cfg, files, ctx.world)
    run = _open_run(run_dir, cfg, ctx, plan.total, log, record, allow_other_data, spec)
    if ctx.is_main:
        log(f"training {cfg.model_config().arch} ({num_parameters(run.model):,} parameters) on {rows:,} requests, "
            f"{ctx.world} process(es) on {ctx.device} -> {run_dir}")
        log(plan.describe(cfg))
    reader = _reader(urls, cfg, ctx, spec)
    writer = _Log(run_dir) if ctx.is_main else None
    # no bar off a terminal (Airflow logs, CI) or on ranks but the first
    bar = tqdm(total=plan.total, initial=run.position.step, disable=None if ctx.is_main else True, unit="step",
               dynamic_ncols=True)
    meter = TrainMeter()
    try:
        interrupted = _run_epochs(run, reader, meter, bar, writer, stop_after)
        if ctx.is_main:
            run.save()
    finally:
        bar.close()
        if writer:
            writer.close()
    summary = {"steps": run.position.step, "epochs_done": run.position.epoch, "finished": not interrupted,
               "checkpoint": str(run.last_good) if run.last_good else None, "parameters": num_parameters(run.model),
               "world_size": ctx.world, "rank": ctx.rank, "requests_seen": meter.requests_seen,
               "weights_sha256": weights_digest(run.model), "schedule_steps": plan.total,
               "planned_epochs": round(plan.epochs, 4), "data_changed_at_steps": [c["at_step"] for c in run.data_changes]}
    name = "train_summary.json" if ctx.is_main else f"train_summary.rank{ctx.rank}.json"
    (run_dir / name).write_text(json.dumps(summary, indent=2))
    return summary


@dataclass
class _Run:
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
        self.last_good = checkpoint.save(self.dir, self.model, self.optimizer, self.position, self.cfg.to_json(),
                                         self.model.spec)


def _open_run(run_dir: Path, cfg: TrainConfig, ctx: Context, total: int, log: Callable[[str], None],
              data: DataRecord | None = None, allow_other_data: bool = False, spec: DatasetSpec = DEFAULT_SPEC) -> _Run:
    """The model of `spec` and its optimizer: fresh from cfg.seed, or restored from run_dir's
    newest readable checkpoint (falling back past unreadable ones, said through log), which
    must be of the same spec. With data, a resume must read what data.json records (unless
    allow_other_data); a fresh run records it."""
    torch.manual_seed(cfg.seed)  # before building the model: its initial weights come from this seed
    with ctx.device:  # built where it trains: no host copy of tables that may not fit on the host
        model = RankingModel(cfg.model_config(), spec).use_kernel(cfg.attention)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.embedding_optimizer, cfg.embedding_lr)
    position = checkpoint.Position()
    found = checkpoint.newest(run_dir, log)
    resumed, changes = None, []
    if found is not None:
        resumed, state = found
        if not cfg.same_settings(state["config"]):
            raise LongseqError(f"{run_dir} holds a run with other settings (see {run_dir}/config.json); "
                               "use a new --run-dir, or the same settings to resume it")
        saved_spec = checkpoint.spec_of(state, resumed)
        check_model_spec(saved_spec, spec, run_dir, data.data if data else "the data")
        if saved_spec.model_fingerprint != spec.model_fingerprint:  # same records, other tables or transforms
            raise OtherDataError(
                f"{run_dir} holds a model of dataset spec {saved_spec.name!r} whose features are set up otherwise "
                f"than in spec {spec.name!r} ({spec.model_fingerprint}, the checkpoint {saved_spec.model_fingerprint}): "
                f"resume with the spec the run was started with (--spec), or train a new --run-dir")
        if data is not None:
            changes = _check_data(run_dir, data, int(state["step"]), allow_other_data, ctx.is_main, log)
        position = checkpoint.restore(state, resumed, model, optimizer)
        log(f"resuming {run_dir} from {resumed.name}: step {position.step}, epoch {position.epoch}, "
            f"batch {position.batch_in_epoch}")
    elif ctx.is_main:
        (run_dir / "config.json").write_text(json.dumps(json.loads(cfg.to_json()), indent=2))
        if data is not None:
            _write_data(run_dir, data, [])
    net: torch.nn.Module = model
    if ctx.distributed:
        # the baseline arch "none" leaves the sequence encoder out of the graph
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=cfg.model_config().arch == "none")
    if cfg.compile:  # batches are jagged: every shape is dynamic, compiled once
        net = torch.compile(net, dynamic=True)
    return _Run(run_dir, cfg, ctx, total, model, net, optimizer, position, last_good=resumed, data_changes=changes)


def _run_epochs(run: _Run, reader: RequestReader, meter: TrainMeter, bar: tqdm, writer: _Log | None,
                stop_after: int | None) -> bool:
    """Train from run.position to the end of the last epoch or to max_steps, whichever comes
    first (max_steps alone: on through as many epochs as it takes); returns True when
    stop_after steps of this call cut it short (left mid-epoch, as if killed)."""
    cfg, ctx, position = run.cfg, run.ctx, run.position
    steps_now = 0
    epochs = cfg.epoch_limit()
    # bf16 on GPU; on CPU a disabled context, so that CPU runs stay in float32
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if ctx.device.type == "cuda" else torch.autocast("cpu", enabled=False)
    while epochs is None or position.epoch < epochs:
        if cfg.max_steps is not None and position.step >= cfg.max_steps:  # before opening another epoch's reader
            return False
        batches = reader.batches(position.epoch)
        for _ in range(position.batch_in_epoch):  # resuming mid-epoch: the same batches again
            next(batches, None)
        pairs = device_batches(batches, ctx.device)
        while True:
            pair = next(pairs, None)
            if not all_have_batch(ctx, pair is not None):  # every rank stops at the same step
                break
            if cfg.max_steps is not None and position.step >= cfg.max_steps:
                return False
            batch, on_device = pair
            _, loss, lr = train_step(run, on_device, autocast)
            position.step += 1
            position.batch_in_epoch += 1
            steps_now += 1
            meter.update(batch, loss)  # the host batch: its sizes are host ints
            bar.update(1)
            if position.step % cfg.log_every == 0:
                run.require_finite(lr)
                row = meter.row(position, lr)
                bar.set_postfix(loss=f"{row['loss']:.4f}", req_s=f"{row['requests_per_s']:,.0f}",
                                tok_s=f"{row['tokens_per_s']:,.0f}")
                if writer:
                    writer.write(row)
            if position.step % cfg.checkpoint_every == 0 and ctx.is_main:
                run.save()
            if stop_after is not None and steps_now >= stop_after:
                return True
        if position.batch_in_epoch == 0:  # an epoch with no batch: further ones would never reach max_steps
            return False
        position.epoch += 1
        position.batch_in_epoch = 0
    return False


def train_step(run: _Run, batch: RequestBatch, autocast: torch.autocast) -> tuple[RequestBatch, torch.Tensor, float]:
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


class TrainMeter:
    """Throughput and mean loss since the last row of train_log.csv, and requests seen in all."""

    def __init__(self) -> None:
        self.requests_seen = 0  # this call's steps, for the summary
        self._reset()

    def _reset(self) -> None:
        self._requests, self._tokens, self._loss, self._n = 0, 0, 0.0, 0
        self._t = time.perf_counter()

    def update(self, batch: RequestBatch, loss: torch.Tensor) -> None:
        self.requests_seen += batch.num_requests
        self._requests += batch.num_requests
        self._tokens += batch.num_history_tokens
        self._loss = self._loss + loss.detach().float()  # summed on the device; read once per row
        self._n += 1

    def row(self, position: checkpoint.Position, lr: float) -> dict:
        """A train_log.csv row for the steps since the last one; starts the next window."""
        seconds = max(time.perf_counter() - self._t, 1e-9)
        row = {"step": position.step, "epoch": position.epoch, "loss": float(self._loss) / max(self._n, 1), "lr": lr,
               "requests_per_s": self._requests / seconds, "tokens_per_s": self._tokens / seconds}
        self._reset()
        return row


def weights_digest(model: torch.nn.Module) -> str:
    """A fingerprint of the weights: equal digests, equal weights (ranks in step, exact resume)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
