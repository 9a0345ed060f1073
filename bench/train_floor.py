"""The CPU training step against its floor, side by side in one process: the model FLOPs of
a step, this machine's matmul rate, the floor (FLOPs / rate), the measured step and
floor/step (1.0: a step that runs every FLOP at the GEMM rate and does nothing else).

    longseq bench train-floor [--preset tiny,small] [--samplers ushaped,fixed-10k]
                              [--candidates paper,embedding-match] [--batch-size 32] [--targets 10]
                              [--repeat 3] [--threads N] [--chunk-mib 0,4]

- FLOPs: the matmuls of forward + backward (torch's FlopCounterMode, attention through its
  math kernel so that it is counted), counted request by request, each request a batch of
  its own: no padding counts, whatever the batched kernel pads.
- Rate: a 2048 x 2048 fp32 GEMM, the best of several, at the step's threads and at all the
  cores this process may use; the higher is the machine's rate.
- Matmuls alone: the mm / addmm / bmm calls of the step itself (its padding and chunks as
  they run, forward and backward), each shape timed on its own on warm operands of the same
  layout, times its calls. The step can come no closer to the floor than these allow;
  alone/step is the share of the step they take, and what is left is everything else.
- Step: forward + backward + gradient clipping + the trainer's optimizer (AdamW) on one
  synthetic batch (bench/model_throughput.py `training_batch`), the median of --repeat after
  a warm-up step, in a process set up as CPU training sets its own (trainer/distributed.py
  `tune_cpu_process`), at --threads. With several --chunk-mib (the history path's chunk
  size, trainer/model.py HIST_CHUNK_BYTES), their steps run in turns on the same model and
  batch, one step each per turn.

Settings: presets (trainer/model_config.py), window samplers (bench/extrapolation.py
SAMPLERS, and fixed-10k: every request at 10,000 events) and model candidates
(bench/long_history.py CANDIDATES: paper is the paper's STCA, embedding-match its
embedding-match prior).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from typing import Callable

from longseq.bench import bench_parser, names
from longseq.bench.extrapolation import SAMPLERS as TRAINING_SAMPLERS
from longseq.bench.long_history import CANDIDATES
from longseq.cli.arguments import comma_separated, positive_int
from longseq.trainer.model_config import PRESETS

SAMPLERS: dict[str, dict] = {**TRAINING_SAMPLERS, "fixed-10k": {"min_len": 10_000, "max_len": 10_000}}
GEMM = 2048  # the side of the square matmul that sets the rate


def best_seconds(run: Callable[[], object], repeat: int) -> float:
    """The fastest of `repeat` timed calls of run, after one untimed (operands warm in cache)."""
    run()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_rate(threads: int, size: int = GEMM, repeat: int = 5) -> float:
    """FLOP/s of a size x size fp32 matmul at this many threads: the best of `repeat`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = best_seconds(lambda: a @ b, repeat)
    torch.set_num_threads(before)
    return 2 * size**3 / best


def step_flops(model, hist_lengths: list[int], tgt_lengths: list[int]) -> int:
    """Matmul FLOPs of forward + backward, summed over the requests, each run as a batch of
    one (so nothing is padded); requests of the same shape are counted once."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from longseq.reader.testing import random_batch
    from longseq.trainer.model import loss_fn

    per_shape: dict[tuple[int, int], int] = {}
    for shape in set(zip(hist_lengths, tgt_lengths)):
        batch = random_batch([shape[0]], [shape[1]])
        counter = FlopCounterMode(display=False)
        with counter, sdpa_kernel(SDPBackend.MATH):  # the fused CPU kernels are not counted
            loss_fn(model(batch), batch).backward()
        model.zero_grad(set_to_none=True)
        per_shape[shape] = counter.get_total_flops()
    return sum(per_shape[s] for s in zip(hist_lengths, tgt_lengths))


MATMULS = ("mm", "addmm", "bmm", "baddbmm")  # the aten ops timed as "matmuls alone"


def step_matmuls(model, batch) -> Counter:
    """The matmuls of one forward + backward of the batched model as it runs them:
    {(op, ((shape, transposed), ...)): calls}, one key per op and operand layout."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from longseq.trainer.model import loss_fn

    ops = {getattr(torch.ops.aten, name).default: name for name in MATMULS}
    calls: Counter = Counter()

    def layout(t: torch.Tensor) -> tuple[tuple[int, ...], bool]:  # transposed: the last two dims swapped in memory
        return tuple(t.shape), t.dim() >= 2 and t.stride(-2) == 1 and t.stride(-1) != 1

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in ops:
                calls[(ops[func], tuple(layout(a) for a in args if isinstance(a, torch.Tensor)))] += 1
            return func(*args, **(kwargs or {}))

    with Record():
        loss_fn(model(batch), batch).backward()
    model.zero_grad(set_to_none=True)
    return calls


def matmuls_alone(calls: Counter, repeat: int = 3) -> float:
    """Seconds of `calls` (step_matmuls) run one shape at a time: each the best of `repeat` on
    warm random operands of its layout, times its calls."""
    import torch

    def operand(shape: tuple[int, ...], transposed: bool) -> torch.Tensor:
        if not transposed:
            return torch.randn(shape)
        return torch.randn(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2)

    total = 0.0
    for (name, layouts), n in calls.items():
        func, args = getattr(torch.ops.aten, name).default, [operand(*op) for op in layouts]
        total += best_seconds(lambda: func(*args), repeat) * n
    return total


def measure(preset: str, sampler: str, candidate: str, args: argparse.Namespace, threads: int) -> dict:
    """One setting: FLOPs, the step's median seconds and its matmuls alone at each chunk size, and the
    batch's size."""
    import torch

    from longseq.bench.model_throughput import bench_model, step_seconds, training_batch
    from longseq.features.lengths import LengthSampler

    torch.set_num_threads(threads)
    batch = training_batch(args.batch_size, args.targets, LengthSampler(**SAMPLERS[sampler]))
    model = bench_model(preset, "stca", "cpu", **CANDIDATES[candidate])
    flops = step_flops(model, batch.history.lengths().tolist(), batch.targets.lengths().tolist())
    chunks = [model.chunk_bytes] if args.chunk_mib is None else [int(m * 2**20) for m in args.chunk_mib]
    alone = {}
    for c in chunks:
        model.chunk_bytes = c
        alone[c] = matmuls_alone(step_matmuls(model, batch))
    if len(chunks) == 1:  # the loop above left the model at it
        seconds = {chunks[0]: step_seconds(model, batch, args.repeat, True, "cpu")}
    else:  # in turns, the order reversed every turn: the machine's drift spreads over all of them
        times: dict[int, list[float]] = {c: [] for c in chunks}
        for turn in range(args.repeat):
            for c in chunks[::-1] if turn % 2 else chunks:
                model.chunk_bytes = c
                times[c].append(step_seconds(model, batch, 1, True, "cpu"))
        seconds = {c: statistics.median(t) for c, t in times.items()}
    return {"flops": flops, "seconds": seconds, "alone": alone, "tokens": batch.num_history_tokens,
            "padded_keys": batch.num_requests * batch.history.max_length,
            "bucket_keys": sum(b.B * b.L for b in model.layout(batch).buckets)}


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench train-floor --help`)."""
    from longseq.trainer.distributed import cpu_threads

    ap.add_argument("--preset", type=comma_separated(str), default="tiny,small", metavar="PRESET,...",
                    help=f"model size presets, comma-separated, from: {', '.join(PRESETS)} (default tiny,small)")
    ap.add_argument("--samplers", default="ushaped,fixed-10k",
                    help=f"history window samplers, comma-separated, from: {', '.join(SAMPLERS)} "
                         "(default ushaped,fixed-10k)")
    ap.add_argument("--candidates", default="paper,embedding-match",
                    help=f"comma-separated, from: {', '.join(CANDIDATES)} (default: %(default)s)")
    ap.add_argument("--batch-size", type=positive_int, default=32, help="requests per step (default 32)")
    ap.add_argument("--targets", type=positive_int, default=10, help="targets per request (default 10)")
    ap.add_argument("--repeat", type=positive_int, default=3,
                    help="timed steps after a warm-up; the median is reported (default 3)")
    ap.add_argument("--threads", type=comma_separated(positive_int), default=str(cpu_threads()), metavar="N,...",
                    help=f"torch threads of the step, comma-separated to compare (default {cpu_threads()}: "
                         "the trainer's, trainer/distributed.py cpu_threads)")
    ap.add_argument("--chunk-mib", type=comma_separated(float), default=None, metavar="MIB,...",
                    help="chunk sizes of the history path to compare, in MiB of FFN activation, comma-separated; "
                         "0: the whole batch at once (default: the model's, trainer/model.py HIST_CHUNK_BYTES)")


def main(argv: list[str]) -> int:
    from longseq.trainer.distributed import tune_cpu_process

    ap = bench_parser("train-floor", __doc__, arguments)
    args = ap.parse_args(argv)
    presets = names(ap, "--preset", args.preset, PRESETS)
    samplers = names(ap, "--samplers", args.samplers, SAMPLERS)
    candidates = names(ap, "--candidates", args.candidates, CANDIDATES)
    tune_cpu_process()  # as CPU training sets its process up (threads, then per setting --threads)
    cores = len(os.sched_getaffinity(0))
    rates = {t: matmul_rate(t) for t in sorted({*args.threads, cores})}
    print(f"command: longseq bench train-floor {' '.join(argv)}\n{args.batch_size} requests x {args.targets} "
          f"targets, CPU, median of {args.repeat} steps after a warm-up, one process\n")
    print(f"{GEMM}^2 fp32 GEMM: " + ", ".join(f"{r / 1e9:.0f} GFLOP/s at {t} thread{'s' * (t > 1)}"
                                               for t, r in rates.items()))
    rate = max(rates.values())
    print(f"floor = FLOPs / {rate / 1e9:.0f} GFLOP/s\n")
    print("keys / tokens: the history slots attention pads to, over the events: the batch padded to its longest "
          "window, and its length buckets (what the CPU attends)\n")
    print("| preset | windows | model | threads | chunk MiB | history tokens | keys / tokens: batch | buckets | GFLOP "
          "| floor s | matmuls alone s | step s | alone/step | floor/step |\n"
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for preset in presets:
        for sampler in samplers:
            for candidate in candidates:
                for threads in args.threads:
                    r = measure(preset, sampler, candidate, args, threads)
                    floor = r["flops"] / rate
                    for chunk, seconds in r["seconds"].items():
                        print(f"| {preset} | {sampler} | {candidate} | {threads} | {chunk / 2**20:.3g} | {r['tokens']:,} | "
                              f"{r['padded_keys'] / r['tokens']:.2f} | {r['bucket_keys'] / r['tokens']:.2f} | "
                              f"{r['flops'] / 1e9:.2f} | {floor:.3f} | {r['alone'][chunk]:.3f} | "
                              f"{seconds:.3f} | {r['alone'][chunk] / seconds:.2f} | {floor / seconds:.2f} |",
                              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
