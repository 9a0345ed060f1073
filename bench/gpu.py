"""The GPU trainer's checks and goals, as one prepared command for a GPU host.

    longseq bench gpu --prepare DIR [--work DIR]    # here: two built days to carry there
    longseq bench gpu --data DIR [--output FILE]       # there: checks and measurements, a few minutes

A GPU host may have torch, numpy and pyarrow only (docs/BENCHMARKS.md), so this needs
nothing else: the data is built here and carried (about 25 MB), read with the pyarrow
reader. It runs:

1. the checks of bench/gpu_checks.py (what tests/test_gpu.py runs under pytest);
2. training steps of preset paper at U-shaped lengths (128 requests, 10 targets each) with
   its full vocabularies and row-wise Adagrad tables, with and without torch.compile:
   ms/step and MFU, counting model FLOPs only (each request's own history, no padding;
   torch's FLOP counter on the meta device, one request at a time) against 989 TFLOP/s;
3. each optional model extension's step time against the paper's model;
4. the reader against the GPU at preset small: requests/s the reader supplies, and
   requests/s a training step consumes, on the same batches;
5. scoring one request with a 10,000-event history and 16 targets at preset paper.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import os
import shutil
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from longseq.bench import bench_parser
from longseq.cli.arguments import (
    add_data, add_device, add_output, add_spec, add_work, dataset_spec, local_path, positive_int,
)
from longseq.trainer.model_config import PRESETS

PEAK_FLOPS = 989e12  # H200 dense bf16, the MFU denominator
WARMUP = 3  # untimed steps per setting


def prepare(out: Path, work: Path, spec=None) -> None:
    """Copy the quick quality sample's last two published days (built here, in the shape of
    `spec`) to `out`."""
    from longseq.bench.long_history import open_sample
    from longseq.dataset.layout import day_range

    _, _, data, windows, _ = open_sample(True, work, spec)
    days = day_range(windows.valid[0], windows.test[1])
    size = copy_days(data, out, days)
    print(f"{out}: published days {days[0]}..{days[-1]}, {size / 2**20:.0f} MiB: carry it to the GPU host")


def copy_days(data: Path, out: Path, days) -> int:
    """Copy published days (their records, build reports and manifests: readers check each
    manifest against its build report) of a build's output, and the spec it records, to
    `out`; bytes copied."""
    from longseq.dataset.layout import BuildLayout

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec_file = Path(BuildLayout(str(data)).spec_file)
    if spec_file.exists():  # without it the reader would take the default spec
        shutil.copy2(spec_file, Path(BuildLayout(str(out)).spec_file))
    for d in days:
        for part in ("requests", "reports", "published"):
            shutil.copytree(Path(data) / part / f"ds={d}", out / part / f"ds={d}")
    return sum(f.stat().st_size for f in out.rglob("*") if f.is_file())


def useful_flops(model_cfg, hist_lengths: list[int], tgt_lengths: list[int]) -> float:
    """FLOPs of forward + backward with each request alone (no padding), summed: the work
    the model needs, whatever the kernels pad. Counted on the meta device (shapes only)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from longseq.reader.testing import random_batch
    from longseq.trainer.model import loss_fn, make_model, RankingModel

    with torch.device("meta"):
        model = make_model(dataclasses.replace(model_cfg, item_buckets=64, author_buckets=64))
    memo: dict[tuple[int, int], float] = {}
    for n, m in zip(hist_lengths, tgt_lengths):
        if (n, m) not in memo:
            batch = random_batch([n], [m]).to("meta")
            with FlopCounterMode(display=False) as counter:
                loss_fn(model(batch), batch).backward()
            memo[(n, m)] = counter.get_total_flops()
    return float(sum(memo[(n, m)] for n, m in zip(hist_lengths, tgt_lengths)))


def _run(cfg, device, spec=None):
    """A fresh training run's state on `device` (the model of `spec`, the default one when
    None), as `longseq train` opens it, in a scratch directory (trainer.train's own step is
    what gets timed)."""
    from longseq.schemas.spec import resolve_spec
    from longseq.trainer.distributed import Context
    from longseq.trainer.run import open_run

    scratch = tempfile.mkdtemp(prefix="bench-gpu-")
    atexit.register(shutil.rmtree, scratch, True)  # the run's files are not the benchmark's output
    return open_run(Path(scratch), cfg, Context(0, 1, device), 10**6, log=lambda m: None, spec=resolve_spec(spec))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(cfg, batches: list, device, steps: int, spec=None) -> float:
    """Median seconds of trainer.run.train_step over `batches` (cycled, of `spec`), after
    WARMUP steps."""
    from longseq.reader.batch import device_batches
    from longseq.trainer.distributed import autocast_for
    from longseq.trainer.run import train_step

    run = _run(cfg, device, spec)
    autocast = autocast_for(device)
    pairs = device_batches(iter(batches * ((steps + WARMUP) // len(batches) + 1)), device)
    times = []
    for i, (_, batch) in zip(range(steps + WARMUP), pairs):
        t = time.perf_counter()
        train_step(run, batch, autocast)
        run.position.step += 1
        _sync(device)
        if i >= WARMUP:
            times.append(time.perf_counter() - t)
    run.require_finite(cfg.lr)
    return statistics.median(times)


def _ushaped_batch(seed: int, requests: int, targets: int = 10):
    import numpy as np
    import torch

    from longseq.features.lengths import LengthSampler
    from longseq.reader.testing import random_batch

    lengths = LengthSampler().sample(np.random.default_rng(seed), requests).tolist()
    batch = random_batch(lengths, [targets] * requests, seed=seed)
    return batch.pin_memory() if torch.cuda.is_available() else batch


def measure_training(device, preset: str, requests: int, steps: int, compile_too: bool, lines: list[str]) -> None:
    import torch

    from longseq.trainer.model_config import EMBEDDING_MATCH, EXTENSIONS, PRESETS
    from longseq.trainer.train_config import TrainConfig

    batches = [_ushaped_batch(s, requests) for s in range(2)]
    flops = statistics.mean(useful_flops(PRESETS[preset], b.history.lengths().tolist(), b.targets.lengths().tolist())
                            for b in batches)
    base = dict(preset=preset, embedding_optimizer="rowwise_adagrad", lr=1e-4)
    lines += ["", f"Training, preset {preset} (its full vocabularies), {requests} requests at U-shaped lengths "
              f"(mean {statistics.mean(b.num_history_tokens for b in batches) / requests:,.0f} events), 10 targets each, "
              f"{'bf16' if device.type == 'cuda' else 'fp32'}; model FLOPs {flops / 1e12:.2f} TFLOP per step:", "",
              "| setting | ms/step | requests/s | MFU | step time / paper's |", "|---|---:|---:|---:|---:|"]
    settings = {"the paper's STCA, row-wise Adagrad tables": {},
                "+ length-scaled logits": {"model": {"length_scaled": True}},
                "+ id-match prior": {"model": {"match_prior": EXTENSIONS["match_prior"]}},
                "+ embedding-match prior": {"model": dict(EMBEDDING_MATCH)},
                "+ hash embeddings (2)": {"model": {"hashes": 2}},
                "+ QK-norm": {"model": {"qk_norm": 10.0}},
                "no null slot": {"model": {"null_slot": False}},
                "flex attention (jagged)": {"attention": "flex"},
                "flex attention + id-match prior (score_mod)": {"attention": "flex", "model": {"match_prior": 1.0}},
                "dense AdamW tables": {"embedding_optimizer": "adamw"}}
    if device.type != "cuda":  # FlexAttention has no CPU backward
        settings = {k: v for k, v in settings.items() if v.get("attention") != "flex"}
    if compile_too:
        settings["+ torch.compile"] = {"compile": True}  # last: its first steps compile
    reference = None
    for name, overrides in settings.items():
        try:
            seconds = step_seconds(TrainConfig(**{**base, **overrides}), batches, device, steps)
        except Exception as e:  # one setting failing (e.g. compile) must not hide the others
            lines.append(f"| {name} | failed: {str(e).splitlines()[0][:120]} | | | |")
            continue
        reference = reference or seconds
        lines.append(f"| {name} | {seconds * 1e3:,.0f} | {requests / seconds:,.0f} | {flops / seconds / PEAK_FLOPS:.0%} | "
                     f"{seconds / reference:.2f} |")
    if device.type == "cuda":
        lines.append(f"\nPeak GPU memory over these steps: {torch.cuda.max_memory_allocated(device) / 2**30:,.1f} GiB.")


def measure_reader(data: str, start, end, device, steps: int, lines: list[str]) -> None:
    """Requests/s the reader supplies (a full pass, on the host) and a training step
    consumes at preset small (the same batches, already read)."""
    from longseq.reader.readers import data_spec, open_published
    from longseq.trainer.train_config import reader_config, TrainConfig

    cfg = TrainConfig(preset="small", batch_size=128, lr=1e-3)
    t = time.perf_counter()
    batches = list(open_published(data, start, end, reader_config(cfg, cuda=device.type == "cuda"),
                                  engine="arrow").batches(0))
    read = sum(b.num_requests for b in batches) / (time.perf_counter() - t)
    seconds = step_seconds(cfg, batches[:steps + WARMUP], device, steps, data_spec(data))
    used = statistics.mean(b.num_requests for b in batches[:steps + WARMUP]) / seconds
    lines += ["", f"Reader against GPU at preset small (batches of 128 requests, U-shaped windows, {data}): the reader "
              f"supplies {read:,.0f} requests/s from one process; a training step consumes {used:,.0f} requests/s: "
              f"{read / used:.1f}x."]


def measure_scoring(device, preset: str, lines: list[str]) -> None:
    import torch

    from longseq.reader.testing import random_batch
    from longseq.trainer.distributed import autocast_for
    from longseq.trainer.model import make_model
    from longseq.trainer.model_config import PRESETS

    with device:
        model = make_model(PRESETS[preset]).eval()
    batch = random_batch([10_000], [16]).to(device)
    times = []
    with torch.no_grad(), autocast_for(device):
        for i in range(20 + WARMUP):
            t = time.perf_counter()
            model(batch)
            _sync(device)
            if i >= WARMUP:
                times.append(time.perf_counter() - t)
    lines.append(f"\nScoring one request with a 10,000-event history and 16 targets, preset {preset}: "
                 f"{statistics.median(times) * 1e3:.1f} ms (median of 20).")


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench gpu --help`)."""

    ap.add_argument("--prepare", type=local_path, metavar="DIR", help="write the data to carry to DIR, then stop")
    add_work(ap, "bench-work/quality", "where --prepare builds the sample")
    add_spec(ap, "dataset spec of the sample --prepare builds (default: the default spec)")
    add_data(ap, "data written by --prepare (default bench-work/gpu-data)", required=False)
    add_output(ap, "also write the report to this file")
    ap.add_argument("--skip", default="",
                    help="comma-separated parts to leave out: checks, training, compile, reader, scoring")
    add_device(ap)
    ap.add_argument("--preset", default="paper", choices=list(PRESETS),
                    help="the model of the training and scoring parts (default paper)")
    ap.add_argument("--batch-size", type=positive_int, default=128, help="requests per training batch (default 128)")
    ap.add_argument("--steps", type=positive_int, default=8, help="timed steps per training setting (default 8)")


def main(argv: list[str]) -> int:
    ap = bench_parser('gpu', __doc__, arguments)
    args = ap.parse_args(argv)
    if args.prepare:
        prepare(args.prepare, args.work, dataset_spec(args))
        return 0
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, for the resume check
    import torch

    from longseq.dataset.published import published_days
    from longseq.schemas.errors import LongseqError
    from longseq.trainer.distributed import resolve_device

    device = resolve_device(args.device or "auto")
    args.data = args.data or "bench-work/gpu-data"
    if device.type != "cuda" and args.device in (None, "auto"):  # the CPU only when asked for, as a smoke test
        raise LongseqError("bench gpu needs a CUDA device; this machine has none (--device cpu: a smoke test)")
    days = published_days(str(args.data))
    if not days:
        raise LongseqError(f"no published days in {args.data}: run `longseq bench gpu --prepare {args.data}` first")
    data, start, end = str(args.data), days[0], days[-1]
    skip = set(filter(None, args.skip.split(","))) | ({"checks"} if device.type != "cuda" else set())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"command: longseq bench gpu {' '.join(argv)}",
             f"{name}, torch {torch.__version__}, data {data} ({start}..{end})", ""]
    failed = 0
    if "checks" not in skip:
        from longseq.bench.gpu_checks import with_data

        lines += ["| check | result |", "|---|---|"]
        with tempfile.TemporaryDirectory() as scratch:
            for name, check in with_data(data, start, end, Path(scratch)).items():
                try:
                    lines.append(f"| {name} | passed: {check()} |")
                except Exception as e:
                    failed += 1
                    detail = str(e).splitlines()[0][:200] if isinstance(e, AssertionError) else traceback.format_exc(limit=2)
                    lines.append(f"| {name} | FAILED: {' '.join(detail.split())[:300]} |")
                print(lines[-1], flush=True)
    parts = {"training": lambda: measure_training(device, args.preset, args.batch_size, args.steps,
                                                  "compile" not in skip, lines),
             "reader": lambda: measure_reader(data, start, end, device, args.steps, lines),
             "scoring": lambda: measure_scoring(device, args.preset, lines)}
    for part, measure in parts.items():
        if part in skip:
            continue
        try:
            measure()
        except Exception:
            failed += 1
            lines.append(f"\n{part}: FAILED\n```\n{traceback.format_exc(limit=4)}```")
        print("\n".join(lines[-3:]), flush=True)
    report = "\n".join(lines)
    print("\n" + report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report + "\n")
    return 1 if failed else 0
