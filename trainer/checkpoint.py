"""Checkpoints: everything a run needs to continue exactly, loaded without running pickles.

    RUN/checkpoints/step-000120.pt   model, optimizer, position in the data, RNG state
    RUN/checkpoints/latest.json      which one is the newest (written after it, atomically)

A checkpoint also records the dataset spec its model was built for ("spec": the spec's
to_dict() as JSON), so that it is rebuilt with the right tables and heads; one without it
(every default-spec checkpoint, as all from before specs) is the default spec's.

    RUN/checkpoints/step-000120.pt.sha256   the checkpoint's SHA-256, checked when it is loaded

Files are written to a temp name and renamed, so a run killed while saving leaves the
previous checkpoint as the latest. A checkpoint whose bytes no longer match its SHA-256
(a flipped bit that still unzips and loads) counts as unreadable; one without a .sha256
(written before checkpoints had them) loads unchecked. They hold only tensors, numbers and strings, and are
read with `torch.load(weights_only=True)`, which refuses arbitrary pickled objects.

A newest checkpoint that cannot be read (truncated by a full disk, corrupted, missing)
does not end the run: `newest` falls back to the older ones kept beside it (KEEP), newest
first, and says so; each holds its own position in the data, so resuming from it is exact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from longseq.dataset.storage import LocalStorage
from longseq.schemas.contracts import DEFAULT_SPEC
from longseq.schemas.errors import LongseqError
from longseq.schemas.spec import DatasetSpec, SpecError, spec_from_dict

KEEP = 3  # checkpoints kept besides the newest
# what a checkpoint holds; a file that loads without one of these is not a checkpoint of ours
KEYS = ("model", "optimizer", "step", "epoch", "batch_in_epoch", "torch_rng", "config")


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
         config_json: str, spec: DatasetSpec = DEFAULT_SPEC) -> Path:
    directory = _dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{position.step:06d}.pt"
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "step": position.step, "epoch": position.epoch, "batch_in_epoch": position.batch_in_epoch,
        "torch_rng": torch.get_rng_state(), "config": config_json,
    }
    if spec.model_fingerprint != DEFAULT_SPEC.model_fingerprint:  # none recorded reads as the default: its files stay as they were
        state["spec"] = json.dumps(spec.to_dict())
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    # the digest first: a run killed between the two renames leaves a checkpoint that fails its
    # check and is passed over, never one that is trusted unchecked
    digest, tmp_digest = _digest_file(path), _digest_file(tmp)
    tmp_digest.write_text(sha256_of(tmp) + "\n")
    os.replace(tmp_digest, digest)
    os.replace(tmp, path)
    latest = directory / "latest.json"
    tmp_latest = directory / "latest.json.tmp"
    tmp_latest.write_text(json.dumps({"path": path.name, **position.__dict__}))
    os.replace(tmp_latest, latest)
    for old in _by_step(directory)[KEEP + 1:]:
        old.unlink()
        _digest_file(old).unlink(missing_ok=True)
    return path


def _digest_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def sha256_of(path: Path) -> str:
    return LocalStorage().checksum(str(path))  # the SHA-256 the data's files are checked with


def _step_of(path: Path) -> int:
    try:
        return int(path.stem.removeprefix("step-"))
    except ValueError:
        return -1


def _by_step(directory: Path) -> list[Path]:
    """step-*.pt files, newest first (by step number: names stop sorting so past 999,999 steps)."""
    return sorted(directory.glob("step-*.pt"), key=_step_of, reverse=True)


def latest(run_dir: Path) -> Path | None:
    pointer = _dir(run_dir) / "latest.json"
    if not pointer.exists():
        return None
    path = _dir(run_dir) / json.loads(pointer.read_text())["path"]
    if not path.exists():
        raise CheckpointError(f"{pointer} names {path.name}, which is missing")
    return path


def newest(run_dir: Path, warn: Callable[[str], None]) -> tuple[Path, dict] | None:
    """The newest checkpoint that can be read, and its state; None if the run has none.

    latest.json's checkpoint first, then the older ones kept beside it, newest first; each
    one skipped is named through `warn` with why. None readable is a CheckpointError."""
    directory = _dir(run_dir)
    pointer = directory / "latest.json"
    if not pointer.exists():
        return None
    candidates = _by_step(directory)
    try:
        named = directory / json.loads(pointer.read_text())["path"]
        candidates = [named] + [p for p in candidates if _step_of(p) < _step_of(named)]
    except (OSError, ValueError, KeyError, TypeError) as e:  # written atomically, so only by hand or a bad disk
        warn(f"{pointer} is unreadable ({type(e).__name__}: {e}); trying the checkpoints beside it, newest first")
    failures: list[str] = []
    for path in candidates:
        state, problem = _try_load(path)
        if state is None:
            failures.append(f"{path.name} is unreadable ({problem})")
            continue
        if failures:
            warn(f"checkpoint {'; '.join(failures)}; falling back to {path.name}")
        return path, state
    raise CheckpointError(f"no readable checkpoint in {directory}: {'; '.join(failures) or 'none there'}; "
                          "train again in a new run directory")


def _try_load(path: Path) -> tuple[dict | None, str]:
    """The state in a checkpoint file, or None and why it cannot be read."""
    if not path.exists():
        return None, "missing"
    digest = _digest_file(path)
    if digest.exists() and digest.read_text().strip() != sha256_of(path):
        return None, f"its bytes do not match {digest.name}: changed since it was written"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, or one holding objects weights_only refuses
        return None, (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    missing = [k for k in KEYS if k not in state] if isinstance(state, dict) else list(KEYS)
    if missing:
        return None, f"not a longseq checkpoint (no {', '.join(missing)})"
    return state, ""


def load(path: Path) -> dict:
    state, problem = _try_load(path)
    if state is None:
        raise CheckpointError(f"cannot load checkpoint {path}: {problem}")
    return state


def spec_of(state: dict, path: Path) -> DatasetSpec:
    """The dataset spec a checkpoint's model was built for (the default spec if it records none)."""
    if "spec" not in state:
        return DEFAULT_SPEC
    try:
        return spec_from_dict(json.loads(state["spec"]), f"the dataset spec in {path}")
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} records an unreadable dataset spec: {e}") from None
    except SpecError as e:
        raise CheckpointError(str(e)) from None


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
