"""RequestBatch: B feed requests, each with one history and its targets, as jagged tensors.

Like TorchRec's KeyedJaggedTensor, each side is a set of flat `values` tensors sharing one
`offsets` tensor of B + 1 entries: request b's history is values[offsets[b]:offsets[b+1]].
Nothing is padded, so a request with 100 events carries 100 tokens and one with 10,000
carries 10,000; the model runs the history once per request and shares it among that
request's targets (request level batching).

    history keys: item_id, author_id, event_ts, action, the spec's history features  (hist_* lists)
    target keys:  item_id, author_id, the spec's target features, one label per task  (tgt_* lists)

(the default spec's tasks are finish, skip, like, comment; it has no features).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from longseq.schemas.contracts import HIST_PREFIX, TASKS, TGT_PREFIX
from longseq.reader.chunks import RequestChunk


@dataclass
class Jagged:
    """Aligned variable-length features of B requests: one offsets tensor, flat values."""

    offsets: torch.Tensor  # [B + 1] int64, offsets[0] == 0
    values: dict[str, torch.Tensor]  # name -> [offsets[-1]]
    # the total and the longest length, as host ints: a batch on a GPU needs them for its
    # shapes, and reading them from device offsets would stall the host until the GPU is idle
    total: int = -1
    max_length: int = -1

    def __post_init__(self) -> None:
        if self.total < 0 or self.max_length < 0:
            lengths = self.lengths()
            self.total, self.max_length = int(self.offsets[-1]), int(lengths.max()) if len(lengths) else 0

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.values[name]

    def lengths(self) -> torch.Tensor:  # [B]
        return self.offsets[1:] - self.offsets[:-1]

    def segment_ids(self) -> torch.Tensor:  # [N]: which request each value belongs to
        return torch.repeat_interleave(torch.arange(len(self.offsets) - 1, device=self.offsets.device), self.lengths(),
                                       output_size=self.total)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Jagged":
        return Jagged(self.offsets.to(device, non_blocking=non_blocking),
                      {k: v.to(device, non_blocking=non_blocking) for k, v in self.values.items()},
                      self.total, self.max_length)

    def pin_memory(self) -> "Jagged":
        return Jagged(self.offsets.pin_memory(), {k: v.pin_memory() for k, v in self.values.items()},
                      self.total, self.max_length)


@dataclass
class RequestBatch:
    request_id: np.ndarray  # [B] str: ids stay on the host (scoring output, debugging)
    user_id: torch.Tensor  # [B] int64
    request_ts: torch.Tensor  # [B] int64, ms since epoch
    history: Jagged  # item_id, author_id, event_ts (int64), action (int32), features (int64 / float32)
    targets: Jagged  # item_id, author_id (int64), features, one int8 label per task
    tasks: tuple[str, ...] = TASKS  # the spec's, in bit and head order

    @property
    def num_requests(self) -> int:
        return len(self.request_ts)

    @property
    def num_history_tokens(self) -> int:
        return self.history.total

    @property
    def num_targets(self) -> int:
        return self.targets.total

    def labels(self) -> torch.Tensor:  # [T, len(tasks)] float32
        return torch.stack([self.targets[t] for t in self.tasks], dim=1).float()

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "RequestBatch":
        return RequestBatch(self.request_id, self.user_id.to(device, non_blocking=non_blocking),
                            self.request_ts.to(device, non_blocking=non_blocking),
                            self.history.to(device, non_blocking), self.targets.to(device, non_blocking), self.tasks)

    def tensors(self) -> list[torch.Tensor]:
        return [self.user_id, self.request_ts, self.history.offsets, *self.history.values.values(),
                self.targets.offsets, *self.targets.values.values()]

    def pin_memory(self) -> "RequestBatch":
        """Page-locked host copy, so that `.to(cuda, non_blocking=True)` overlaps compute."""
        return RequestBatch(self.request_id, self.user_id.pin_memory(), self.request_ts.pin_memory(),
                            self.history.pin_memory(), self.targets.pin_memory(), self.tasks)


def device_batches(batches: Iterator[RequestBatch], device: torch.device) -> Iterator[tuple[RequestBatch, RequestBatch]]:
    """(host batch, the same on `device`). On CUDA the next batch is copied on a side stream
    while the caller's step on the current one runs, so that the step never waits for a copy."""
    if device.type != "cuda":
        for batch in batches:
            yield batch, batch.to(device)
        return
    side = torch.cuda.Stream(device)

    def start_copy() -> tuple[RequestBatch, RequestBatch] | None:
        host = next(batches, None)
        if host is None:
            return None
        with torch.cuda.stream(side):
            return host, host.to(device, non_blocking=True)

    pending = start_copy()
    while pending is not None:
        compute = torch.cuda.current_stream(device)
        compute.wait_stream(side)  # the copy of this batch is done before the step uses it
        host, on_device = pending
        for t in on_device.tensors():  # its memory stays the step's until the step is done with it
            t.record_stream(compute)
        pending = start_copy()  # the next copy overlaps the caller's step
        yield host, on_device


def _tensor(a: np.ndarray) -> torch.Tensor:
    # Shares memory with the reader's buffers, which numpy marks read-only because Arrow
    # handed them over; nothing else holds them, so the batch may own them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


def batch_from_chunk(chunk: RequestChunk, tasks: tuple[str, ...] = TASKS) -> RequestBatch:
    return RequestBatch(
        request_id=chunk.request["request_id"],
        user_id=_tensor(chunk.request["user_id"]),
        request_ts=_tensor(chunk.request["request_ts"]),
        history=Jagged(_tensor(chunk.hist_offsets), {k.removeprefix(HIST_PREFIX): _tensor(v) for k, v in chunk.hist.items()}),
        targets=Jagged(_tensor(chunk.tgt_offsets), {k.removeprefix(TGT_PREFIX): _tensor(v) for k, v in chunk.tgt.items()}),
        tasks=tasks,
    )
