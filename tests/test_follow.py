"""`longseq train --follow` (trainer/follow.py): online training on published hours, one
pass each, in order; stopped (a signal, or a set flag) and resumed, it ends with the weights
of a run never stopped; progressive validation scores each hour before training on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from longseq.dataset.layout import StreamLayout
from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.batch.polars_engine import PolarsEngine
from longseq.etl.stream.hours import HOUR_MS, HourPublisher, close_hour
from longseq.etl.stream.settings import StreamSettings
from longseq.schemas.contracts import REQUEST_LAYOUT, day_start_ms
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
from longseq.trainer.follow import follow
from longseq.trainer.train_config import TrainConfig

DAY = SAMPLE_START
CFG = dict(preset="tiny", batch_size=16, device="cpu", warmup_steps=2, checkpoint_every=10_000, log_every=1000)


def _publish_hours(data: Path, hours: range) -> None:
    """Hours cut from a daily build, closed and published as the stream does (validation
    overridden: these tests are about the trainer)."""
    settings = StreamSettings(max_len=64, layout=REQUEST_LAYOUT)
    layout = StreamLayout(str(data))
    publisher = HourPublisher(None, str(data), settings, log=lambda m: None)
    table = pq.read_table(data / "requests" / f"ds={DAY}" / "part-00000.parquet")
    hour_of = [(ts - day_start_ms(DAY)) // HOUR_MS for ts in table.column("request_ts").to_pylist()]
    for h in hours:
        part = table.filter([x == h for x in hour_of])
        path = Path(layout.part("records", DAY, 0, h))
        path.parent.mkdir(parents=True, exist_ok=True)
        if part.num_rows:
            pq.write_table(part, path)
        close_hour(layout, DAY, h, settings)
        publisher.publish(DAY, h, override_reason="test: hours cut from a daily build")


@pytest.fixture(scope="module")
def day_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("follow")
    generate(root / "raw", PROFILES["tiny"].with_sizes(users=80, days=1), seed=3, start=DAY)
    build(PolarsEngine(), BuildConfig(str(root / "raw"), str(root / "data"), DAY, max_len=64, layout=REQUEST_LAYOUT),
          log=lambda m: None)
    return root / "data"


def _copy(day_data: Path, tmp_path: Path) -> Path:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(day_data, data)
    return data


@pytest.mark.slow
def test_follow_trains_each_hour_as_it_comes_and_a_stopped_run_resumes_to_the_same_weights(day_data, tmp_path):
    data = _copy(day_data, tmp_path)
    _publish_hours(data, range(24))
    whole = follow(str(data), tmp_path / "whole", TrainConfig(**CFG), log=lambda m: None, exit_when_idle_s=0)
    assert whole["hours_trained"] == 24 and whole["steps"] > 10 and not whole["stopped"]

    # the same hours, published in two goes, with the run stopped twice in between
    later = _copy(day_data, tmp_path / "later")
    _publish_hours(later, range(12))
    run = tmp_path / "stopped"
    first = follow(str(later), run, TrainConfig(**CFG), log=lambda m: None, exit_when_idle_s=0, stop_after_steps=3)
    assert first["stopped"] and first["steps"] == 3
    second = follow(str(later), run, TrainConfig(**CFG), log=lambda m: None, exit_when_idle_s=0)
    assert not second["stopped"] and second["hours_trained"] == 12
    _publish_hours(later, range(12, 24))
    again = follow(str(later), run, TrainConfig(**CFG), log=lambda m: None, exit_when_idle_s=0, stop_after_steps=2)
    assert again["stopped"]
    last = follow(str(later), run, TrainConfig(**CFG), log=lambda m: None, exit_when_idle_s=0)
    assert (last["hours_trained"], last["steps"]) == (24, whole["steps"])
    assert last["weights_sha256"] == whole["weights_sha256"]
    trained = [h["hour"] for h in json.loads((run / "follow.json").read_text())["hours"]]
    assert trained == [f"{DAY}T{h:02d}" for h in range(24)]


def _manifest(data: Path, hour: int) -> Path:
    return data / "published" / f"ds={DAY}" / f"hour={hour:02d}" / "manifest.json"


@pytest.mark.slow
def test_follow_records_the_hours_it_trained_by_name_so_a_vanished_hour_shifts_nothing(day_data, tmp_path):
    """A trained hour whose manifest goes away is said once and not trained again, and every
    new hour is still trained (by position in the list of published hours, the next hour was
    skipped, and with an end day the run died with an IndexError). A run stopped in the
    middle of an hour that is no longer published is refused in one line."""
    from longseq.schemas.errors import LongseqError

    data = _copy(day_data, tmp_path)
    _publish_hours(data, range(12))
    run = tmp_path / "run"
    follow(str(data), run, TrainConfig(**CFG), log=lambda m: None, exit_when_idle_s=0)
    gone = next(h for h in range(12) if json.loads(_manifest(data, h).read_text())["files"])
    _manifest(data, gone).unlink()
    _publish_hours(data, range(12, 24))
    notes: list[str] = []
    summary = follow(str(data), run, TrainConfig(**CFG), log=notes.append, exit_when_idle_s=0, last_day=DAY)
    trained = [h["hour"] for h in json.loads((run / "follow.json").read_text())["hours"]]
    assert trained == [f"{DAY}T{h:02d}" for h in range(24)] and summary["hours_trained"] == 24
    assert sum(f"hour {DAY}T{gone:02d} was trained but is no longer published" in n for n in notes) == 1, notes

    # killed after the last hour's checkpoint, before follow.json said the hour was done
    path = run / "follow.json"
    whole = json.loads(path.read_text())
    last = whole["hours"][-1]
    record = {**whole, "hours": whole["hours"][:-1], "current": {k: last[k] for k in ("hour", "requests", "sha256")}}
    path.write_text(json.dumps(record))
    again = follow(str(data), run, TrainConfig(**CFG), log=lambda m: None, exit_when_idle_s=0, last_day=DAY)
    assert (again["steps"], again["hours_trained"]) == (summary["steps"], 24)
    assert json.loads(path.read_text()) == whole

    # stopped mid-hour, and that hour unpublished before the resume
    data = _copy(day_data, tmp_path / "mid")
    _publish_hours(data, range(24))
    run = tmp_path / "mid-run"
    assert follow(str(data), run, TrainConfig(**CFG), log=lambda m: None, exit_when_idle_s=0,
                  stop_after_steps=1)["stopped"]
    current = json.loads((run / "follow.json").read_text())["current"]["hour"]
    _manifest(data, int(current[11:])).unlink()
    with pytest.raises(LongseqError, match=f"middle of hour {current}, which is no longer published") as e:
        follow(str(data), run, TrainConfig(**CFG), log=lambda m: None, exit_when_idle_s=0)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_progressive_validation_scores_each_hour_with_the_model_before_it(day_data, tmp_path):
    from longseq.trainer.evaluate import evaluate

    data = _copy(day_data, tmp_path)
    _publish_hours(data, range(12))
    run = tmp_path / "run"
    follow(str(data), run, TrainConfig(**CFG), log=lambda m: None, exit_when_idle_s=0, progressive=True)
    _publish_hours(data, range(12, 24))
    nxt = next(h for h in range(12, 24) if (data / "published" / f"ds={DAY}" / f"hour={h:02d}" / "manifest.json")
               .read_text().count("sha256"))
    # `longseq evaluate --hour` on the next hour, with the checkpoint trained up to the hour before
    scored = evaluate(run, str(data), DAY, hour=nxt, device="cpu", bootstrap=0, log=lambda m: None)
    summary = follow(str(data), run, TrainConfig(**CFG), log=lambda m: None, exit_when_idle_s=0, progressive=True)
    progressive = json.loads((run / "progressive" / f"ds={DAY}" / f"hour={nxt:02d}.json").read_text())
    assert scored["tasks"]["finish"]["auc"] == pytest.approx(progressive["tasks"]["finish"]["auc"], abs=1e-6)
    assert scored["step"] == progressive["step"]
    results = sorted((run / "progressive" / f"ds={DAY}").glob("hour=*.json"))
    assert results
    steps_before = {h["hour"]: h["step"] for h in json.loads((run / "follow.json").read_text())["hours"]}
    ordered = [f"{DAY}T{h:02d}" for h in range(24)]
    for path in results:
        result = json.loads(path.read_text())
        key = f"{DAY}T{result['hour']:02d}"
        before = ordered[ordered.index(key) - 1] if ordered.index(key) else None
        assert result["step"] == (steps_before[before] if before else 0)  # the model trained up to the hour before
        assert 0 <= result["tasks"]["finish"]["logloss"] and result["targets"] > 0
    assert summary["hours_trained"] == 24


@pytest.mark.subprocess
def test_a_signal_stops_follow_cleanly_with_a_checkpoint(day_data, tmp_path):
    data = _copy(day_data, tmp_path)
    _publish_hours(data, range(24))
    run = tmp_path / "run"
    (tmp_path / "train.yaml").write_text(json.dumps({**CFG, "lr": 1e-3}))
    cmd = [str(Path(sys.executable).with_name("longseq")), "train", "--follow", "--data", str(data), "--start", str(DAY),
           "--run-dir", str(run), "--train-config", str(tmp_path / "train.yaml"), "--poll", "1s"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "follow.json").exists() or \
            not json.loads((run / "follow.json").read_text() or "{}").get("hours"):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "checkpoint" in out
    assert list((run / "checkpoints").iterdir())
