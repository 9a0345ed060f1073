"""What the quality benchmark runs: the plans (sizes, seeds, lengths, baselines) and the
parameter counts behind its parameter-matched baselines. bench/quality.py runs a plan;
bench/quality_report.py writes its report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path

from sources import SAMPLE_START
from trainer.model_config import EMBEDDING_MATCH, EXTENSIONS

START = SAMPLE_START
ML_ARCHS = ("none", "mean", "din", "stca")  # the Transformer is quadratic in MovieLens' full 2,391-event histories
# MovieLens latest-small beside the repository (../shared/data), unless --movielens says where
MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-latest-small" / "ratings.csv"


@dataclass(frozen=True)
class Windows:
    """Three windows of days at the end of a sample: training, then validation (for every
    choice), then test (only for the reported tables). Earlier days only build history."""

    train: tuple[dt.date, dt.date]
    valid: tuple[dt.date, dt.date]
    test: tuple[dt.date, dt.date]

    @staticmethod
    def ending(end: dt.date, train_days: int, valid_days: int, test_days: int) -> "Windows":
        def span(last: dt.date, days: int) -> tuple[dt.date, dt.date]:
            return last - dt.timedelta(days=days - 1), last

        test = span(end, test_days)
        valid = span(test[0] - dt.timedelta(days=1), valid_days)
        return Windows(span(valid[0] - dt.timedelta(days=1), train_days), valid, test)

    def describe(self) -> str:
        return "; ".join(f"{name} {a}..{b}" for name, (a, b) in
                         (("train", self.train), ("validation", self.valid), ("test", self.test)))


# the STCA variants compared: the paper's, and with longseq's extensions (docs/TRAINER.md)
VARIANTS: dict[str, dict] = {"stca": {}, "stca+ext": {"arch": "stca", **EXTENSIONS}}

# One change each from the paper's STCA (model overrides): the paper's own ablations, then
# what longseq adds or leaves out. ONE_HEAD stands for one head as wide as the preset's heads.
ONE_HEAD = "one head"
ABLATIONS: dict[str, tuple[str, dict]] = {  # run-name slug -> (label, model overrides)
    "mlp": ("plain MLP instead of SwiGLU", {"ffn": "mlp"}),
    "ffn1": ("narrower feed-forward (ffn_mult 1)", {"ffn_mult": 1}),
    "nodelta": ("no time-delta feature", {"time_delta": False}),
    "nofusion": ("no query fusion", {"query_fusion": False}),
    "head1": ("one head (same width)", {"heads": ONE_HEAD}),
    "nonull": ("no null slot (ours)", {"null_slot": False}),
    "scaled": ("+ length-scaled logits (ours)", {"length_scaled": True}),
    "prior": ("+ id-match prior (ours)", {"match_prior": 1.0}),
    "embmatch": ("+ embedding-match prior (ours)", EMBEDDING_MATCH),
}


def ablation(slug: str, preset: str) -> dict:
    """The model overrides of ABLATIONS[slug] for a preset."""
    from trainer.model_config import PRESETS

    overrides = dict(ABLATIONS[slug][1])
    if overrides.get("heads") == ONE_HEAD:
        base = PRESETS[preset]
        overrides.update(heads=1, head_dim=base.heads * base.head_dim)
    return overrides


@dataclass(frozen=True)
class Plan:
    users: int
    days: int
    train_days: int  # training window: the days before the validation window
    seeds: tuple[int, ...]
    lengths: tuple[int, ...]
    steps: int  # training steps per run
    batch: int = 32
    preset: str = "tiny"
    baseline_len: int = 2_000
    archs: tuple[str, ...] = ("none", "mean", "din", "transformer", "stca")
    matched: tuple[str, ...] = ("none", "mean", "din", "transformer")  # also run at STCA's dense parameter count
    # (arch, steps): also train longer. DIN's 1,000 steps take about STCA's 400-step time at 2k
    # (compute matched); STCA's show whether its lead at equal steps holds with more training.
    more_steps: tuple[tuple[str, int], ...] = (("din", 1_000), ("stca", 1_000))
    ml_lengths: tuple[int, ...] = (50, 200, 1_000)  # below the full history (at most 2,391 ratings a user)
    serving: tuple[int, ...] = (2_000, 4_000, 10_000)
    valid_days: int = 2  # validation window: every choice is made on it
    test_days: int = 2  # test window, the last days: only for the reported tables
    variants: tuple[str, ...] = tuple(VARIANTS)  # length scaling and extrapolation run each
    ablations: tuple[str, ...] = tuple(ABLATIONS)  # at baseline_len, on generated data and MovieLens
    # MovieLens (30 days): train on every day before the last 6, one epoch, validate on 3, test on 3
    ml_days: int = 30
    ml_windows: tuple[int, int, int] = (24, 3, 3)
    device: str = "auto"  # where every run trains and is evaluated (cpu, cuda, cuda:N)

    def windows(self, end: dt.date) -> Windows:
        return Windows.ending(end, self.train_days, self.valid_days, self.test_days)

    def ml_windows_ending(self, end: dt.date) -> Windows:
        return Windows.ending(end, *self.ml_windows)


PLANS = {
    "quick": Plan(users=150, days=10, train_days=3, seeds=(0,), lengths=(500, 2_000, 10_000), steps=150,
                  archs=("none", "mean", "din", "stca"), matched=("mean", "din"),
                  more_steps=(("din", 350),), ml_lengths=(50,), valid_days=1, test_days=1),
    "full": Plan(users=400, days=14, train_days=4, seeds=(0, 1, 2), lengths=(500, 1_000, 2_000, 5_000, 10_000),
                 steps=400),
}


@functools.lru_cache(maxsize=None)  # the report and the plan ask for the same counts many times
def dense_parameters(preset: str, arch: str, ffn_mult: int | None = None) -> int:
    """Parameters outside the embedding tables (which every arch shares) of a preset's model."""
    from trainer.model import RankingModel, num_parameters
    from trainer.model_config import PRESETS

    base = PRESETS[preset]
    cfg = dataclasses.replace(base, arch=arch, ffn_mult=ffn_mult or base.ffn_mult)
    model = RankingModel(cfg)
    return num_parameters(model) - num_parameters(model.embed)


def matched_ffn_mult(preset: str, arch: str) -> int:
    """The feed-forward multiplier that brings `arch` closest to STCA's dense parameter count."""
    target = dense_parameters(preset, "stca")
    return min(range(1, 33), key=lambda m: abs(dense_parameters(preset, arch, m) - target))


def matched_model(preset: str, arch: str) -> dict:
    """The model overrides of `arch` widened to about STCA's dense parameter count."""
    return {"arch": arch, "ffn_mult": matched_ffn_mult(preset, arch)}
