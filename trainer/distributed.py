"""Data-parallel plumbing: one process per rank under torchrun, or a single process.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; each rank reads its own shard of the row
groups (longseq.reader), and DistributedDataParallel averages the gradients. Shards can
differ by a row group, so before each step the ranks agree that all of them still have a
batch; the epoch ends for everyone when the first runs out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from longseq.schemas.errors import LongseqError


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(name: str = "auto") -> torch.device:
    """auto: this rank's GPU if there is one, else the CPU. A bare "cuda" gets this rank's
    index (CUDA calls want one). A device that is not there is a one-line error."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(f"cuda:{local}" if name == "cuda" else name)
    except RuntimeError:
        raise LongseqError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if dev.index >= count:
            raise LongseqError(f"device {dev} is not available: this machine has {count} CUDA device(s)"
                               f"{'' if torch.backends.cuda.is_built() else ' (this torch is built without CUDA)'}; "
                               "use --device cpu or auto")
    return dev


def cpu_threads() -> int:
    """Intra-op threads for one CPU process: OMP_NUM_THREADS where set (torchrun sets 1), else
    its share of the cores it may run on (shared by the ranks on this machine). Measured with
    its reader running, on a quiet 2-core machine: 40 steps of preset small in 27-29 s on 2
    threads against 44 s on 1. An op waits for its slowest thread, so where another job holds
    a core, OMP_NUM_THREADS=1 is the better choice: a bench step on 2 threads took 3.4x as long
    as on 1 while other jobs ran (docs/BENCHMARKS.md, Training step against its floor)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, len(os.sched_getaffinity(0)) // local_ranks)


def tune_cpu_process() -> None:
    """Set this process up for CPU training: cpu_threads() intra-op threads, one inter-op
    thread (the CPU autograd engine runs on the caller's thread; the inter-op pool only idles;
    it can be sized only before its first use, so a later call leaves it), and freed memory
    kept for the next step (keep_freed_memory)."""
    torch.set_num_threads(cpu_threads())
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    keep_freed_memory()


def keep_freed_memory() -> None:
    """glibc malloc: serve every allocation from the heap and never give it back, so that a
    step's tensors reuse the pages the step before freed. By default each allocation above
    32 MB is a fresh mmap whose pages the kernel zeroes and faults in at every use: a CPU
    step of the small preset at U-shaped lengths faulted in about 600 MB, a quarter of its
    time. Without glibc: nothing."""
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 2**31 - 1)


def autocast_for(device: torch.device) -> torch.autocast:
    """bf16 autocast on a GPU; on the CPU a disabled context, so that CPU runs stay in float32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def setup(device: str = "auto") -> Context:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    else:
        tune_cpu_process()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(rank, world, dev)


def all_have_batch(ctx: Context, have: bool) -> bool:
    """True when every rank has a batch for this step."""
    if not ctx.distributed:
        return have
    flag = torch.tensor([1 if have else 0], device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def teardown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
