"""Checkpoints: everything a run needs to continue exactly, loaded without running pickles.

    RUN/checkpoints/step-000120.pt   model, optimizer, position in the data, RNG state
    RUN/checkpoints/latest.json      which one is the newest (written after it, atomically)

Files are written to a temp name and renamed, so a run killed while saving leaves the
previous checkpoint as the latest. They hold only tensors, numbers and strings, and are
read with `torch.load(weights_only=True)`, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from schemas.errors import LongseqError

KEEP = 3  # checkpoints kept besides the newest


class CheckpointError(LongseqError):
    """A checkpoint that is missing, unreadable or from another configuration."""


@dataclass
class Position:
    """Where training stands: steps taken, and batches consumed of the current epoch."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def _dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, position: Position,
         config_json: str) -> Path:
    directory = _dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{position.step:06d}.pt"
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "step": position.step, "epoch": position.epoch, "batch_in_epoch": position.batch_in_epoch,
        "torch_rng": torch.get_rng_state(), "config": config_json,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    latest = directory / "latest.json"
    tmp_latest = directory / "latest.json.tmp"
    tmp_latest.write_text(json.dumps({"path": path.name, **position.__dict__}))
    os.replace(tmp_latest, latest)
    for old in sorted(directory.glob("step-*.pt"))[:-(KEEP + 1)]:
        old.unlink()
    return path


def latest(run_dir: Path) -> Path | None:
    pointer = _dir(run_dir) / "latest.json"
    if not pointer.exists():
        return None
    path = _dir(run_dir) / json.loads(pointer.read_text())["path"]
    if not path.exists():
        raise CheckpointError(f"{pointer} names {path.name}, which is missing")
    return path


def load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, or one holding objects weights_only refuses
        raise CheckpointError(f"cannot load checkpoint {path}: {str(e).splitlines()[0][:300]}") from None


def load_weights(model: torch.nn.Module, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:  # written by another version of the model code
        detail = " ".join(str(e).split())[:400]
        raise CheckpointError(f"{path} does not fit this version of the model (train it again in a new run "
                              f"directory): {detail}") from None


def restore(state: dict, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Position:
    load_weights(model, state, path)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return Position(int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"]))
