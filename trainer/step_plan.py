"""How many steps a run takes, planned before it starts from the Parquet footers of the
published files (row counts per row group), so that the lr schedule ends at its last step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from longseq.schemas.errors import LongseqError
from longseq.trainer.train_config import TrainConfig, reader_config

if TYPE_CHECKING:
    from longseq.dataset.published import PublishedFile


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
    """Requests of each row group, numbered across the files in order (as shards number them)."""
    import pyarrow.parquet as pq

    from longseq.dataset.compact import row_group_requests
    from longseq.dataset.storage import open_input  # escaped file:// URLs and cluster URIs alike

    rows = []
    for url in urls:
        with open_input(url) as f:
            meta = pq.ParquetFile(f).metadata
        rows += row_group_requests(meta)
    return rows
