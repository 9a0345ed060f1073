"""Issue 17, the trainer side: no silent corruption. A resume checks the data it reads, config
files are type-checked, --max-steps and the lr schedule agree, and an unreadable newest
checkpoint falls back to the one before it. Real published data, real torch, real YAML."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from longseq.cli.main import main
from longseq.pipelines.sample import build_and_publish, prepare_generated
from longseq.dataset.published import published_files
from longseq.schemas.errors import LongseqError
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES
from longseq.trainer import checkpoint
from longseq.trainer.evaluate import evaluate
from longseq.trainer.train_config import learning_rate, TrainConfig
from longseq.trainer.train import train

START = SAMPLE_START
END = START + dt.timedelta(days=1)
QUIET = lambda m: None  # noqa: E731


def _engine():
    from longseq.etl.batch.polars_engine import PolarsEngine

    return PolarsEngine(row_group_bytes=16 * 1024)  # small row groups: several per day


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return prepare_generated(tmp_path_factory.mktemp("reliability"), PROFILES["tiny"], seed=3, max_len=64,
                             engine=_engine())


@pytest.fixture(scope="module")
def data(sample) -> Path:
    return sample.data


def config(**kw) -> TrainConfig:
    base = dict(preset="tiny", batch_size=16, length={"min_len": 8, "max_len": 64}, checkpoint_every=2, log_every=1,
                warmup_steps=3, lr=3e-3, device="cpu")
    return TrainConfig(**{**base, **kw})


def batches_per_epoch(data: Path, batch_size: int = 16) -> int:
    return math.ceil(sum(f.rows for f in published_files(str(data), START, END)) / batch_size)


def log_rows(run: Path) -> list[dict]:
    with open(run / "train_log.csv") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- 1. a resume checks its data


def test_a_resume_on_other_days_is_refused_unless_allowed(data, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = config(max_steps=6)
    train(str(data), START, END, run, cfg, log=QUIET, stop_after=2)
    recorded = json.loads((run / "data.json").read_text())
    assert set(recorded["days"]) == {str(START), str(END)} and recorded["changes"] == []
    assert all(d["build_digest"] and d["build_run"] and d["rows"] > 0 for d in recorded["days"].values())
    with pytest.raises(LongseqError, match=rf"trained on .* {START}\.\.{END}.*days {START}\.\.{END}, now {END}\.\.{END}"
                                           r".*--allow-other-data"):
        train(str(data), END, END, run, cfg, log=QUIET)
    # the command line: one line on stderr, exit 1; then the flag goes on, and data.json says when
    args = ["train", "--data", str(data), "--start", str(END), "--run-dir", str(run), "--preset", "tiny",
            "--max-steps", "6", "--device", "cpu"]
    cli_cfg = json.loads(cfg.to_json())
    settings = tmp_path / "train.yaml"
    settings.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in cli_cfg.items()
                                  if k not in ("preset", "max_steps", "device")))
    args += ["--train-config", str(settings)]
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "now 2026-01-02..2026-01-02" in err and "--allow-other-data" in err, err
    assert main([*args, "--allow-other-data"]) == 0
    err = capsys.readouterr().err
    assert "on other data (--allow-other-data)" in err
    recorded = json.loads((run / "data.json").read_text())
    assert set(recorded["days"]) == {str(END)}
    assert [c["at_step"] for c in recorded["changes"]] == [2]
    assert set(recorded["changes"][0]["before"]["days"]) == {str(START), str(END)}
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["data_changed_at_steps"] == [2] and summary["steps"] == 6


@pytest.mark.slow
def test_a_resume_on_a_rebuilt_day_is_refused_and_a_moved_copy_is_not(sample, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(sample.data, copy)
    run = tmp_path / "run"
    cfg = config(max_steps=6)
    train(str(copy), START, END, run, cfg, log=QUIET, stop_after=2)
    # the same builds read from elsewhere are the same records: accepted, and noted
    moved = tmp_path / "moved"
    shutil.copytree(copy, moved)
    notes: list[str] = []
    train(str(moved), START, END, run, cfg, log=notes.append, stop_after=2)
    assert any("reads the same builds from" in n for n in notes), notes
    # a real rebuild of the last day, published again under the same date
    build_and_publish(sample.raw, moved, END, END, engine=_engine(), max_len=64)
    with pytest.raises(LongseqError, match=rf"ds={END} was rebuilt \(build \w+, now \w+\).*--allow-other-data"):
        train(str(moved), START, END, run, cfg, log=QUIET)
    assert train(str(moved), START, END, run, cfg, log=QUIET, allow_other_data=True)["steps"] == 6


# ---------------------------------------------------------------- 2. config files are type-checked


def test_training_config_files_read_numbers_as_meant_and_name_a_wrong_type(tmp_path, capsys):
    f = tmp_path / "train.yaml"
    # YAML 1.1 reads 3e-3, 1e1 and 1e-1 as strings; 1_000 as an int
    f.write_text("preset: tiny\nlr: 3e-3\nwarmup_steps: 1e1\nbatch_size: 1_000\nembedding_lr: 2\n"
                 "model: {dim: 48, match_prior: 1}\nlength: {min_len: 8, max_len: 64, alpha: 2e-1}\n")
    cfg = TrainConfig.from_file(f)
    assert cfg.lr == 0.003 and isinstance(cfg.lr, float)
    assert cfg.warmup_steps == 10 and isinstance(cfg.warmup_steps, int) and cfg.batch_size == 1000
    assert cfg.embedding_lr == 2.0 and isinstance(cfg.embedding_lr, float)
    assert cfg.model == {"dim": 48, "match_prior": 1.0} and cfg.length["alpha"] == 0.2
    bad = {
        "lr: abc": "train.yaml: lr: expected a float, got 'abc'",
        "epochs: 2.5": "train.yaml: epochs: expected an integer or null, got 2.5",
        "truncation: 'yes'": "train.yaml: truncation: expected true or false, got 'yes'",
        "token_budget: [1]": "train.yaml: token_budget: expected an integer or null, got [1]",
        "model: {dim: big}": "train.yaml: model.dim: expected an integer, got 'big'",
        "model: {dimm: 3}": "train.yaml: model: unknown keys ['dimm']",
        "preset: 3": "train.yaml: preset: expected a string (quote it), got 3",
    }
    for text, message in bad.items():
        f.write_text(text + "\n")
        with pytest.raises(LongseqError) as e:
            TrainConfig.from_file(f)
        assert str(e.value).startswith(str(tmp_path / message)), (text, str(e.value))
    f.write_text("lr: abc\n")
    assert main(["train", "--data", str(tmp_path), "--start", str(START), "--run-dir", str(tmp_path / "r"),
                 "--train-config", str(f)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"longseq train: error: {f}: lr: expected a float, got 'abc'", err


def test_validation_and_spark_config_files_are_type_checked(tmp_path):
    from longseq.etl.spark_session import SparkConfig
    from longseq.etl.gates.validation import ValidationConfig

    f = tmp_path / "v.yaml"
    f.write_text("raw_mostly: 9.9e-1\nlateness_ms: 1e3\ntargets_per_request: [1, 6.4e1]\n"
                 "label_rates: {like: [0, 2e-1]}\nwarn_only: [history_sorted]\n")
    v = ValidationConfig.from_file(str(f))
    assert v.raw_mostly == 0.99 and v.lateness_ms == 1000 and isinstance(v.lateness_ms, int)
    assert v.targets_per_request == (1.0, 64.0) and v.label_rates["like"] == (0.0, 0.2)
    assert v.warn_only == ("history_sorted",)
    for text, message in {"lateness_ms: 1.5e0": "lateness_ms: expected an integer, got '1.5e0'",
                          "label_rates: {like: [0.1]}": "label_rates.like: expected a list of 2",
                          "warn_only: 3": "warn_only: expected a list (each a string), got 3"}.items():
        f.write_text(text + "\n")
        with pytest.raises(LongseqError) as e:
            ValidationConfig.from_file(str(f))
        assert str(e.value).startswith(f"{f}: {message}"), str(e.value)
    s = tmp_path / "spark.yaml"
    s.write_text("shuffle_partitions: 1e1\nconf: {spark.sql.adaptive.enabled: false, spark.executor.cores: 2}\n")
    spark = SparkConfig.from_file(s)
    assert spark.shuffle_partitions == 10 and isinstance(spark.shuffle_partitions, int)
    assert spark.conf == {"spark.sql.adaptive.enabled": "false", "spark.executor.cores": "2"}
    s.write_text("shuffle_partitions: many\n")
    with pytest.raises(LongseqError, match=f"^{re.escape(str(s))}: shuffle_partitions: expected an integer, got 'many'$"):
        SparkConfig.from_file(s)


# ---------------------------------------------------------------- 3. steps and schedule agree


@pytest.mark.slow
def test_max_steps_past_one_epoch_trains_that_many_steps_and_the_schedule_ends_there(data, tmp_path):
    per_epoch = batches_per_epoch(data)
    steps = per_epoch * 2 + 3
    cfg = config(max_steps=steps, checkpoint_every=10**6)
    notes: list[str] = []
    summary = train(str(data), START, END, tmp_path / "run", cfg, log=notes.append)
    assert summary["steps"] == summary["schedule_steps"] == steps and summary["finished"]
    rows = log_rows(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
    assert int(rows[-1]["epoch"]) == 2, "into a third epoch"
    assert float(rows[-1]["lr"]) == pytest.approx(cfg.lr * cfg.min_lr_ratio), "the cosine decay ran to its end"
    assert float(rows[steps // 2]["lr"]) == pytest.approx(learning_rate(cfg, steps // 2, steps))
    assert any(f"training {steps} steps = {steps / per_epoch:.2f} epochs of {per_epoch} batches" in n for n in notes)


def test_with_epochs_and_max_steps_the_first_limit_stops_and_sizes_the_schedule(data, tmp_path):
    per_epoch = batches_per_epoch(data)
    notes: list[str] = []
    cfg = config(epochs=2, max_steps=per_epoch * 3, checkpoint_every=10**6)
    summary = train(str(data), START, END, tmp_path / "run", cfg, log=notes.append)
    assert summary["steps"] == summary["schedule_steps"] == 2 * per_epoch
    assert float(log_rows(tmp_path / "run")[-1]["lr"]) == pytest.approx(cfg.lr * cfg.min_lr_ratio)
    assert any("the first limit reached, epochs, stops" in n for n in notes), notes
    # a default single epoch is the same setting as a config saved with epochs 1
    assert config().same_settings(config(epochs=1).to_json())
    assert not config(max_steps=5).same_settings(config(epochs=1, max_steps=5).to_json())


@pytest.mark.slow
def test_a_run_cut_after_an_epoch_boundary_resumes_exactly_under_max_steps(data, tmp_path):
    per_epoch = batches_per_epoch(data)
    cfg = config(max_steps=per_epoch + 4, checkpoint_every=3)
    whole = train(str(data), START, END, tmp_path / "whole", cfg, log=QUIET)
    cut = train(str(data), START, END, tmp_path / "cut", cfg, log=QUIET, stop_after=per_epoch + 1)
    assert not cut["finished"]
    resumed = train(str(data), START, END, tmp_path / "cut", cfg, log=QUIET)
    assert resumed["steps"] == whole["steps"] == per_epoch + 4
    assert resumed["weights_sha256"] == whole["weights_sha256"]


def test_the_plan_counts_each_ranks_batches_with_several_processes(data):
    """Two shards read different row groups each epoch; training stops when one runs out:
    the plan's count against the batches two real readers give."""
    from longseq.reader.readers import ArrowRequestReader
    from longseq.trainer.step_plan import plan_steps
    from longseq.trainer.train_config import reader_config

    files = published_files(str(data), START, END)
    cfg = config(epochs=3)
    readers = [ArrowRequestReader([f.url for f in files], reader_config(cfg, rank, 2)) for rank in range(2)]
    counted = [min(sum(1 for _ in r.batches(epoch)) for r in readers) for epoch in range(3)]
    plan = plan_steps(cfg, files, world=2)
    assert plan.total == sum(counted) and plan.per_epoch == counted[0]
    assert plan_steps(dataclasses.replace(cfg, epochs=None, max_steps=counted[0] + 1), files, 2).epochs == \
        pytest.approx(1 + 1 / counted[1])


# ---------------------------------------------------------------- 4. checkpoint fallback


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.slow
def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(data, tmp_path):
    cfg = config(max_steps=10)
    whole = train(str(data), START, END, tmp_path / "whole", cfg, log=QUIET)
    run = tmp_path / "cut"
    train(str(data), START, END, run, cfg, log=QUIET, stop_after=6)  # checkpoints at 2, 4, 6
    _truncate(run / "checkpoints" / "step-000006.pt")
    notes: list[str] = []
    resumed = train(str(data), START, END, run, cfg, log=notes.append)
    assert any(n.startswith("checkpoint step-000006.pt is unreadable (") and n.endswith("falling back to step-000004.pt")
               for n in notes), notes
    assert any("resuming" in n and "step 4" in n for n in notes)
    assert resumed["weights_sha256"] == whole["weights_sha256"], "the older checkpoint holds its own position"


def _flip_a_weight_byte(path: Path) -> None:
    """Flip one byte in the middle of the checkpoint's largest tensor: the file still unzips
    and loads (torch checks no CRC), with one wrong weight."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        entry = max(z.infolist(), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(entry.header_offset + 26)  # the local header's name and extra-field lengths
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        at = entry.header_offset + 30 + name_len + extra_len + entry.file_size // 2
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x40]))


def test_a_checkpoint_whose_bytes_changed_is_passed_over_for_the_previous_one(data, tmp_path, capsys):
    """A bit flipped inside a weight: the file loads, but no longer matches the SHA-256
    written with it, so evaluate falls back to the checkpoint before it and says why."""
    run = tmp_path / "run"
    train(str(data), START, END, run, config(max_steps=4), log=QUIET)  # checkpoints at 2, 4
    newest = run / "checkpoints" / "step-000004.pt"
    _flip_a_weight_byte(newest)
    import torch

    assert set(torch.load(newest, weights_only=True)) >= set(checkpoint.KEYS), "still loads: only its digest tells"
    capsys.readouterr()
    assert evaluate(run, str(data), END, log=QUIET, bootstrap=0)["step"] == 2
    err = capsys.readouterr().err
    assert "checkpoint step-000004.pt is unreadable (its bytes do not match step-000004.pt.sha256" in err, err
    assert "falling back to step-000002.pt" in err


def test_evaluate_falls_back_past_unreadable_checkpoints_and_fails_only_when_none_is_readable(data, tmp_path, capsys):
    run = tmp_path / "run"
    train(str(data), START, END, run, config(max_steps=6), log=QUIET)  # checkpoints at 2, 4, 6
    _truncate(run / "checkpoints" / "step-000006.pt")
    capsys.readouterr()
    result = evaluate(run, str(data), END, log=QUIET, bootstrap=0)
    err = capsys.readouterr().err
    assert result["step"] == 4
    assert "checkpoint step-000006.pt is unreadable (" in err and "falling back to step-000004.pt" in err, err
    (run / "checkpoints" / "step-000006.pt").unlink()  # the one latest.json names, missing
    assert evaluate(run, str(data), END, log=QUIET, bootstrap=0)["step"] == 4
    assert "checkpoint step-000006.pt is unreadable (missing); falling back to step-000004.pt" in capsys.readouterr().err
    for path in (run / "checkpoints").glob("step-*.pt"):
        _truncate(path)
    with pytest.raises(checkpoint.CheckpointError, match="no readable checkpoint in .*step-000006.pt is unreadable"):
        evaluate(run, str(data), END, log=QUIET, bootstrap=0)


# ---------------------------------------------------------------- 6. the files a run reads are pinned


@pytest.mark.parametrize("change", ["rebuilt", "same bytes"])
def test_a_day_replaced_while_training_stops_the_run_before_any_checkpoint_holds_it(sample, tmp_path, change):
    """A day rebuilt while `train` runs (its manifest removed, its file rewritten with the
    same rows in another order) must not be trained on: the run stops in one line naming the
    file before its next checkpoint. A file put back with the same bytes is still the one
    the manifest vouched for, and training goes on."""
    import pyarrow.parquet as pq

    copy = tmp_path / "data"
    shutil.copytree(sample.data, copy)
    part = copy / "requests" / f"ds={END}" / "part-00000.parquet"
    table = pq.read_table(part)

    replaced: list[str] = []

    def replace_day(message: str) -> None:
        if replaced or not message.startswith("training "):  # the run has listed and checked its files
            return
        replaced.append(message)
        if change == "rebuilt":
            (copy / "published" / f"ds={END}" / "manifest.json").unlink()
            pq.write_table(table.take(list(range(table.num_rows - 1, -1, -1))), part)
        else:
            blob = part.read_bytes()
            part.unlink()
            part.write_bytes(blob)

    run = tmp_path / "run"
    if change == "same bytes":
        assert train(str(copy), START, END, run, config(max_steps=4), log=replace_day)["steps"] == 4
        return
    with pytest.raises(LongseqError, match="changed while this run read it") as e:
        train(str(copy), START, END, run, config(max_steps=4), log=replace_day)
    assert str(part) in str(e.value) and "\n" not in str(e.value)
    assert not list((run / "checkpoints").glob("*.pt")), "no checkpoint trained on the new bytes"


def test_scores_of_a_day_replaced_during_the_pass_are_refused(sample, tmp_path):
    """evaluate and score read their days in one pass: a file replaced during it (the
    first batch read, then the day rewritten) ends the pass with one line naming it."""
    import pyarrow.parquet as pq

    from longseq.trainer.evaluate import load_model, scored_batches

    copy = tmp_path / "data"
    shutil.copytree(sample.data, copy)
    run = tmp_path / "run"
    train(str(copy), START, END, run, config(max_steps=2), log=QUIET)
    model = load_model(run, "cpu", warn=QUIET)[0]
    scored = scored_batches(model, str(copy), START, END, max_len=None, batch_size=4)
    next(scored)
    part = copy / "requests" / f"ds={END}" / "part-00000.parquet"
    source = pq.ParquetFile(part)
    groups = [source.read_row_group(g) for g in range(source.num_row_groups)]
    with pq.ParquetWriter(part, groups[0].schema) as writer:  # the same row groups, each in reverse order
        for group in groups:
            writer.write_table(group.take(list(range(group.num_rows - 1, -1, -1))))
    with pytest.raises(LongseqError, match="changed while this run read it") as e:
        list(scored)
    assert str(part) in str(e.value)
