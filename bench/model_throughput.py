"""Model cost on this machine: STCA against the self-attention baseline, request level
batching against pointwise, scoring latency at 10k, and training throughput at the
training lengths (what the reader must keep up with).

    longseq bench model [--preset small] [--lengths 512,1000,2000,5000,10000] [--repeat 3]

Every measurement runs in a fresh process (peak RSS is then its own), on random batches
of the stated shape (reader.testing.random_batch); times are medians of --repeat after a
warm-up step. Set --device cuda on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
from longseq.bench import bench_parser
from longseq.cli.arguments import add_device, comma_separated, positive_int
from longseq.trainer.model_config import PRESETS


def bench_model(preset: str, arch: str, device: str, **overrides):
    import dataclasses

    import torch

    from longseq.trainer.model import make_model
    from longseq.trainer.model_config import PRESETS

    torch.manual_seed(0)
    return make_model(dataclasses.replace(PRESETS[preset], arch=arch, **overrides)).to(device)


def training_batch(requests: int, targets: int, sampler=None):
    """A random batch of `requests` at the reader's training lengths (`sampler`, default the
    U-shaped LengthSampler), `targets` each."""
    from longseq.features.lengths import LengthSampler
    from longseq.reader.testing import random_batch

    lengths = (sampler or LengthSampler()).sample(np.random.default_rng(0), requests).tolist()
    return random_batch(lengths, [targets] * requests)


def step_seconds(model, batch, repeat: int, train: bool, device: str) -> float:
    """Median seconds of a step after a warm-up; a training step is the trainer's: forward,
    backward, gradient clipping and its optimizer."""
    import torch

    from longseq.trainer.model import loss_fn
    from longseq.trainer.optimizers import clip_gradients, make_optimizer

    batch = batch.to(device)
    optimizer = make_optimizer(model, lr=1e-4, weight_decay=0.0) if train else None
    times = []
    for i in range(repeat + 1):
        t = time.perf_counter()
        if train:
            loss = loss_fn(model(batch), batch)
            optimizer.zero_grad()
            loss.backward()
            clip_gradients(model.parameters(), 1.0)
            optimizer.step()
        else:
            with torch.no_grad():
                model(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_one(kind: str, args: argparse.Namespace) -> dict:
    """One measurement in this process."""
    import torch

    from longseq.reader.testing import pointwise, random_batch

    torch.set_num_threads(args.threads)
    out: dict = {}
    if kind.startswith("length:"):  # length:ARCH:L  forward+backward, B requests x targets each
        _, arch, length = kind.split(":")
        batch = random_batch([int(length)] * args.batch_size, [args.targets] * args.batch_size)
        out["seconds"] = step_seconds(bench_model(args.preset, arch, args.device), batch, args.repeat, True, args.device)
    elif kind.startswith("rlb:"):  # rlb:MODE  training step at 2k, 8 targets per request
        mode = kind.split(":")[1]
        batch = random_batch([2_000] * args.batch_size, [8] * args.batch_size)
        batch = pointwise(batch) if mode == "pointwise" else batch
        out["seconds"] = step_seconds(bench_model(args.preset, "stca", args.device), batch, args.repeat, True, args.device)
        out["targets"] = batch.num_targets
    elif kind == "score":  # one request, 10k history, 16 targets, no grad
        batch = random_batch([10_000], [16])
        out["seconds"] = step_seconds(bench_model(args.preset, "stca", args.device).eval(), batch, args.repeat, False, args.device)
    elif kind.startswith("train"):  # training steps at U-shaped lengths, 128 requests x 10 targets
        batch = training_batch(128, 10)
        overrides = {"match_prior": 1.0} if kind == "train:prior" else {}
        model = bench_model(args.preset, "stca", args.device, **overrides)
        out["seconds"] = step_seconds(model, batch, args.repeat, True, args.device)
        out["requests"], out["tokens"] = batch.num_requests, batch.num_history_tokens
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench model --help`)."""

    ap.add_argument("--preset", default="small", choices=list(PRESETS), help="model size (default small)")
    ap.add_argument("--lengths", type=comma_separated(positive_int), default="512,1000,2000,5000,10000", metavar="EVENTS,...",
                    help="history lengths of the sweep (default 512,1000,2000,5000,10000)")
    ap.add_argument("--batch-size", type=positive_int, default=4,
                    help="requests per step in the length sweep and the request level batching runs (default 4)")
    ap.add_argument("--targets", type=positive_int, default=8, help="targets per request (default 8)")
    ap.add_argument("--repeat", type=positive_int, default=3, help="timed steps after a warm-up; the median is reported (default 3)")
    ap.add_argument("--threads", type=positive_int, default=2, help="torch threads on the CPU (default 2)")
    add_device(ap)
    ap.add_argument("--one", help=argparse.SUPPRESS)


def main(argv: list[str]) -> int:
    ap = bench_parser('model', __doc__, arguments)
    args = ap.parse_args(argv)
    from longseq.trainer.distributed import resolve_device

    args.device = str(resolve_device(args.device or "auto"))
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return 0

    def measure(kind: str) -> dict:
        cmd = [sys.executable, "-m", "longseq.bench.model_throughput", "--one", kind, *argv]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:200]}
        return json.loads(done.stdout.strip().splitlines()[-1])

    print(f"command: longseq bench model {' '.join(argv)}\npreset {args.preset}, {args.threads} threads on {args.device}, "
          f"median of {args.repeat} steps after a warm-up, one process per measurement\n")
    lengths = args.lengths
    print(f"Forward + backward, {args.batch_size} requests x {args.targets} targets:\n")
    print("| history length | STCA s | STCA peak RSS MB | self-attention s | self-attention peak RSS MB | time ratio SA/STCA |")
    print("|---:|---:|---:|---:|---:|---:|")
    base = {}
    for length in lengths:
        s, a = measure(f"length:stca:{length}"), measure(f"length:transformer:{length}")
        base.setdefault("stca", s)
        base.setdefault("sa", a)
        ratio = f"{a['seconds'] / s['seconds']:.1f}" if "seconds" in a and "seconds" in s else ""
        print(f"| {length:,} | {_s(s)} | {_rss(s)} | {_s(a)} | {_rss(a)} | {ratio} |")
    print("\nRequest level batching vs pointwise (each target with its own copy of the history), "
          f"STCA training step, {args.batch_size} requests x 8 targets at 2,000 events:\n")
    rlb, pw = measure("rlb:rlb"), measure("rlb:pointwise")
    print("| batching | step s | targets/s | peak RSS MB |\n|---|---:|---:|---:|")
    for name, r in (("request level", rlb), ("pointwise", pw)):
        print(f"| {name} | {_s(r)} | {r['targets'] / r['seconds']:,.0f} | {_rss(r)} |" if "seconds" in r else f"| {name} | {r} | | |")
    if "seconds" in rlb and "seconds" in pw:
        print(f"\nRLB trains {pw['seconds'] / rlb['seconds']:.1f}x the targets per second of pointwise.")
    sc = measure("score")
    print(f"\nScoring one request with a 10,000-event history and 16 targets: {_s(sc)} s per request "
          f"(peak RSS {_rss(sc)} MB).")
    print("\nTraining at U-shaped lengths (128 requests, 10 targets each), the paper's STCA and with the id-match prior:\n")
    print("| model | requests/s | M history tokens/s | step s |\n|---|---:|---:|---:|")
    for name, kind in (("STCA (the paper's)", "train"), ("STCA, match_prior=1.0", "train:prior")):
        tr = measure(kind)
        if "seconds" in tr:
            print(f"| {name} | {tr['requests'] / tr['seconds']:,.0f} | {tr['tokens'] / tr['seconds'] / 1e6:.3f} | {_s(tr)} |")
        else:
            print(f"| {name} | {_s(tr)} | | |")
    return 0


def _s(r: dict) -> str:
    return f"{r['seconds']:.3f}" if "seconds" in r else f"failed: {r.get('error', '')}"


def _rss(r: dict) -> str:
    return f"{r['peak_rss_mb']:,.0f}" if "peak_rss_mb" in r else ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
