"""What the quality benchmark runs: the plans (sizes, seeds, lengths, baselines) and the
parameter counts behind its parameter-matched baselines. bench/quality.py runs a plan;
bench/quality_report.py writes its report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import statistics
from dataclasses import dataclass
from pathlib import Path

from longseq.sources import SAMPLE_START
from longseq.trainer.model_config import EMBEDDING_MATCH, EXTENSIONS

START = SAMPLE_START
LR = 3e-3  # every run's learning rate, unless the baseline comparison chose another for its arch
# the learning rates an arch may be tried at: the plan's, then further along while the best is at an end
LR_LADDER = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
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


def lr_name(prefix: str, lr: float, suffix: str) -> str:
    """A run's name: the learning rate appears only when it is not the default LR, so runs at
    LR keep the names (and cache entries) they had before learning rates were chosen."""
    return f"{prefix}-{suffix}" if lr == LR else f"{prefix}-lr{lr:g}-{suffix}"


def mean_auc(entry: dict) -> float:
    """Mean AUC over the tasks of one evaluation (an entry of `run`'s eval: its data's tasks,
    whatever spec it was built with)."""
    return statistics.mean(t["auc"] for t in entry["tasks"].values())


def spec_suffix(spec) -> str:
    """The work directory's suffix of a sample in another spec's shape than the default one:
    its own samples, runs and results, keyed by the spec's fingerprint ("" for the default)."""
    from longseq.schemas.spec import load_default_spec

    if spec is None or spec.fingerprint == load_default_spec().fingerprint:
        return ""
    return f"-{spec.name}-{spec.fingerprint[:8]}"


def choose_lr(valid_auc: dict[float, float]) -> float:
    """The learning rate with the best validation mean AUC (LR on a tie); LR while none has run."""
    return max(valid_auc, key=lambda lr: (valid_auc[lr], lr == LR)) if valid_auc else LR


def validation_aucs(runs: dict, plan: "Plan", prefix: str, suffix: str, L: int | None) -> dict[float, float]:
    """lr -> validation mean AUC of the first seed's run `prefix`-...-`suffix` at that lr, for
    every lr of LR_LADDER that has run and not diverged (runs: name -> bench/quality.py `run` entry)."""
    valid = {}
    for lr in LR_LADDER:
        entry = runs.get(f"{lr_name(prefix, lr, suffix)}-s{plan.seeds[0]}")
        if entry and "eval" in entry:  # not a diverged run
            valid[lr] = mean_auc(entry["eval"]["valid"][str(L)])
    return valid


def next_lr(tried: list[float], valid: dict[float, float]) -> float | None:
    """The next learning rate to try, or None when the choice is settled: while the best of
    the tried ones is at an end of them, one step further along LR_LADDER that way (a choice
    at the edge of a grid says only that the grid was too narrow)."""
    best = choose_lr(valid)
    if not valid or min(tried) < best < max(tried):
        return None
    i = LR_LADDER.index(best) + (1 if best == max(tried) else -1)
    return LR_LADDER[i] if 0 <= i < len(LR_LADDER) and LR_LADDER[i] not in tried else None


def chosen_lr(runs: dict, plan: "Plan", prefix: str, suffix: str, L: int | None) -> float:
    """The learning rate chosen for the runs `prefix`-...-`suffix`: the best on validation."""
    return choose_lr(validation_aucs(runs, plan, prefix, suffix, L))


# the plan's parts, in the order they run; `bench quality --sections` runs some of them
SECTIONS = ("length-scaling", "extrapolation", "baselines", "ablations", "movielens")


def ablation(slug: str, preset: str) -> dict:
    """The model overrides of ABLATIONS[slug] for a preset."""
    from longseq.trainer.model_config import PRESETS

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
    # learning rates each arch of the baseline comparison tries on the training seed (the first);
    # the one with the best validation mean AUC trains every seed of that arch's rows
    lrs: tuple[float, ...] = (1e-3, LR, 1e-2, 3e-2)
    sections: tuple[str, ...] = SECTIONS  # the parts that run and are reported

    @property
    def ml_archs(self) -> tuple[str, ...]:
        """The archs that run on MovieLens: the plan's, without the quadratic Transformer."""
        return tuple(a for a in ML_ARCHS if a in self.archs)

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


def narrowed(plan: Plan, sections: tuple[str, ...] | None = None, archs: tuple[str, ...] | None = None,
             ablations: tuple[str, ...] | None = None) -> Plan:
    """The part of `plan` that runs (None: all of it): some sections, some baseline archs (their
    matched and longer rows too; STCA is the reference of every comparison and stays), some
    ablations. Run names stay those of the whole plan, so the parts share one cache."""
    if sections is not None:
        plan = dataclasses.replace(plan, sections=tuple(s for s in SECTIONS if s in sections))
    if archs is not None:
        keep = set(archs) | {"stca"}
        plan = dataclasses.replace(plan, archs=tuple(a for a in plan.archs if a in keep),
                                   matched=tuple(a for a in plan.matched if a in keep),
                                   more_steps=tuple((a, n) for a, n in plan.more_steps if a in keep))
    if ablations is not None:
        plan = dataclasses.replace(plan, ablations=tuple(a for a in plan.ablations if a in ablations))
    return plan


@functools.lru_cache(maxsize=None)  # the report and the plan ask for the same counts many times
def dense_parameters(preset: str, arch: str, ffn_mult: int | None = None) -> int:
    """Parameters outside the embedding tables (which every arch shares) of a preset's model."""
    from longseq.trainer.model import make_model, num_parameters
    from longseq.trainer.model_config import PRESETS

    base = PRESETS[preset]
    cfg = dataclasses.replace(base, arch=arch, ffn_mult=ffn_mult or base.ffn_mult)
    model = make_model(cfg)
    return num_parameters(model) - num_parameters(model.embed)


def matched_ffn_mult(preset: str, arch: str) -> int:
    """The feed-forward multiplier that brings `arch` closest to STCA's dense parameter count."""
    target = dense_parameters(preset, "stca")
    return min(range(1, 33), key=lambda m: abs(dense_parameters(preset, arch, m) - target))


def matched_model(preset: str, arch: str) -> dict:
    """The model overrides of `arch` widened to about STCA's dense parameter count."""
    return {"arch": arch, "ffn_mult": matched_ffn_mult(preset, arch)}
