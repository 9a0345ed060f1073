"""The settings of a training run (`TrainConfig`, read from --train-config files and flags),
the learning-rate schedule they set, and how training reads with them."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from longseq.features.lengths import LengthSampler
from longseq.reader import ReaderConfig
from longseq.schemas.errors import LongseqError
from longseq.trainer.model import check_kernel
from longseq.trainer.model_config import DEFAULT_PRESET, PRESETS, ModelConfig
from longseq.trainer.optimizers import EMBEDDING_OPTIMIZERS


# the default length-bucket pool of training on sampled windows: at the U-shaped lengths its
# batches pad to about a fifth of the keys of random batches, and validation AUC did not drop
# (docs/BENCHMARKS.md, Extrapolation)
BUCKET_POOL = 512

# TrainConfig fields added after configs were first saved, at the value that does what
# training did before them: a saved config without one is read so, whatever the default is now
ADDED_FIELDS = {"bucket_pool": 0, "embedding_optimizer": "adamw", "embedding_lr": None, "compile": False,
                "attention": "padded", "spec": None, "group_user_days": False}


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
    # length buckets: batch requests of similar (sampled) history length from pools of this many,
    # so that a batch pads to about its own lengths (0: off). None: BUCKET_POOL when training on
    # sampled windows (truncation) and not grouping user-days, else off (`pool`)
    bucket_pool: int | None = None
    group_user_days: bool = False  # a user-day's requests in consecutive batches, in request_ts order (user-days shuffled)
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
        if (self.bucket_pool or 0) < 0:
            raise LongseqError(f"bucket_pool must be >= 0 (0: off), got {self.bucket_pool}")
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

    def pool(self) -> int:
        """The length-bucket pool training reads with: bucket_pool, or for None its default."""
        if self.bucket_pool is not None:
            return self.bucket_pool
        return BUCKET_POOL if self.truncation and not self.group_user_days else 0

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
        return not self.differences(other_json)

    def differences(self, other_json: str) -> list[str]:
        """How a config saved as JSON differs from this one, a setting each ("lr 0.003, now
        0.01"); empty when the settings are the same."""
        try:
            saved = TrainConfig(**{**ADDED_FIELDS, **json.loads(other_json)})._canonical()
        except (TypeError, ValueError, LongseqError) as e:
            return [f"its saved settings cannot be read ({type(e).__name__}: {e})"]
        now = self._canonical()
        return [f"{f.name} {getattr(saved, f.name)!r}, now {getattr(now, f.name)!r}" for f in dataclasses.fields(self)
                if getattr(saved, f.name) != getattr(now, f.name)]

    def _canonical(self) -> "TrainConfig":
        # epochs unset without max_steps is one epoch: a config saved with epochs 1 (as all were
        # before epochs could be unset) has the same settings. The spec file only says where the
        # spec was read from: the spec itself is checked against the checkpoint's (check_model_spec)
        epochs = self.epoch_limit() if self.max_steps is None else self.epochs
        # bucket_pool None is its default's value: a config that spells that value out is the same
        return dataclasses.replace(self, epochs=epochs, spec=None, bucket_pool=self.pool())

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
        bucket_pool=cfg.pool(), group_user_days=cfg.group_user_days)
