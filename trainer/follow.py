"""`longseq train --follow`: online training on the hours the stream publishes (docs/STREAMING.md).

The run takes the published hours (dataset/published.py) in order from its first one, and
trains one pass over each as it appears, waiting for the next. Hour k of the run is epoch k
of its checkpoint (`Position.epoch`): after each hour a checkpoint is saved, and a stop
(SIGTERM, SIGINT) saves one mid-hour, so a resumed run skips exactly the batches it already
trained on and ends with the weights of a run never stopped. The learning rate warms up, then
stays at `lr` (the cosine schedule of `longseq train` needs an end that a stream has not).

RUN/follow.json names the hours trained (with their files' SHA-256) and the hour in
training, so which hour comes next never depends on what is published now: a trained hour
that is unpublished is said once and not trained again, and a run stopped in an hour that
is since unpublished or published with other files is refused. While an hour trains, its
files are pinned (dataset.published.PinnedFiles): a change stops the run before its next
checkpoint.

With `progressive`, each hour is first scored by the model trained on the hours before it
(progressive validation: every score is out of sample) and its metrics are written to
RUN/progressive/ds=D/hour=HH.json before the model trains on it.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from longseq.dataset.published import PinnedFiles, published_hour_files, published_hours
from longseq.schemas.errors import LongseqError
from longseq.trainer.distributed import autocast_for, setup, teardown
from longseq.trainer.metrics import task_metrics
from longseq.reader.readers import ReaderConfig, data_spec, open_reader
from longseq.trainer.train_config import TrainConfig
from longseq.trainer.train_log import TrainMeter
from longseq.trainer.run import open_run, train_reader, train_step, weights_digest

# A schedule "sized" to this many steps never decays: after warmup the lr stays at cfg.lr.
FOLLOW_SCHEDULE_STEPS = 10**15
FOLLOW_FILE = "follow.json"


def _hour_key(day: dt.date, hour: int) -> str:
    return f"{day.isoformat()}T{hour:02d}"


def follow(data: str, run_dir: Path | str, cfg: TrainConfig | None = None, log: Callable[[str], None] = print,
           poll_s: float = 30.0, exit_when_idle_s: float | None = None, progressive: bool = False,
           first_hour: tuple[dt.date, int] | None = None, last_day: dt.date | None = None,
           stop: threading.Event | None = None, stop_after_steps: int | None = None) -> dict:
    """Train on published hours from first_hour (default: the first published) as they come,
    until stopped (`stop`, SIGTERM, SIGINT), until every hour of last_day is trained, or until
    no new hour came for exit_when_idle_s seconds; return a summary. stop_after_steps: stop
    after that many steps of this call (tests: as if a signal came then)."""
    cfg = cfg or TrainConfig()
    run_dir = Path(run_dir)
    spec = data_spec(data, cfg.spec)
    stop = stop or threading.Event()
    ctx = setup(cfg.device)
    if ctx.distributed:
        raise LongseqError("train --follow runs in one process")
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        record = _follow_record(run_dir, data, first_hour)
        run = open_run(run_dir, cfg, ctx, FOLLOW_SCHEDULE_STEPS, log, spec=spec)
        _reconcile(record, run, run_dir)
        trained = {h["hour"] for h in record["hours"]}
        first = _parse_key(record["first_hour"]) if record["first_hour"] else None
        meter, steps_now, idle_since, gone = TrainMeter(), 0, time.monotonic(), set()
        autocast = autocast_for(ctx.device)
        while not stop.is_set():
            hours = [h for h in published_hours(data) if first is None or h >= first]
            if hours and first is None:
                first = hours[0]
                record["first_hour"] = _hour_key(*first)
            gone = _note_vanished(record, {_hour_key(*h) for h in hours}, gone, log)
            todo = [h for h in hours if _hour_key(*h) not in trained]
            if run.position.batch_in_epoch:  # stopped mid-hour: that hour first, whatever came since
                todo = _resume_mid_hour(record, todo, data)
            if last_day is not None and _hour_key(last_day, 23) in trained and \
                    not any(day <= last_day for day, _ in todo):
                break  # every hour of the last day is trained
            if not todo:
                if exit_when_idle_s is not None and time.monotonic() - idle_since >= exit_when_idle_s:
                    break
                stop.wait(poll_s)
                continue
            day, hour = todo[0]
            files = published_hour_files(data, day, hour, spec=spec)
            run.pinned = PinnedFiles(files)  # held to these bytes until the hour's checkpoint
            urls = [f.url for f in files]
            if run.position.batch_in_epoch == 0:
                record["current"] = {"hour": _hour_key(day, hour), "requests": sum(f.rows for f in files),
                                     "sha256": [f.sha256 for f in files]}
                _write_record(run_dir, record)
            if progressive and urls and run.position.batch_in_epoch == 0:
                _progressive(run, urls, spec, run_dir, day, hour, log)
            if urls:
                batches = train_reader(urls, cfg, ctx, spec).batches(run.position.epoch)
                for _ in range(run.position.batch_in_epoch):  # resuming mid-hour: those batches again, skipped
                    next(batches, None)
                for batch in batches:
                    _, loss, _lr = train_step(run, batch, autocast)
                    run.position.step += 1
                    run.position.batch_in_epoch += 1
                    steps_now += 1
                    meter.update(batch, loss)
                    if run.position.step % cfg.checkpoint_every == 0:
                        run.save()
                    if stop_after_steps is not None and steps_now >= stop_after_steps:
                        stop.set()
                    if stop.is_set():
                        break
                if stop.is_set():
                    run.save()  # mid-hour: the resumed run skips the batches done
                    log(f"stopped in ds={day} hour={hour:02d} after {run.position.batch_in_epoch} batch(es); "
                        f"checkpoint saved, resume with the same command")
                    break
            run.position.epoch += 1
            run.position.batch_in_epoch = 0
            if urls:  # an empty hour changes no weight: redoing it after a restart costs nothing
                run.save()
            run.pinned = None
            _finish_hour(record, run.position.step)
            _write_record(run_dir, record)
            trained.add(_hour_key(day, hour))
            idle_since = time.monotonic()
            log(f"trained on ds={day} hour={hour:02d}: {sum(f.rows for f in files):,} requests, step {run.position.step}")
        summary = {"hours_trained": run.position.epoch, "steps": run.position.step, "stopped": stop.is_set(),
                   "requests_seen": meter.requests_seen, "weights_sha256": weights_digest(run.model),
                   "checkpoint": str(run.last_good) if run.last_good else None}
        (run_dir / "follow_summary.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        teardown(ctx)


def _parse_key(key: str) -> tuple[dt.date, int]:
    return dt.date.fromisoformat(key[:10]), int(key[11:])


def _finish_hour(record: dict, step: int) -> None:
    """Move the hour in training (record["current"]) to the trained hours."""
    record["hours"].append({**record.pop("current"), "step": step})


def _reconcile(record: dict, run, run_dir: Path) -> None:
    """Make follow.json and the checkpoint agree after a stop at any point. Hour k trained is
    epoch k of the checkpoint: a checkpoint one hour ahead was saved after its hour and
    before the record said so (the hour in training is then done); one behind stopped after
    hours without requests, which changed no weight (it counts them, so that the reader's
    seeds stay those of a run never stopped)."""
    done, epoch = len(record["hours"]), run.position.epoch
    if epoch == done + 1 and run.position.batch_in_epoch == 0 and record.get("current"):
        _finish_hour(record, run.position.step)
        _write_record(run_dir, record)
    elif epoch < done and not any(h["requests"] for h in record["hours"][epoch:]):
        run.position.epoch = done
    elif epoch != done:
        raise LongseqError(f"{run_dir / FOLLOW_FILE} records {done} hour(s) trained, its newest checkpoint {epoch}: "
                           f"they were changed by hand; follow into a new --run-dir")


def _resume_mid_hour(record: dict, todo: list[tuple[dt.date, int]], data: str) -> list[tuple[dt.date, int]]:
    """The hour a stop interrupted comes first; it must still be published, with the same files."""
    current = record.get("current")
    if current is None:  # follow.json from before it named the hour in training
        return todo
    hour = _parse_key(current["hour"])
    if hour not in todo:
        raise LongseqError(f"the run stopped in the middle of hour {current['hour']}, which is no longer published "
                           f"in {data}: its checkpoint holds part of it. Publish the hour again, or follow into a new "
                           f"--run-dir")
    if [f.sha256 for f in published_hour_files(data, *hour)] != current["sha256"]:
        raise LongseqError(f"the run stopped in the middle of hour {current['hour']}, which was published again with "
                           f"other files since: its checkpoint holds part of the old ones. Follow into a new --run-dir")
    return [hour] + [h for h in todo if h != hour]


def _note_vanished(record: dict, published: set[str], said: set[str], log: Callable[[str], None]) -> set[str]:
    """Say once of each trained hour that is no longer published: it stays in the weights and
    is not trained again (republished, it is not trained again either)."""
    gone = {h["hour"] for h in record["hours"]} - published
    for key in sorted(gone - said):
        log(f"hour {key} was trained but is no longer published; its training stays in the weights, and the hour is "
            f"not trained again if it comes back")
    return gone


def _follow_record(run_dir: Path, data: str, first_hour: tuple[dt.date, int] | None) -> dict:
    """RUN/follow.json: the data and the first hour of the run; one run follows one stream."""
    path = run_dir / FOLLOW_FILE
    wanted = None if first_hour is None else _hour_key(*first_hour)
    if path.exists():
        record = json.loads(path.read_text())
        if record["data"] != str(Path(data).resolve()) or (wanted and record["first_hour"] != wanted):
            raise LongseqError(f"{run_dir} follows {record['data']} from {record['first_hour']}: resume it with those, "
                               f"or follow into a new --run-dir")
        return record
    if any(run_dir.glob("checkpoints/*")):
        raise LongseqError(f"{run_dir} holds a run of `longseq train`: follow into a new --run-dir")
    record = {"data": str(Path(data).resolve()), "first_hour": wanted, "hours": []}
    _write_record(run_dir, record)
    return record


def _write_record(run_dir: Path, record: dict) -> None:
    temp = run_dir / f".{FOLLOW_FILE}.tmp"
    temp.write_text(json.dumps(record, indent=1))
    temp.replace(run_dir / FOLLOW_FILE)


def _progressive(run, urls: list[str], spec, run_dir: Path, day: dt.date, hour: int, log: Callable[[str], None]) -> None:
    """Score the hour with the model as it is, before it trains on the hour."""
    model = run.model
    model.eval()
    labels, logits, users = [], [], []
    reader = open_reader(urls, ReaderConfig(batch_size=64).for_scoring(), spec=spec)
    with torch.no_grad():
        for batch in reader.batches():
            logits.append(model(batch.to(run.ctx.device)).float().cpu().numpy())
            labels.append(batch.labels().numpy())
            users.append(np.repeat(batch.user_id.numpy(), batch.targets.lengths().numpy()))
    model.train()
    metrics = task_metrics(np.concatenate(labels), np.concatenate(logits), np.concatenate(users), spec.tasks)
    result = {"ds": day.isoformat(), "hour": hour, "step": run.position.step, "targets": int(sum(map(len, users))),
              "tasks": metrics}
    out = run_dir / "progressive" / f"ds={day.isoformat()}" / f"hour={hour:02d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    mean = np.nanmean([m["auc"] for m in metrics.values()])
    log(f"progressive ds={day} hour={hour:02d}: mean AUC {mean:.4f} over {result['targets']:,} targets (step "
        f"{run.position.step}, before training on it)")
