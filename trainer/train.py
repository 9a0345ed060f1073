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
started on (data.json: the same days of the same builds) unless allowed otherwise. While it
runs, the files it listed are pinned (dataset.published.PinnedFiles): a day rebuilt or
replaced under it stops the run before the next checkpoint or epoch.

The dataset spec comes from the data (DATA/spec.yaml, dataset/spec_record.py): it sets the
model's tasks and side features. Each checkpoint records it; a resume on data of another
spec is refused whatever is allowed, as the model's tables and heads are its spec's.

`max_steps` trains that many steps, going on into further epochs as needed; with `epochs`
also set, the first limit reached stops the run. The lr schedule is sized to the steps the
run will take (`plan_steps`), so its cosine decay ends at the last step.

This module is the loop. Around it: train_config.py (the settings and the lr schedule),
step_plan.py (the steps a run takes), provenance.py (data.json), run.py (the model and
optimizer, fresh or resumed, and one step), train_log.py (train_log.csv, TensorBoard).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from longseq.reader import RequestReader, data_spec, device_batches
from longseq.schemas.contracts import DEFAULT_SPEC
from longseq.schemas.errors import LongseqError
from longseq.schemas.spec import DatasetSpec
from longseq.trainer.distributed import Context, all_have_batch, autocast_for, setup, teardown
from longseq.trainer.model import num_parameters
from longseq.trainer.provenance import DataRecord
from longseq.trainer.run import Run, open_run, train_reader, train_step, weights_digest
from longseq.trainer.step_plan import plan_steps
from longseq.trainer.train_config import TrainConfig
from longseq.trainer.train_log import TrainLog, TrainMeter

if TYPE_CHECKING:
    from tqdm import tqdm

    from longseq.dataset.published import PinnedFiles, PublishedFile


def train(data: str, start, end, run_dir: Path | str, cfg: TrainConfig | None = None,
          log: Callable[[str], None] = print, stop_after: int | None = None, allow_other_data: bool = False) -> dict:
    """Train on the published days [start, end]; resume if run_dir holds checkpoints.

    A resume must read the days and builds the run was started on (RUN/data.json), unless
    allow_other_data, which data.json then records; and data of the spec its checkpoints
    record, always. The spec is the data's (cfg.spec, when set, must be it). stop_after: stop
    (with a checkpoint) after this many steps of this call, as if killed: for tests of resuming."""
    from longseq.dataset.published import PinnedFiles, published_files

    cfg = cfg or TrainConfig()
    run_dir = Path(run_dir)
    spec = data_spec(data, cfg.spec)
    files = published_files(data, start, end, spec=spec)
    pinned = PinnedFiles(files)  # checks their bytes against the manifests just read
    record = DataRecord.read(data, start, end, spec)
    ctx = setup(cfg.device)
    try:
        return _train(files, record, run_dir, cfg, ctx, log, stop_after, allow_other_data, spec, pinned)
    finally:
        teardown(ctx)


def _train(files: list[PublishedFile], record: DataRecord, run_dir: Path, cfg: TrainConfig, ctx: Context,
           log: Callable[[str], None], stop_after: int | None, allow_other_data: bool,
           spec: DatasetSpec = DEFAULT_SPEC, pinned: PinnedFiles | None = None) -> dict:
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
    run = open_run(run_dir, cfg, ctx, plan.total, log, record, allow_other_data, spec)
    run.pinned = pinned
    if ctx.is_main:
        log(f"training {cfg.model_config().arch} ({num_parameters(run.model):,} parameters) on {rows:,} requests, "
            f"{ctx.world} process(es) on {ctx.device} -> {run_dir}")
        log(plan.describe(cfg))
    reader = train_reader(urls, cfg, ctx, spec)
    writer = TrainLog(run_dir) if ctx.is_main else None
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


def _run_epochs(run: Run, reader: RequestReader, meter: TrainMeter, bar: tqdm, writer: TrainLog | None,
                stop_after: int | None) -> bool:
    """Train from run.position to the end of the last epoch or to max_steps, whichever comes
    first (max_steps alone: on through as many epochs as it takes); returns True when
    stop_after steps of this call cut it short (left mid-epoch, as if killed)."""
    cfg, ctx, position = run.cfg, run.ctx, run.position
    steps_now = 0
    epochs = cfg.epoch_limit()
    autocast = autocast_for(ctx.device)
    while epochs is None or position.epoch < epochs:
        if cfg.max_steps is not None and position.step >= cfg.max_steps:  # before opening another epoch's reader
            return False
        run.check_pinned()  # the reader opens the files again
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
