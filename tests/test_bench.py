"""Benchmark plumbing that decides what a comparison means."""

from __future__ import annotations

import pytest

from bench.quality_plan import PLANS, dense_parameters, matched_ffn_mult
from trainer.model_config import PRESETS


@pytest.mark.parametrize("arch", ["none", "mean", "din", "transformer"])
def test_matched_baselines_are_the_nearest_to_stcas_dense_parameter_count(arch):
    target = dense_parameters("tiny", "stca")
    m = matched_ffn_mult("tiny", arch)
    gap = abs(dense_parameters("tiny", arch, m) - target)
    for other in (m - 1, m + 1):
        if other >= 1:
            assert gap <= abs(dense_parameters("tiny", arch, other) - target)
    assert gap < abs(dense_parameters("tiny", arch) - target) or m == PRESETS["tiny"].ffn_mult
    assert gap / target < 0.15


def test_plans_only_match_archs_they_run():
    for plan in PLANS.values():
        assert set(plan.matched) <= set(plan.archs) - {"stca"}
        assert all(arch in plan.archs and steps > plan.steps for arch, steps in plan.more_steps)
