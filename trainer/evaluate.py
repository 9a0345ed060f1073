"""`longseq evaluate` and `longseq score`: a trained run on published days, at full length.

Both read the run's newest checkpoint and the days in file order with full histories (or
a serving cap, --score-len), each request once. evaluate writes per-task AUC, GAUC and
logloss to RUN/eval/<start>_<end>_len<L>.json and the run's TensorBoard; score writes one
row per target to Parquet. The model is of the dataset spec its checkpoint records (the
default spec without one), and reads only data of that spec: its tasks name the metrics
and the score_<task> columns.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from longseq.schemas.errors import LongseqError, MissingPrerequisiteError
from longseq.schemas.spec import DatasetSpec
from longseq.trainer import checkpoint
from longseq.reader.batch import RequestBatch
from longseq.trainer.distributed import autocast_for, resolve_device
from longseq.trainer.metrics import bootstrap_auc, sigmoid, task_metrics
from longseq.trainer.model import make_model, RankingModel
from longseq.dataset.published import PinnedFiles, published_files, published_hour_files
from longseq.reader.readers import ReaderConfig, data_spec, open_reader
from longseq.trainer.train_config import TrainConfig
from longseq.trainer.provenance import check_model_spec


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # stdout holds the results


def load_model(run_dir: Path | str, device: str | torch.device = "cpu", attention: str = "padded",
               warn: Callable[[str], None] = _warn) -> tuple[RankingModel, TrainConfig, int]:
    """The run's newest readable weights (an unreadable newest checkpoint falls back to the
    one before it, said through warn), in eval mode, with the attention kernel asked for
    (padded or flex: the same numbers), built for the dataset spec the checkpoint records; and
    its config and step."""
    found = checkpoint.newest(Path(run_dir), warn)
    if found is None:
        raise MissingPrerequisiteError(f"no checkpoint in {run_dir}: train first (`longseq train --run-dir {run_dir}`)")
    path, state = found
    cfg = TrainConfig(**json.loads(state["config"]))
    try:
        model = make_model(cfg.model_config(), checkpoint.spec_of(state, path), attention)
    except ValueError as e:
        raise LongseqError(str(e)) from None
    checkpoint.load_weights(model, state, path)
    return model.to(device).eval(), cfg, int(state["step"])


@dataclass
class Scored:
    batch: RequestBatch  # on the host
    logits: np.ndarray  # [T, len(tasks)], the model's spec's tasks


def scored_batches(model: RankingModel, data: str, start, end, max_len: int | None, batch_size: int = 64,
                   device: torch.device = torch.device("cpu"), hour: int | None = None) -> Iterator[Scored]:
    """The published days [start, end] scored, or with `hour` that hour of start (the stream's)."""
    on_gpu = device.type == "cuda"
    config = ReaderConfig(batch_size=batch_size, max_len=max_len, pin_memory=on_gpu).for_scoring()
    spec = data_spec(data, model.spec)
    if hour is None:
        files = published_files(data, start, end, spec=spec)
    else:
        files = published_hour_files(data, start, hour, spec=spec)
        if not files:
            raise MissingPrerequisiteError(f"ds={start} hour={hour:02d} was published without requests")
    pinned = PinnedFiles(files)
    reader = open_reader([f.url for f in files], config, spec=spec)
    with torch.no_grad(), autocast_for(device):
        for batch in reader.batches():
            logits = model(batch.to(device, non_blocking=True)).float().cpu().numpy()
            yield Scored(batch, logits)
    pinned.check()  # no metric or score of bytes that changed during the pass


def evaluate(run_dir: Path | str, data: str, start, end=None, max_len: int | None = None, batch_size: int = 64,
             device: str = "auto", log: Callable[[str], None] = print, bootstrap: int = 200,
             attention: str = "padded", spec: DatasetSpec | str | None = None, hour: int | None = None) -> dict:
    """Per-task metrics of the run's newest weights on [start, end]; logs the table, returns
    the result (also written to RUN/eval/). device: auto, cpu, cuda or cuda:N. bootstrap:
    user resamples behind the 95% AUC intervals (0: none). attention: padded or flex (jagged).
    spec (a spec or its file), when given, must be the data's; the data's must be the model's."""
    device = resolve_device(device)
    model, cfg, step = load_model(run_dir, device, attention)
    _check_spec(model, run_dir, data, spec)
    labels, logits, users = [], [], []
    requests = tokens = 0
    t = time.perf_counter()
    if hour is not None and end not in (None, start):
        raise LongseqError("--hour evaluates one hour of --start: no --end")
    for s in scored_batches(model, data, start, end, max_len, batch_size, device, hour):
        labels.append(s.batch.labels().numpy())
        logits.append(s.logits)
        users.append(np.repeat(s.batch.user_id.numpy(), s.batch.targets.lengths().numpy()))
        requests += s.batch.num_requests
        tokens += s.batch.num_history_tokens
    seconds = time.perf_counter() - t
    if not requests:
        raise MissingPrerequisiteError(f"no requests to evaluate in {start}..{end or start}")
    labels, logits, users = np.concatenate(labels), np.concatenate(logits), np.concatenate(users)
    tasks = model.spec.tasks
    metrics = task_metrics(labels, logits, users, tasks)
    intervals = bootstrap_auc(labels, logits, users, replicates=bootstrap, tasks=tasks) if bootstrap else None
    result = {"run_dir": str(run_dir), "step": step, "arch": cfg.model_config().arch, "start": str(start),
              "end": str(end or start), "max_len": max_len, "requests": requests, "targets": len(users),
              "history_tokens": tokens, "mean_history": tokens / requests, "seconds": seconds, "tasks": metrics,
              "auc_intervals": intervals, "bootstrap_replicates": bootstrap}
    if hour is not None:
        result["hour"] = hour
    span = f"{start}T{hour:02d}" if hour is not None else f"{start}_{end or start}"
    out = Path(run_dir) / "eval" / f"{span}_len{max_len or 'full'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    _to_tensorboard(Path(run_dir), result)
    log(metrics_table(result))
    return result


def _check_spec(model: RankingModel, run_dir: Path | str, data: str, wanted: DatasetSpec | str | None) -> DatasetSpec:
    """The spec to read the data with (`wanted` or the data's): SpecError if `wanted` is not
    the data's spec; OtherDataError if that is not the model's."""
    spec = data_spec(data, wanted)
    check_model_spec(model.spec, spec, run_dir, data)
    return spec


def _to_tensorboard(run_dir: Path, result: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter

    tag = f"eval_{result['start']}_{result['end']}_len{result['max_len'] or 'full'}"
    with SummaryWriter(str(run_dir / "tensorboard")) as writer:
        for task, metrics in result["tasks"].items():
            for name in ("auc", "gauc", "logloss"):
                writer.add_scalar(f"{tag}/{task}/{name}", metrics[name], result["step"])


def metrics_table(result: dict) -> str:
    lines = [f"{result['arch']} at step {result['step']} on {result['start']}..{result['end']}: {result['requests']:,} "
             f"requests, {result['targets']:,} targets, mean history {result['mean_history']:,.0f} events "
             f"(max_len {result['max_len'] or 'full'})",
             f"{'task':<8}  {'AUC':>6}  {'GAUC':>6}  {'logloss':>7}  {'positive':>8}  AUC 95% interval"]
    intervals = result.get("auc_intervals") or {}
    span = lambda key: f"[{intervals[key][0]:.4f}, {intervals[key][1]:.4f}]" if key in intervals else ""  # noqa: E731
    for task, m in result["tasks"].items():
        lines.append(f"{task:<8}  {m['auc']:6.4f}  {m['gauc']:6.4f}  {m['logloss']:7.4f}  {m['positive_rate']:8.3f}  "
                     f"{span(task)}".rstrip())
    mean = sum(m["auc"] for m in result["tasks"].values()) / len(result["tasks"])
    lines.append(f"mean AUC {mean:.4f} {span('mean')}".rstrip()
                 + (f" ({result['bootstrap_replicates']} resamples of users)" if intervals else ""))
    return "\n".join(lines)


def score(run_dir: Path | str, data: str, start, end, out: Path | str, max_len: int | None = None,
          batch_size: int = 64, device: str = "auto", attention: str = "padded",
          spec: DatasetSpec | str | None = None, overwrite: bool = False, log_names: bool = False) -> int:
    """Write one row per target (request_id, user_id, request_ts, position in the request,
    item_id, score_<task> probabilities for the model's spec's tasks) to a Parquet file;
    return the row count. spec: as for evaluate. log_names: the id and time columns under
    the logs' own names (the data's spec's `columns`, or `spec`'s), to join the scores to
    the logs as they are. An existing `out` is refused unless overwrite; the file is written
    beside it and renamed into place once complete, so a failed run leaves no partial file
    and never a half-replaced one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    if out.is_dir():
        raise LongseqError(f"score: {out} is a directory; --output names the Parquet file to write")
    if out.exists() and not overwrite:
        raise LongseqError(f"score: {out} exists; pass --overwrite to replace it")
    device = resolve_device(device)
    model, _, _ = load_model(run_dir, device, attention)
    read_spec = _check_spec(model, run_dir, data, spec)
    schema = pa.schema([("request_id", pa.string()), ("user_id", pa.int64()), ("request_ts", pa.int64()),
                        ("target_index", pa.int32()), ("item_id", pa.int64()),
                        *((f"score_{task}", pa.float32()) for task in model.spec.tasks)])
    # target_index and score_<task> are the scores' own columns, in no log: they keep their names
    names = read_spec.raw_names if log_names else {}
    written = pa.schema([f.with_name(names.get(f.name, f.name)) for f in schema])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    rows = 0
    try:
        with pq.ParquetWriter(str(partial), written, compression="zstd") as writer:
            for s in scored_batches(model, data, start, end, max_len, batch_size, device):
                b, per_request = s.batch, s.batch.targets.lengths().numpy()
                probs = sigmoid(s.logits)
                table = pa.table({
                    "request_id": np.repeat(b.request_id, per_request),
                    "user_id": np.repeat(b.user_id.numpy(), per_request),
                    "request_ts": np.repeat(b.request_ts.numpy(), per_request),
                    "target_index": np.concatenate([np.arange(n) for n in per_request]).astype(np.int32)
                    if len(per_request) else np.zeros(0, np.int32),
                    "item_id": b.targets["item_id"].numpy(),
                    **{f"score_{task}": probs[:, i].astype(np.float32) for i, task in enumerate(model.spec.tasks)},
                }, schema=schema)
                writer.write_table(table.rename_columns(written.names))
                rows += table.num_rows
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return rows
