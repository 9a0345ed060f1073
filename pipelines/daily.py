"""What the daily Airflow DAG runs (airflow_dags/longseq_daily.py), without Airflow.

Each stage of a day is one shell command, built here from the DAG's params, so that the
DAG file stays thin, a stage can be run by hand exactly as the scheduler runs it, and a
failing stage fails its task by its exit code:

    wait     raw/ds=D/_SUCCESS exists                    (raw_partition_ready)
    build    spark-submit cli/spark_job.py --start D     (the history state chains days)
    validate longseq validate --start D                  (a failing suite exits 1)
    publish  longseq publish --start D                   (refuses unvalidated days)
    train    longseq train over the last train_days days, then evaluate on D (optional)

build, validate and publish each hold the output's lock (dataset/output_lock.py): a stage
that meets another command on the same local output (a hand-run backfill) fails at once,
naming it, and the task's retries try again. A rebuilt day makes later days stale
(docs/ETL.md): the next day's build then fails until `longseq build --catch-up` has run.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from longseq.dataset.layout import partition_path
from longseq.dataset.published import published_days
from longseq.dataset.storage import storage_for
from longseq.etl.spark_session import SparkConfig
from longseq.schemas.contracts import DEFAULT_MAX_LEN, SUCCESS_MARKER


def _venv_bin(name: str) -> str:
    """A console script next to this Python (the project's venv)."""
    return str(Path(sys.executable).with_name(name))


@dataclass
class DailySettings:
    raw: str  # raw log directory or URI (ds=YYYY-MM-DD partitions with _SUCCESS)
    data: str  # the build's output directory or URI
    max_len: int = DEFAULT_MAX_LEN
    spec: str = ""  # a dataset spec file for the build (docs/SPEC.md), or "" for the one DATA records / the default
    spark_master: str = field(default_factory=lambda: SparkConfig().master)
    spark_conf: dict[str, str] = field(default_factory=dict)
    validation_config: str = ""  # a YAML/JSON ValidationConfig file, or "" for the defaults
    validation_engine: str = "spark"  # GX's engine: spark (spark_master), or pandas for days that fit one worker
    train: bool = False
    run_dir: str = ""  # where `longseq train` keeps the model (train only)
    train_days: int = 7  # train on up to this many published days before D, evaluate on D
    train_config: str = ""  # a YAML/JSON TrainConfig file, or "" for the defaults
    longseq: str = field(default_factory=lambda: _venv_bin("longseq"))
    spark_submit: str = field(default_factory=lambda: _venv_bin("spark-submit"))

    @staticmethod
    def from_params(params: dict) -> "DailySettings":
        """The DAG's params (the run's conf over the DAG's defaults)."""
        if params.get("out"):  # its name before 0.1: refused, not guessed at
            raise ValueError("the DAG param `out` is now `data`: pass the build's output directory as `data`")
        if not params.get("data"):
            raise ValueError("the DAG param `data` is empty: set it (or LONGSEQ_DATA, once LONGSEQ_OUT) to the "
                             "build's output directory")
        names = set(DailySettings.__dataclass_fields__)
        return DailySettings(**{k: v for k, v in params.items() if k in names and v not in (None, "")} | {
            "raw": params["raw"], "data": params["data"]})


def raw_partition_ready(raw: str, ds: str) -> bool:
    """True once the day's raw partition is complete (its _SUCCESS marker exists)."""
    path = f"{partition_path(raw, dt.date.fromisoformat(ds))}/{SUCCESS_MARKER}"
    return storage_for(path, arrow=True).exists(path)


def _q(*words: object) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def build_command(s: DailySettings, ds: str) -> str:
    job = importlib.util.find_spec("longseq.cli.spark_job").origin  # a file, as spark-submit wants
    conf = [w for k, v in sorted(s.spark_conf.items()) for w in ("--conf", f"{k}={v}")]
    return (f"PYSPARK_PYTHON={shlex.quote(sys.executable)} "
            + _q(s.spark_submit, "--master", s.spark_master, *conf, job,
                 "--raw", s.raw, "--data", s.data, "--start", ds, "--max-len", s.max_len,
                 *(["--spec", s.spec] if s.spec else [])))


def validate_command(s: DailySettings, ds: str) -> str:
    config = ["--validation-config", s.validation_config] if s.validation_config else []
    engine = ["--master", s.spark_master] if s.validation_engine == "spark" else ["--engine", s.validation_engine]
    return _q(s.longseq, "validate", "--data", s.data, "--start", ds, *engine, *config)


def publish_command(s: DailySettings, ds: str) -> str:
    return _q(s.longseq, "publish", "--data", s.data, "--start", ds)


def train_command(s: DailySettings, ds: str) -> str:
    """Train on the published days before ds (at most train_days of them, consecutive up to
    the day before), then evaluate on ds."""
    if not s.run_dir:
        raise ValueError("the train step needs the run_dir param")
    day = dt.date.fromisoformat(ds)
    last = day - dt.timedelta(days=1)
    published = set(published_days(s.data))
    first = last
    while first - dt.timedelta(days=1) in published and (last - first).days + 1 < s.train_days:
        first -= dt.timedelta(days=1)
    if last not in published:
        return _q("echo", f"no published day before {ds} to train on; skipping training")
    config = ["--train-config", s.train_config] if s.train_config else []
    run_dir = f"{s.run_dir}/{ds}"
    return (_q(s.longseq, "train", "--data", s.data, "--start", first, "--end", last, "--run-dir", run_dir, *config)
            + " && " + _q(s.longseq, "evaluate", "--run-dir", run_dir, "--data", s.data, "--start", ds))
