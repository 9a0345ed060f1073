"""What must hold on a GPU, as plain functions that raise AssertionError: tests/test_gpu.py
runs them under pytest (marked gpu, skipped without CUDA), and `longseq bench gpu` runs
them itself, as a GPU host may have torch, numpy and pyarrow but not pytest.

Each takes published data (a build's output directory and a day range) and a scratch
directory where it needs them.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import torch

ARCHS_CHECKED = (("stca", {}), ("stca", {"match_prior": 1.0, "match_by": "embedding"}), ("din", {}),
                 ("transformer", {}), ("mean", {}))


def forward_matches_cpu() -> str:
    """The CUDA forward pass equals the CPU one: within fp32 tolerance in fp32, and within
    bf16's (8 bits of mantissa) under bf16 autocast."""
    from longseq.reader.testing import random_batch
    from longseq.trainer.model import make_model
    from longseq.trainer.model_config import PRESETS

    batch = random_batch([50, 0, 300, 7], [3, 2, 4, 1], seed=0)
    worst = {"fp32": 0.0, "bf16": 0.0}
    for arch, options in ARCHS_CHECKED:
        torch.manual_seed(0)
        model = make_model(dataclasses.replace(PRESETS["small"], arch=arch, **options)).eval()
        with torch.no_grad():
            reference = model(batch)
            gpu, on_gpu = model.to("cuda"), batch.to("cuda")
            fp32 = gpu(on_gpu).float().cpu()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                bf16 = gpu(on_gpu).float().cpu()
        scale = reference.abs().max().clamp_min(1.0)
        worst["fp32"] = max(worst["fp32"], float((fp32 - reference).abs().max() / scale))
        worst["bf16"] = max(worst["bf16"], float((bf16 - reference).abs().max() / scale))
        assert worst["fp32"] < 1e-4, f"{arch} {options}: fp32 differs by {worst['fp32']:.2e} of the logits' scale"
        assert worst["bf16"] < 5e-2, f"{arch} {options}: bf16 differs by {worst['bf16']:.2e} of the logits' scale"
    return f"largest difference from the CPU, relative to the logits: fp32 {worst['fp32']:.1e}, bf16 {worst['bf16']:.1e}"


def compiled_matches_eager() -> str:
    """torch.compile (dynamic shapes) gives the eager logits on batches of different shapes."""
    from longseq.reader.testing import random_batch
    from longseq.trainer.model import make_model
    from longseq.trainer.model_config import PRESETS

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = make_model(PRESETS["small"]).eval()
    compiled = torch.compile(model, dynamic=True)
    worst = 0.0
    with torch.no_grad():
        for seed, (hist, tgt) in enumerate((([50, 0, 300], [3, 2, 4]), ([7, 1_000], [1, 5]), ([64] * 9, [2] * 9))):
            batch = random_batch(hist, tgt, seed).to("cuda")
            eager, fast = model(batch), compiled(batch)
            worst = max(worst, float((fast - eager).abs().max() / eager.abs().max().clamp_min(1.0)))
    assert worst < 1e-4, f"compiled logits differ by {worst:.2e} of their scale"
    return f"3 shapes, largest relative difference {worst:.1e}"


def flex_matches_padded() -> str:
    """The flex kernel's logits and gradients equal the padded kernel's on CUDA (fp32), with
    and without the id-match prior (its score_mod)."""
    from longseq.reader.testing import random_batch
    from longseq.trainer.model import loss_fn, make_model, RankingModel
    from longseq.trainer.model_config import PRESETS

    batch = random_batch([0, 30, 700, 5, 260], [2, 1, 4, 3, 5], seed=1).to("cuda")
    worst = 0.0
    for options in ({}, {"match_prior": 1.0}, {"null_slot": False, "length_scaled": True}):
        torch.manual_seed(0)
        with torch.device("cuda"):
            padded = make_model(dataclasses.replace(PRESETS["small"], **options))
            flex = make_model(padded.cfg, kernel="flex")
        flex.load_state_dict(padded.state_dict())
        results = []
        for model in (padded, flex):
            logits = model(batch)
            loss_fn(logits, batch).backward()
            results.append((logits.detach(), [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]))
        (a, ga), (b, gb) = results
        worst = max(worst, float((a - b).abs().max()), *(float((x - y).abs().max() / x.abs().max().clamp_min(1e-6))
                                                         for x, y in zip(ga, gb)))
        assert worst < 1e-3, f"{options}: flex differs from padded by {worst:.2e}"
    return f"logits and gradients within {worst:.1e}"


def _config(**kw):
    from longseq.trainer.train_config import TrainConfig

    base = dict(preset="small", epochs=1, batch_size=32, max_steps=40, warmup_steps=5, lr=3e-3, log_every=5,
                checkpoint_every=10**9, length={"min_len": 64, "max_len": 2_000}, device="cuda")
    return TrainConfig(**{**base, **kw})


def bf16_training_lowers_loss(data: str, start, end, work: Path) -> str:
    """40 steps of bf16 training lower the logged loss."""
    from longseq.trainer.train import train

    train(data, start, end, work / "bf16", _config(), log=lambda m: None)
    rows = list(csv.DictReader(open(work / "bf16" / "train_log.csv")))
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < first, f"loss went from {first:.4f} to {last:.4f}"
    return f"loss {first:.4f} -> {last:.4f} over {rows[-1]['step']} steps"


def resume_is_exact(data: str, start, end, work: Path) -> str:
    """A run killed after 7 steps and resumed ends with the weights of an uninterrupted run."""
    from longseq.trainer.train import train

    cfg = _config(max_steps=12, checkpoint_every=4)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # atomics in scatter-adds would differ run to run
    try:
        whole = train(data, start, end, work / "whole", cfg, log=lambda m: None)
        train(data, start, end, work / "cut", cfg, log=lambda m: None, stop_after=7)
        resumed = train(data, start, end, work / "cut", cfg, log=lambda m: None)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    assert resumed["weights_sha256"] == whole["weights_sha256"], "resumed weights differ from an uninterrupted run"
    return f"same weights after {whole['steps']} steps (sha256 {whole['weights_sha256'][:12]})"


def evaluate_and_score_run(data: str, start, end, work: Path) -> str:
    """evaluate and score on CUDA; their AUCs equal the CPU's within bf16 noise."""
    from longseq.trainer.evaluate import evaluate, score
    from longseq.trainer.train import train

    train(data, start, end, work / "scored", _config(max_steps=10), log=lambda m: None)
    on_gpu = evaluate(work / "scored", data, start, end, max_len=2_000, device="cuda", log=lambda m: None, bootstrap=0)
    on_cpu = evaluate(work / "scored", data, start, end, max_len=2_000, device="cpu", log=lambda m: None, bootstrap=0)
    gaps = [abs(on_gpu["tasks"][t]["auc"] - on_cpu["tasks"][t]["auc"]) for t in on_cpu["tasks"]]
    assert max(gaps) < 5e-3, f"CUDA and CPU AUCs differ by up to {max(gaps):.4f}"
    rows = score(work / "scored", data, start, end, work / "scores.parquet", max_len=2_000, device="cuda")
    assert rows == on_gpu["targets"], f"score wrote {rows} rows for {on_gpu['targets']} targets"
    return f"{on_gpu['requests']:,} requests; AUC gap CUDA vs CPU at most {max(gaps):.1e}; {rows:,} scores written"


def with_data(data: str, start, end, work: Path) -> dict:
    """Every check, by name: the data-free ones and those on (data, start, end)."""
    return {
        "the CUDA forward pass equals the CPU's": forward_matches_cpu,
        "torch.compile equals eager": compiled_matches_eager,
        "the flex kernel equals the padded one (forward and backward)": flex_matches_padded,
        "bf16 training lowers the loss": lambda: bf16_training_lowers_loss(data, start, end, work),
        "resume is exact on CUDA": lambda: resume_is_exact(data, start, end, work),
        "evaluate and score run on CUDA": lambda: evaluate_and_score_run(data, start, end, work),
    }
