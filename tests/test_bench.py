"""Benchmark plumbing that decides what a comparison means."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from longseq.bench.quality_plan import PLANS, dense_parameters, matched_ffn_mult
from longseq.trainer.model_config import PRESETS


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


def test_windows_are_consecutive_and_leave_days_for_history():
    import datetime as dt

    from longseq.bench.quality_plan import START, Windows

    w = Windows.ending(dt.date(2026, 1, 14), 4, 2, 2)
    assert w.test == (dt.date(2026, 1, 13), dt.date(2026, 1, 14))
    assert w.valid == (dt.date(2026, 1, 11), dt.date(2026, 1, 12))
    assert w.train == (dt.date(2026, 1, 7), dt.date(2026, 1, 10))
    for plan in PLANS.values():
        windows = plan.windows(START + dt.timedelta(days=plan.days - 1))
        assert windows.train[0] > START, "the first days only build history"
        ml = plan.ml_windows_ending(START + dt.timedelta(days=plan.ml_days - 1))
        assert ml.train[0] == START and ml.test[1] == START + dt.timedelta(days=plan.ml_days - 1)


@pytest.mark.parametrize("tasks", [("finish", "skip", "like", "comment"), ("click", "cart", "purchase")],
                         ids=["default", "ecommerce"])
def test_the_report_shows_the_test_window_with_intervals_and_the_validation_window(tmp_path, tasks):
    """A synthetic result set: the report reads test and validation apart, a setting that has
    not run is n/a, not a crash, and the columns are the tasks of the data's spec (bench
    quality --spec)."""
    from longseq.bench.quality_plan import VARIANTS
    from longseq.bench.quality_report import write_report

    plan, TASKS, n = PLANS["quick"], tasks, len(tasks)

    def entry(valid_auc: float, test_auc: float, lengths) -> dict:
        def at(auc: float) -> dict:
            return {str(L): {"tasks": {t: {"auc": auc, "gauc": auc - 0.1, "logloss": 0.5, "positive_rate": 0.3}
                                       for t in TASKS}, "mean_history": 100.0,
                             "auc_intervals": {**{t: (auc - 0.01, auc + 0.01) for t in TASKS}, "mean": (auc - 0.02, auc + 0.02)}}
                    for L in lengths}
        return {"config": "{}", "train_seconds": 10.0, "eval": {"valid": at(valid_auc), "test": at(test_auc)}}

    runs = {f"gen-{v}-L{L}-s0": entry(0.61, 0.62, [L]) for v in VARIANTS for L in plan.lengths}
    runs["gen-stca-L10000-s0"] = entry(0.63, 0.64, [10_000])
    runs["gen-abl-mlp-L2000-s0"] = entry(0.60, 0.60, [2_000])
    text = write_report(runs, plan, "quick", tmp_path, "longseq bench quality --quick", "w", "m")
    row = next(line for line in text.splitlines() if line.startswith("| STCA (the paper's), L = 10,000 |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1:1 + n] == ["0.6400"] * n and cells[1 + n:5 + n] == ["0.6400", "0.0200", "0.6300", "0.5400"]
    assert f"| setting | {' | '.join(f'AUC {t}' for t in tasks)} | test mean AUC |" in text
    mlp = next(line for line in text.splitlines() if line.startswith("| plain MLP instead of SwiGLU |"))
    assert [c.strip() for c in mlp.split("|")[2:4]] == ["0.6000", "-0.0200"], "paired with the paper's STCA at 2k"
    din = next(line for line in text.splitlines() if line.startswith("| din, lr 0.003 |"))
    assert din.split("|")[3].strip() == "n/a" and din.rstrip().endswith("| n/a |"), "not run yet: n/a"
    assert (tmp_path / "length_scaling_quick.png").exists()


def test_each_arch_gets_the_learning_rate_best_on_validation_not_on_test(tmp_path):
    """The lr grid's runs of the first seed choose by validation mean AUC; the arch's row then
    shows the runs at that lr. Test AUC never enters the choice."""
    from longseq.bench.quality_plan import LR, chosen_lr, lr_name
    from longseq.bench.quality_report import write_report
    from longseq.schemas.contracts import TASKS

    plan = PLANS["quick"]
    assert plan.lrs == (1e-3, LR, 1e-2, 3e-2) and lr_name("gen-din", LR, "L2000") == "gen-din-L2000"

    def entry(valid_auc: float, test_auc: float) -> dict:
        def at(auc: float) -> dict:
            return {"2000": {"tasks": {t: {"auc": auc, "gauc": auc, "logloss": 0.5, "positive_rate": 0.3} for t in TASKS},
                             "mean_history": 100.0, "auc_intervals": {"mean": (auc - 0.02, auc + 0.02)}}}
        return {"config": "{}", "train_seconds": 1.0, "eval": {"valid": at(valid_auc), "test": at(test_auc)}}

    # din: 1e-2 is best on validation (and worst on test); mean: 1e-3 is best on test only
    runs = {"gen-din-lr0.001-L2000-s0": entry(0.60, 0.70), "gen-din-L2000-s0": entry(0.61, 0.69),
            "gen-din-lr0.01-L2000-s0": entry(0.65, 0.55), "gen-din-lr0.03-L2000-s0": {"config": "{}", "diverged": "nan"},
            "gen-mean-lr0.001-L2000-s0": entry(0.58, 0.75), "gen-mean-L2000-s0": entry(0.58, 0.60)}
    assert chosen_lr(runs, plan, "gen-din", "L2000", 2_000) == 1e-2
    assert chosen_lr(runs, plan, "gen-mean", "L2000", 2_000) == LR, "a tie keeps the default"
    assert chosen_lr(runs, plan, "gen-none", "L2000", 2_000) == LR, "nothing run yet: the default"
    text = write_report(runs, plan, "quick", tmp_path, "longseq bench quality --quick", "w", "m")
    din = next(line for line in text.splitlines() if line.startswith("| din, lr 0.01 |"))
    assert din.split("|")[7].strip() == "0.5500", "the row reports the chosen lr's test AUC"
    grid = next(line for line in text.splitlines() if line.startswith("| din |"))
    assert [c.strip() for c in grid.split("|")[2:7]] == ["0.6000", "0.6100", "0.6500", "diverged", "0.01"]


def test_one_setting_has_one_cache_key_however_it_is_spelt():
    """Length scaling names the paper's STCA {} and the baselines {"arch": "stca"}: the same
    run, so the same key (it used to be trained twice and flip-flop in the cache)."""
    from longseq.bench.quality import plan_config

    plan = PLANS["quick"]
    same = [plan_config(plan, 0, model=m).to_json() for m in ({}, {"arch": "stca"}, {"arch": "stca", "match_prior": None})]
    assert len(set(same)) == 1
    assert plan_config(plan, 0, model={"match_prior": 1.0}).to_json() != same[0]



@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_ablation_and_candidate_is_one_valid_change_from_the_paper(preset):
    """Each names fields the model has, changes the preset, and the one-head ablation keeps
    the preset's attention width. The long-history candidates are changes to tiny, the
    preset of the plans."""
    import dataclasses

    from longseq.bench.long_history import CANDIDATES
    from longseq.bench.quality_plan import ABLATIONS, ablation
    from longseq.trainer.model_config import ModelConfig

    base = PRESETS[preset]
    candidates = [c for c in CANDIDATES.values() if c] if preset == PLANS["quick"].preset else []
    for overrides in [ablation(slug, preset) for slug in ABLATIONS] + candidates:
        cfg = dataclasses.replace(base, **overrides)
        assert isinstance(cfg, ModelConfig) and cfg != base, overrides
    if preset == PLANS["quick"].preset:  # and every length sampler of bench extrapolation is a valid one
        from longseq.bench.extrapolation import SAMPLERS
        from longseq.features.lengths import LengthSampler

        assert len({LengthSampler(**fields).mean for fields in SAMPLERS.values()}) == len(SAMPLERS)
    one_head = dataclasses.replace(base, **ablation("head1", preset))
    assert one_head.heads == 1 and one_head.head_dim == base.heads * base.head_dim


@pytest.mark.subprocess
def test_bench_quality_device_that_is_not_there_is_one_line():
    """`longseq bench quality --device cuda:7` on a machine without it stops before any work."""
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    r = subprocess.run([sys.executable, "-m", "longseq.cli.main", "bench", "quality", "--quick", "--skip-movielens",
                        "--device", "cuda:7", "--work", "/nonexistent/never-made"], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "cuda:7 is not available" in r.stderr


@pytest.mark.parametrize("spec", ["default", "ecommerce"])
def test_bench_signal_scores_the_first_task_of_the_logs_spec(spec, capsys):
    """`bench signal --spec`: logs generated in the spec's shape, scored on its first task
    (finish; click), and the same-author score gains from 5 to 50 history events."""
    from longseq.bench.history_signal import main
    from longseq.schemas.spec import SPECS_DIR

    assert main(["--profile", "tiny", "--lengths", "5,50", "--min-events", "200",
                 "--spec", str(SPECS_DIR / f"{spec}.yaml")]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| 5") or
            line.startswith("| 50")]
    short, long = (float(r[2]) for r in rows)
    assert 0.5 <= short < long < 1.0, rows


def test_the_learning_rate_search_goes_on_while_the_best_is_at_an_end_of_those_tried():
    from longseq.bench.quality_plan import next_lr

    grid = [1e-3, 3e-3, 1e-2, 3e-2]
    rising = {lr: 0.5 + lr for lr in grid}
    assert next_lr(grid, rising) == 1e-1, "best at the top: one step up"
    assert next_lr(grid, {lr: 0.6 - lr for lr in grid}) == 3e-4, "best at the bottom: one step down"
    assert next_lr(grid, {**rising, 1e-2: 0.9}) is None, "best inside: settled"
    assert next_lr([*grid, 1e-1], rising) is None, "1e-1 diverged: the best (3e-2) is inside what was tried"
    assert next_lr([3e-2, 1e-1, 3e-1], {3e-2: 0.5, 1e-1: 0.6, 3e-1: 0.7}) is None, "the ladder's end"
    assert next_lr(grid, {}) is None


@pytest.mark.slow
def test_model_flops_count_each_request_alone_without_padding():
    """bench gpu's MFU numerator: for requests of one length it is the whole batch's count;
    for mixed lengths it is less than the padded batch's (which pads to the longest)."""
    from torch.utils.flop_counter import FlopCounterMode

    from longseq.bench.gpu import useful_flops
    from longseq.reader.testing import random_batch
    from longseq.trainer.model import loss_fn, make_model
    from longseq.trainer.model_config import PRESETS

    def counted(hist: list[int], tgt: list[int]) -> int:
        with torch.device("meta"):
            model = make_model(PRESETS["tiny"])
        batch = random_batch(hist, tgt).to("meta")
        with FlopCounterMode(display=False) as counter:
            loss_fn(model(batch), batch).backward()
        return counter.get_total_flops()

    assert useful_flops(PRESETS["tiny"], [40, 40, 40], [3, 3, 3]) == counted([40, 40, 40], [3, 3, 3]) > 0
    assert useful_flops(PRESETS["tiny"], [400, 8], [3, 3]) < counted([400, 8], [3, 3])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.subprocess
def test_bench_gpu_without_a_gpu_is_one_line():
    r = subprocess.run([sys.executable, "-m", "longseq.cli.main", "bench", "gpu", "--data", "/nonexistent"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "needs a CUDA device" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize("spec", ["default", "ecommerce"])
def test_bench_gpu_runs_its_measurements_without_petastorm_or_polars(tmp_path, spec):
    """What a GPU host has (torch, numpy, pyarrow) is enough: the script's training, reader
    and scoring parts run on the CPU with Petastorm, polars and Spark unimportable. Data of
    another spec (`--prepare --spec`) trains that spec's model in the reader part."""
    from longseq.bench.gpu import copy_days
    from longseq.pipelines.sample import prepare_generated
    from longseq.etl.batch.polars_engine import PolarsEngine
    from longseq.schemas.spec import SPECS_DIR, load_spec
    from longseq.sources.generate import PROFILES

    sample = prepare_generated(tmp_path / "sample", PROFILES["tiny"], seed=5, max_len=300,
                               engine=PolarsEngine(row_group_bytes=16 * 1024), spec=load_spec(SPECS_DIR / f"{spec}.yaml"))
    copy_days(sample.data, tmp_path / "carried", [sample.end])
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nfor m in ('polars', 'petastorm', 'pyspark', 'great_expectations', 'airflow'):\n"
        "    sys.modules[m] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-m", "longseq.cli.main", "bench", "gpu", "--device", "cpu", "--preset", "tiny",
                        "--batch-size", "4", "--steps", "1", "--data", str(tmp_path / "carried"), "--skip",
                        # the data-free parts do not depend on the data's spec
                        "compile" if spec == "default" else "compile,training,scoring"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "the reader supplies" in r.stdout and "FAILED" not in r.stdout
    if spec == "default":
        assert "| the paper's STCA, row-wise Adagrad tables |" in r.stdout and "Scoring one request" in r.stdout


def test_the_stream_bench_lands_no_row_after_the_watermark_passed_it(tmp_path):
    """bench/stream.py cuts the days into files in event-time order moved by less than the
    watermark delay: a stream reading them in order sees every row on time."""
    import datetime as dt

    from longseq.bench.stream import arrival_files
    from longseq.sources import SAMPLE_START
    from longseq.sources.generate import PROFILES, generate

    generate(tmp_path / "raw", PROFILES["tiny"], seed=1, start=SAMPLE_START)
    days = [SAMPLE_START, SAMPLE_START + dt.timedelta(days=1)]
    delay = 120_000
    files = arrival_files(tmp_path / "raw", days, 30, delay, seed=0)
    assert sum(t.num_rows for _, _, t in files) == sum(
        1 for d in days for f in (tmp_path / "raw" / f"ds={d}").glob("*.parquet") for _ in range(
            __import__("pyarrow.parquet").parquet.ParquetFile(f).metadata.num_rows))
    watermark = 0
    for _, _, table in files:
        ts = table.column("event_ts").to_pylist()
        assert min(ts) >= watermark
        watermark = max(watermark, max(ts) - delay)


def test_a_part_of_the_plan_runs_the_same_runs_as_the_whole_plan(tmp_path):
    """bench quality --sections/--archs/--ablations: the narrowed plan keeps STCA (every
    comparison's reference) and the matched and longer rows of the archs it keeps, trains
    those runs with the whole plan's settings (one cache), and its report has only its sections."""
    from longseq.bench.quality import plan_config
    from longseq.bench.quality_plan import SECTIONS, narrowed
    from longseq.bench.quality_report import write_report

    whole = PLANS["full"]
    part = narrowed(whole, ("ablations", "baselines"), ("din", "none"), ("embmatch",))
    assert part.sections == ("baselines", "ablations"), "in the plan's order"
    assert part.archs == ("none", "din", "stca") and part.matched == ("none", "din")
    assert part.more_steps == (("din", 1_000), ("stca", 1_000)) and part.ablations == ("embmatch",)
    assert part.ml_archs == ("none", "din", "stca")
    assert narrowed(whole) == whole and narrowed(whole, SECTIONS) == whole
    assert plan_config(part, 1, model={"arch": "din"}).to_json() == plan_config(whole, 1, model={"arch": "din"}).to_json()
    text = write_report({}, part, "full", tmp_path, "longseq bench quality --sections baselines,ablations", "w", "m")
    assert "**STCA against the baselines**" in text and "**Ablations**" in text
    assert "**Length scaling**" not in text and "**Extrapolation**" not in text and "MovieLens latest-small" not in text
    assert "Part of the plan: sections baselines, ablations" in text
    assert "Part of the plan" not in write_report({}, whole, "full-small", tmp_path, "c", "w", "m")


def test_bench_quality_refuses_a_part_it_does_not_have(capsys):
    from longseq.bench.quality import main

    with pytest.raises(SystemExit) as e:
        main(["--quick", "--sections", "baselines,lengths", "--report-only"])
    assert e.value.code == 2 and "--sections: unknown lengths" in capsys.readouterr().err


def test_bench_train_floor_compares_chunk_sizes_on_one_batch(capsys):
    """One row per chunk size of the history path, each of the same batch and FLOPs, with a
    floor below the step (the floor is the matmuls alone at the GEMM rate)."""
    from longseq.bench.train_floor import main

    argv = ["--preset", "tiny", "--samplers", "ushaped", "--candidates", "paper", "--batch-size", "3",
            "--targets", "2", "--repeat", "2", "--threads", "1", "--chunk-mib", "0,0.01"]
    assert main(argv) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny")]
    assert [r[4].strip() for r in rows] == ["0", "0.01"]
    tokens, flops, floor = ({r[i] for r in rows} for i in (5, 8, 9))
    assert len(tokens) == len(flops) == len(floor) == 1
    for r in rows:
        assert 0 < float(r[-1]) < 1.5 and float(r[-3]) > 0  # floor/step, step s
        assert 0 < float(r[10]) and 0 < float(r[-2]) < 1.5  # matmuls alone s, alone/step


def test_step_matmuls_are_what_torchs_flop_counter_counts():
    """The matmuls recorded for 'matmuls alone' are the step's: their FLOPs equal torch's
    FlopCounterMode's over the same batched forward + backward, transposed operands replayed."""
    import math

    from torch.utils.flop_counter import FlopCounterMode

    from longseq.bench.model_throughput import bench_model
    from longseq.bench.train_floor import matmuls_alone, step_matmuls
    from longseq.reader.testing import random_batch
    from longseq.trainer.model import loss_fn

    model, batch = bench_model("tiny", "stca", "cpu"), random_batch([40, 7, 300], [2, 1, 3])
    calls = step_matmuls(model, batch)

    def flops(name: str, layouts) -> int:
        (a, _), (b, _) = layouts[-2:]  # addmm / baddbmm: the bias or input first
        return 2 * math.prod(a) * b[-1]

    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(model(batch), batch).backward()
    assert sum(flops(*key) * n for key, n in calls.items()) == counter.get_total_flops() > 0
    assert any(t for (_, layouts) in calls for _, t in layouts)  # the backward's transposed operands
    assert matmuls_alone(calls, repeat=1) > 0


def test_bench_names_refuse_an_unknown_choice_with_the_flag_and_the_choices(capsys):
    from longseq.bench.extrapolation import main

    with pytest.raises(SystemExit) as e:
        main(["--samplers", "short-only,longest"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--samplers: unknown longest; choose from ushaped," in err


def test_bench_buckets_pairs_each_seed_with_and_without_buckets(tmp_path):
    from longseq.bench.length_buckets import report, run_name
    from longseq.bench.quality import Results
    from longseq.trainer.train_config import BUCKET_POOL

    def entry(auc: float, seconds: float) -> dict:
        served = {str(L): {"tasks": {"finish": {"auc": auc}, "skip": {"auc": auc + 0.02}}} for L in (2_000, 10_000)}
        return {"eval": {"valid": served, "test": served}, "train_seconds": seconds}

    runs = {}
    for seed, (without, with_) in enumerate([(0.60, 0.62), (0.70, 0.66)]):
        runs[run_name("stca", 0, seed)] = entry(without, 10.0)
        runs[run_name("stca", BUCKET_POOL, seed)] = entry(with_, 5.0)
    lines = report(Results(tmp_path / "results.json", runs), [0, 1])
    assert len(lines) == 3  # header, rule, stca: stca+ext has not run
    assert "0.6100 -> 0.6300" in lines[2] and "0.7100 -> 0.6700" in lines[2]  # mean AUC over the tasks
    assert "| -0.0100 ± 0.0424 |" in lines[2] and lines[2].endswith("| 0.50 |")  # +0.02 and -0.04; half the time
