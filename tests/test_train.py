"""The training loop, evaluation and scoring on real published data: exact resume, the NaN
guard, safe checkpoints, metrics against brute force, and two processes training in step."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from longseq.pipelines.sample import prepare_generated
from longseq.schemas.errors import LongseqError
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES
from longseq.trainer import checkpoint
from longseq.trainer.evaluate import evaluate, score
from longseq.trainer.metrics import auc, gauc, logloss
from longseq.trainer.train_config import TrainConfig
from longseq.trainer.run import TrainingDiverged
from longseq.trainer.train import train
from tests.records import read_records, record_rows

START = SAMPLE_START
END = START + dt.timedelta(days=1)
LONGSEQ = str(Path(sys.executable).with_name("longseq"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from longseq.etl.batch.polars_engine import PolarsEngine

    sample = prepare_generated(tmp_path_factory.mktemp("train"), PROFILES["tiny"], seed=3, max_len=64,
                               engine=PolarsEngine(row_group_bytes=16 * 1024))
    assert (sample.start, sample.end) == (START, END)
    return sample.data


def config(**kw) -> TrainConfig:
    base = dict(preset="tiny", epochs=2, batch_size=16, length={"min_len": 8, "max_len": 64}, checkpoint_every=4,
                log_every=2, warmup_steps=3, lr=3e-3)
    return TrainConfig(**{**base, **kw})


def test_length_buckets_are_on_by_default_for_sampled_windows_only():
    """bucket_pool None (the default) batches sampled windows from pools of BUCKET_POOL, and
    reads fixed-length histories and grouped user-days as they come; a value given is kept.
    A config that spells the default out has the same settings, so caches and resumes hold."""
    from longseq.trainer.train_config import BUCKET_POOL, reader_config

    assert reader_config(TrainConfig(preset="tiny")).bucket_pool == BUCKET_POOL > 0
    assert reader_config(TrainConfig(preset="tiny", truncation=False, max_len=100)).bucket_pool == 0
    assert reader_config(TrainConfig(preset="tiny", group_user_days=True)).bucket_pool == 0
    assert reader_config(TrainConfig(preset="tiny", bucket_pool=0)).bucket_pool == 0
    assert reader_config(TrainConfig(preset="tiny", truncation=False, bucket_pool=64)).bucket_pool == 64
    default = TrainConfig(preset="tiny")
    assert json.loads(default.to_json())["bucket_pool"] is None
    assert default.same_settings(TrainConfig(preset="tiny", bucket_pool=BUCKET_POOL).to_json())
    assert default.differences(TrainConfig(preset="tiny", bucket_pool=0).to_json()) == [
        f"bucket_pool 0, now {BUCKET_POOL}"]
    fixed = TrainConfig(preset="tiny", truncation=False, max_len=100)
    assert fixed.same_settings(TrainConfig(preset="tiny", truncation=False, max_len=100, bucket_pool=0).to_json())
    with pytest.raises(LongseqError, match="bucket_pool must be >= 0"):
        TrainConfig(bucket_pool=-1)


def test_train_bucket_pool_flag_reaches_the_reader(tmp_path):
    from longseq.cli.main import build_parser
    from longseq.cli.model_commands import train_config
    from longseq.trainer.train_config import BUCKET_POOL, reader_config

    base = ["train", "--data", str(tmp_path), "--start", str(START), "--run-dir", str(tmp_path / "run")]
    for flags, pool in (([], BUCKET_POOL), (["--bucket-pool", "0"], 0), (["--bucket-pool", "64"], 64)):
        assert reader_config(train_config(build_parser().parse_args([*base, *flags]))).bucket_pool == pool


@pytest.mark.parametrize("embedding_optimizer", ["adamw", "rowwise_adagrad"])
@pytest.mark.slow
def test_a_resumed_run_reaches_the_same_weights(data, tmp_path, embedding_optimizer):
    cfg = config(embedding_optimizer=embedding_optimizer)
    whole = train(str(data), START, END, tmp_path / "whole", cfg, log=lambda m: None)
    first = train(str(data), START, END, tmp_path / "cut", cfg, log=lambda m: None, stop_after=7)
    assert not first["finished"] and first["steps"] == 7
    resumed = train(str(data), START, END, tmp_path / "cut", cfg, log=lambda m: None)
    assert resumed["finished"] and resumed["steps"] == whole["steps"] > 7
    assert resumed["weights_sha256"] == whole["weights_sha256"]
    other_seed = train(str(data), START, END, tmp_path / "seed1", dataclasses.replace(cfg, seed=1), log=lambda m: None)
    assert other_seed["weights_sha256"] != whole["weights_sha256"]
    if embedding_optimizer != "adamw":
        return
    log = (tmp_path / "whole" / "train_log.csv").read_text().splitlines()
    assert log[0] == "step,epoch,loss,lr,requests_per_s,tokens_per_s" and len(log) > 3
    assert list((tmp_path / "whole" / "tensorboard").glob("events.out.tfevents.*"))


def test_a_run_dir_with_other_settings_is_not_resumed(data, tmp_path):
    train(str(data), START, END, tmp_path / "run", config(max_steps=2), log=lambda m: None)
    with pytest.raises(LongseqError, match=r"other settings \(lr 0\.003, now 0\.01; seed 0, now 5\)") as refused:
        train(str(data), START, END, tmp_path / "run", config(max_steps=2, lr=1e-2, seed=5), log=lambda m: None)
    assert "max_steps" not in str(refused.value), "only what differs is named"


def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    import longseq.trainer.run as module  # where train_step looks loss_fn up

    real, calls = module.loss_fn, {"n": 0}

    def poisoned(logits, batch):
        calls["n"] += 1
        loss = real(logits, batch)
        return loss * float("nan") if calls["n"] > 5 else loss

    monkeypatch.setattr(module, "loss_fn", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 5 .* last good checkpoint is .*step-000004\.pt"):
        train(str(data), START, END, tmp_path / "run", config(), log=lambda m: None)
    state = checkpoint.load(checkpoint.latest(tmp_path / "run"))
    assert state["step"] == 4 and all(torch.isfinite(t).all() for t in state["model"].values())


def test_a_checkpoint_from_another_model_version_is_refused_clearly(data, tmp_path):
    run = tmp_path / "run"
    train(str(data), START, END, run, config(max_steps=2, epochs=1), log=lambda m: None)
    path = checkpoint.latest(run)
    state = checkpoint.load(path)
    state["model"]["retired_block.weight"] = torch.zeros(2)  # as if an older model had one more module
    torch.save(state, path)
    path.with_name(path.name + ".sha256").unlink()  # older versions wrote no digest
    with pytest.raises(checkpoint.CheckpointError, match=r"does not fit this version of the model.*retired_block"):
        evaluate(run, str(data), END, log=lambda m: None)
    with pytest.raises(checkpoint.CheckpointError, match="does not fit"):
        train(str(data), START, END, run, config(max_steps=2, epochs=1), log=lambda m: None)


def test_checkpoints_refuse_pickled_objects(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(checkpoint.CheckpointError, match="cannot load"):
        checkpoint.load(path)


@pytest.mark.slow
def test_evaluate_and_score_read_full_length(data, tmp_path):
    run = tmp_path / "run"
    train(str(data), START, END, run, config(), log=lambda m: None)
    result = evaluate(run, str(data), END, log=lambda m: None)
    records = record_rows(data / "requests" / f"ds={END}")
    assert result["requests"] == len(records)
    assert result["history_tokens"] == sum(len(r["hist_item_id"]) for r in records), "no truncation when evaluating"
    for task, m in result["tasks"].items():
        assert set(m) == {"auc", "gauc", "logloss", "positive_rate"}
        lo, hi = result["auc_intervals"][task]
        assert lo <= m["auc"] <= hi and hi - lo < 0.5, (task, lo, m["auc"], hi)
    lo, hi = result["auc_intervals"]["mean"]
    assert lo <= sum(m["auc"] for m in result["tasks"].values()) / len(result["tasks"]) <= hi
    assert json.loads((run / "eval" / f"{END}_{END}_lenfull.json").read_text())["tasks"] == result["tasks"]
    capped = evaluate(run, str(data), END, max_len=8, log=lambda m: None)
    assert capped["history_tokens"] < result["history_tokens"]
    rows = score(run, str(data), END, None, tmp_path / "scores.parquet")
    scores = pq.read_table(tmp_path / "scores.parquet")
    assert rows == scores.num_rows == result["targets"]
    assert {"request_id", "user_id", "item_id", "target_index", "score_finish"} <= set(scores.column_names)
    p = scores.column("score_like").to_numpy()
    assert ((p > 0) & (p < 1)).all()


@pytest.mark.slow
def test_score_refuses_an_existing_file_unless_told_and_never_leaves_a_partial_one(data, tmp_path, capsys):
    """`score --output` over the run's own checkpoint, or over earlier scores, is refused in
    one line and leaves the file as it was; --overwrite replaces it whole; a failed scoring
    leaves neither a partial file nor a half-replaced one."""
    from longseq.cli.main import main

    run = tmp_path / "run"
    train(str(data), START, END, run, config(), log=lambda m: None)
    checkpoint_file = max((run / "checkpoints").glob("*.pt"))
    before = checkpoint_file.read_bytes()
    days = ["--data", str(data), "--start", str(END), "--run-dir", str(run), "--device", "cpu"]
    capsys.readouterr()
    assert main(["score", *days, "--output", str(checkpoint_file)]) != 0
    err = capsys.readouterr().err
    assert "exists; pass --overwrite" in err and len(err.strip().splitlines()) == 1, err
    assert checkpoint_file.read_bytes() == before

    scores = tmp_path / "scores.parquet"
    assert main(["score", *days, "--output", str(scores)]) == 0
    first = scores.read_bytes()
    assert main(["score", *days, "--output", str(scores)]) != 0 and scores.read_bytes() == first
    assert main(["score", *days, "--output", str(scores), "--overwrite"]) == 0
    second = scores.read_bytes()
    assert pq.read_table(scores).equals(pq.read_table(io.BytesIO(first)))
    # a scoring that fails (a day that is not published) keeps the old file and leaves no partial one
    assert main(["score", *days[:3], "2026-03-01", *days[4:], "--output", str(scores), "--overwrite"]) != 0
    assert scores.read_bytes() == second
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []


def test_weighted_auc_and_bootstrap_intervals():
    """Integer weights count a target that many times (checked against repeating it); the
    interval resamples users, so it widens when a few users carry all the signal."""
    from longseq.trainer.metrics import bootstrap_auc, weighted_auc

    g = np.random.default_rng(1)
    y, s, w = g.integers(0, 2, 400), np.round(g.normal(size=400), 1), g.integers(0, 4, 400)
    assert weighted_auc(y, s, w) == pytest.approx(auc(np.repeat(y, w), np.repeat(s, w)))
    assert weighted_auc(y, s, np.ones(400)) == pytest.approx(auc(y, s))
    labels = g.integers(0, 2, (4_000, 4))
    few = g.integers(0, 4, 4_000)  # 4 users, whose scores carry very different signal
    many = few * 100 + g.integers(0, 100, 4_000)  # the same targets spread over 400 users
    logits = labels * np.array([0.0, 0.5, 1.5, 3.0])[few][:, None] + g.normal(size=(4_000, 4))
    wide, narrow = bootstrap_auc(labels, logits, few, seed=3), bootstrap_auc(labels, logits, many, seed=3)
    assert bootstrap_auc(labels, logits, many, seed=3) == narrow, "deterministic by seed"
    for key in narrow:
        point = auc(labels[:, 0], logits[:, 0]) if key == "finish" else None
        if point is not None:
            assert narrow[key][0] <= point <= narrow[key][1]
        assert wide[key][1] - wide[key][0] > narrow[key][1] - narrow[key][0]


def test_task_metrics_of_extreme_logits_warn_nothing():
    """A diverged run's logits of +-1000 give the probabilities 0 and 1 without numpy's overflow
    warning, and the same numbers as the plain sigmoid where it does not overflow."""
    import warnings

    from longseq.trainer.metrics import task_metrics

    labels = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0]])
    logits = np.array([[-1000.0, 1000.0, 3.0, -2.0], [800.0, -800.0, 0.5, 0.0], [2.0, -1.0, 1.5, -0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = task_metrics(labels, logits, np.zeros(3, dtype=np.int64))
    mild = task_metrics(labels[:, 2:], logits[:, 2:], np.zeros(3, dtype=np.int64), ("like", "comment"))
    probs = 1 / (1 + np.exp(-logits[:, 2:]))
    assert mild["like"]["logloss"] == pytest.approx(logloss(labels[:, 2], probs[:, 0]), rel=1e-12)
    assert metrics["like"]["logloss"] == pytest.approx(mild["like"]["logloss"], rel=1e-12)
    assert np.isfinite(metrics["finish"]["logloss"]) and metrics["finish"]["logloss"] > 5  # confidently wrong, clipped
    from longseq.trainer.metrics import sigmoid

    with warnings.catch_warnings():  # the scorer's float32 logits overflow e^-x from -89 on
        warnings.simplefilter("error")
        p32 = sigmoid(np.array([-1000.0, -100.0, 0.0, 2.0, 100.0], dtype=np.float32))
    assert p32.dtype == np.float32 and p32[0] == 0 and p32[-1] == 1
    np.testing.assert_allclose(p32[2:4], 1 / (1 + np.exp(-np.array([0.0, 2.0]))), rtol=1e-6)


def test_metrics_against_brute_force():
    g = np.random.default_rng(0)
    y = g.integers(0, 2, 300)
    s = np.round(g.normal(size=300) + y, 1)  # rounded: many ties
    pairs = [(a, b) for a in np.flatnonzero(y == 1) for b in np.flatnonzero(y == 0)]
    brute = np.mean([1.0 if s[a] > s[b] else 0.5 if s[a] == s[b] else 0.0 for a, b in pairs])
    assert auc(y, s) == pytest.approx(brute)
    users = g.integers(0, 7, 300)
    per_user = [(auc(y[users == u], s[users == u]), (users == u).sum()) for u in np.unique(users)]
    expected = sum(a * n for a, n in per_user if not np.isnan(a)) / sum(n for a, n in per_user if not np.isnan(a))
    assert gauc(y, s, users) == pytest.approx(expected)
    p = 1 / (1 + np.exp(-s))
    assert logloss(y, p) == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert np.isnan(auc(np.ones(5), np.arange(5)))


@pytest.mark.subprocess
def test_two_processes_train_in_step(data, tmp_path):
    """torchrun, gloo on CPU: each rank reads its own shard; DDP keeps the weights equal."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--", LONGSEQ, "train",
           "--data", str(data), "--start", str(START), "--end", str(END), "--run-dir", str(run),
           "--preset", "tiny", "--epochs", "1", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = json.loads((run / "train_summary.json").read_text())
    rank1 = json.loads((run / "train_summary.rank1.json").read_text())
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["steps"] == rank1["steps"] > 0
    assert rank0["weights_sha256"] == rank1["weights_sha256"]
    total = sum(read_records(f).num_rows for f in (data / "requests").rglob("*.parquet"))
    assert rank0["requests_seen"] + rank1["requests_seen"] <= total
    assert rank0["requests_seen"] > 0 and rank1["requests_seen"] > 0


@pytest.mark.subprocess
def test_a_killed_process_resumes_to_the_same_weights(data, tmp_path):
    """SIGKILL mid-run (not a clean stop): rerunning the command resumes from the newest
    checkpoint and ends with the weights of a run that was never interrupted."""
    import signal
    import time

    config_file = tmp_path / "train.yaml"
    config_file.write_text("preset: tiny\nepochs: 12\nbatch_size: 8\ncheckpoint_every: 5\nlog_every: 5\n"
                           "length: {min_len: 8, max_len: 64}\n")

    def command(run: Path) -> list[str]:
        return [LONGSEQ, "train", "--data", str(data), "--start", str(START), "--end", str(END), "--run-dir", str(run),
                "--train-config", str(config_file), "--device", "cpu"]

    proc = subprocess.Popen(command(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed" / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.exists() and not (tmp_path / "killed" / "train_summary.json").exists(), "killed mid-run"
    for run in (tmp_path / "killed", tmp_path / "whole"):
        done = subprocess.run(command(run), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    killed = json.loads((tmp_path / "killed" / "train_summary.json").read_text())
    whole = json.loads((tmp_path / "whole" / "train_summary.json").read_text())
    assert killed["steps"] == whole["steps"] and killed["weights_sha256"] == whole["weights_sha256"]


def test_bench_extrapolation_counts_the_history_that_training_reads(data):
    """history_work against an independent count from the published files: a fixed max_len
    keeps min(history, max_len) events of every request; padded keys are at least the events;
    a length sampler reads fewer events, and the same ones on every call."""
    from longseq.bench.extrapolation import history_work
    from longseq.dataset.published import published_files

    lengths = np.concatenate([read_records(f.url.removeprefix("file://"))
                              .column("hist_item_id").combine_chunks().value_lengths().to_numpy()
                              for f in published_files(str(data), START, END)])
    fixed = history_work(data, (START, END), config(truncation=False, max_len=32))
    assert fixed["events"] == int(np.minimum(lengths, 32).sum()) > 0
    assert fixed["events"] <= fixed["padded_keys"] <= 32 * len(lengths)
    sampled = history_work(data, (START, END), config(length={"min_len": 8, "max_len": 16}))
    assert sampled == history_work(data, (START, END), config(length={"min_len": 8, "max_len": 16}))
    assert sampled["events"] < fixed["events"]
    # length buckets: the same windows, drawn as before, in batches that pad less
    wide = config(length={"min_len": 8, "max_len": 64})
    bucketed = history_work(data, (START, END), dataclasses.replace(wide, bucket_pool=128))
    plain = history_work(data, (START, END), dataclasses.replace(wide, bucket_pool=0))
    assert bucketed["events"] == plain["events"] and bucketed["padded_keys"] < plain["padded_keys"]


def test_a_config_saved_before_a_field_existed_reads_as_training_did_then():
    """Checkpoints and benchmark caches hold configs as JSON; one written before bucket_pool
    existed means bucket_pool 0, whatever the default, and nothing else matches loosely."""
    cfg = TrainConfig(preset="tiny", bucket_pool=0)
    old = json.loads(cfg.to_json())
    del old["bucket_pool"]
    assert cfg.same_settings(json.dumps(old))
    assert not TrainConfig(preset="tiny", bucket_pool=64).same_settings(json.dumps(old))
    # today's default buckets sampled windows: not what a run saved without the field did
    assert not TrainConfig(preset="tiny").same_settings(json.dumps(old))
    assert not cfg.same_settings(json.dumps({**old, "lr": 1.0}))
    assert not cfg.same_settings(json.dumps({**old, "no_such_field": 1})) and not cfg.same_settings("{")


@pytest.mark.slow
def test_a_benchmark_run_killed_while_evaluating_is_not_trained_again(data, tmp_path):
    """bench quality's run(): a finished training with the same settings is evaluated, not
    retrained (its checkpoint stays as it was); other settings train afresh."""
    from longseq.bench.quality import Results, run
    from longseq.bench.quality_plan import Windows

    windows = Windows(train=(START, START), valid=(END, END), test=(END, END))
    results = Results(tmp_path / "results.json")
    cfg = config(max_steps=3, epochs=1, checkpoint_every=10**9)
    first = run(results, "r", data, windows, cfg, (32,), tmp_path)
    ckpt = tmp_path / "runs" / "r" / "checkpoints" / "step-000003.pt"
    stamp = ckpt.stat().st_mtime_ns
    results.runs.clear()  # as if killed before the result was saved
    again = run(results, "r", data, windows, cfg, (32,), tmp_path)
    assert ckpt.stat().st_mtime_ns == stamp
    assert again["eval"] == first["eval"] and again["train_seconds"] == first["train_seconds"]
    results.runs.clear()
    other = run(results, "r", data, windows, config(max_steps=3, epochs=1, checkpoint_every=10**9, seed=1), (32,),
                tmp_path)
    assert ckpt.stat().st_mtime_ns != stamp and other["train_seconds"] != first["train_seconds"]


@pytest.mark.parametrize("embedding_optimizer", ["adamw", "rowwise_adagrad"])
@pytest.mark.parametrize("arch,options", [("stca", {}), ("stca", {"match_prior": 1.0, "match_by": "embedding"}),
                                          ("din", {}), ("transformer", {}), ("mean", {})])
def test_a_training_step_never_waits_for_the_device(embedding_optimizer, arch, options, tmp_path):
    """On the meta device tensors have shapes but no data, so any read back to the host
    (.item(), int(t.max()), a data-dependent shape, `if tensor`) fails: a step that runs
    there keeps a GPU busy without stalls."""
    from longseq.reader.testing import random_batch
    from longseq.trainer.distributed import Context
    from longseq.trainer.train_log import TrainMeter
    from longseq.trainer.run import open_run, train_step

    cfg = TrainConfig(preset="tiny", model={"arch": arch, **options}, embedding_optimizer=embedding_optimizer)
    run = open_run(tmp_path, cfg, Context(0, 1, torch.device("meta")), 10, log=lambda m: None)
    assert run.model.embed.item.weight.device.type == "meta"
    meter = TrainMeter()
    for seed in range(2):
        batch = random_batch([5, 0, 12], [2, 3, 1], seed)
        _, loss, _ = train_step(run, batch, torch.autocast("cpu", enabled=False))
        meter.update(batch, loss)
        run.position.step += 1
    assert loss.device.type == "meta" and run.bad_step.device.type == "meta"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_flex_attention_and_its_limits_are_one_line_errors(data, tmp_path):
    with pytest.raises(LongseqError, match="CUDA only"):
        train(str(data), START, END, tmp_path / "run", config(attention="flex"), log=lambda m: None)
    with pytest.raises(LongseqError, match="embedding-match prior"):
        config(attention="flex", model={"match_prior": 1.0, "match_by": "embedding"})
    with pytest.raises(LongseqError, match="unknown attention kernel"):
        config(attention="sparse")


@pytest.mark.slow
def test_evaluate_and_score_with_the_flex_kernel_give_the_padded_results(data, tmp_path):
    train(str(data), START, END, tmp_path / "run", config(max_steps=4), log=lambda m: None)
    padded = evaluate(tmp_path / "run", str(data), START, END, log=lambda m: None, bootstrap=0)
    flex = evaluate(tmp_path / "run", str(data), START, END, log=lambda m: None, bootstrap=0, attention="flex")
    for task, m in padded["tasks"].items():
        assert flex["tasks"][task]["auc"] == pytest.approx(m["auc"], abs=1e-6)
        assert flex["tasks"][task]["logloss"] == pytest.approx(m["logloss"], abs=1e-6)
    assert score(tmp_path / "run", str(data), START, END, tmp_path / "s.parquet", attention="flex") == padded["targets"]
    run = tmp_path / "embmatch"
    train(str(data), START, END, run, config(max_steps=2, model={"match_prior": 1.0, "match_by": "embedding"}),
          log=lambda m: None)
    with pytest.raises(LongseqError, match="padded kernel"):
        evaluate(run, str(data), START, END, log=lambda m: None, attention="flex")
