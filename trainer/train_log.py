"""What a run reports as it trains: RUN/train_log.csv and TensorBoard (`TrainLog`, written
by rank 0), from the throughput and mean loss a `TrainMeter` keeps."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import torch

from longseq.reader import RequestBatch
from longseq.trainer import checkpoint


class TrainLog:
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
