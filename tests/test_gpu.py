"""The GPU checks of bench/gpu_checks.py under pytest: skipped where there is no CUDA.
`longseq bench gpu` runs the same functions on a GPU host without pytest."""

from __future__ import annotations

import pytest
import torch

from longseq.bench import gpu_checks

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from longseq.pipelines.sample import prepare_generated
    from longseq.etl.batch.polars_engine import PolarsEngine
    from longseq.sources.generate import PROFILES

    sample = prepare_generated(tmp_path_factory.mktemp("gpu"), PROFILES["tiny"], seed=3, max_len=2_000,
                               engine=PolarsEngine(row_group_bytes=64 * 1024))
    return str(sample.data), sample.start, sample.end


def test_the_cuda_forward_pass_equals_the_cpus():
    gpu_checks.forward_matches_cpu()


def test_torch_compile_equals_eager():
    gpu_checks.compiled_matches_eager()


def test_the_flex_kernel_equals_the_padded_one_with_gradients():
    gpu_checks.flex_matches_padded()


def test_bf16_training_lowers_the_loss(data, tmp_path):
    gpu_checks.bf16_training_lowers_loss(*data, tmp_path)


def test_resume_is_exact_on_cuda(data, tmp_path):
    gpu_checks.resume_is_exact(*data, tmp_path)


def test_evaluate_and_score_run_on_cuda(data, tmp_path):
    gpu_checks.evaluate_and_score_run(*data, tmp_path)
