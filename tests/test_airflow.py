"""The Airflow DAGs, with a real Airflow: the folder parses cleanly without importing
anything heavy, and dag.test() runs a day end to end (real local Spark, SQLite metadata in a temp AIRFLOW_HOME); the
trainer's reader then reads the published day. A day that fails validation fails the run
and publishes nothing.

Airflow reads its configuration when first imported, so each check runs in a fresh
Python process with its own AIRFLOW_HOME.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate

pytestmark = [pytest.mark.spark, pytest.mark.airflow, pytest.mark.subprocess]

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "airflow_dags"
DAY = SAMPLE_START


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow_home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "PYSPARK_PYTHON": sys.executable,
        "LONGSEQ_RETRIES": "0",  # a failing task fails the run now, not after retries with backoff
    }
    airflow = str(Path(sys.executable).with_name("airflow"))
    done = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return env


def _python(code: str, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


# what a DAG file must not pull in at parse time: the scheduler parses it every few seconds
HEAVY = ("pyspark", "torch", "polars", "great_expectations", "petastorm", "pyarrow", "pandas")
HEAVY_OWN = ("longseq.etl.batch.build", "longseq.trainer", "longseq.sources")


def test_the_dag_folder_parses_cleanly_and_imports_nothing_heavy(airflow_env):
    done = _python(f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
bag = DagBag({str(DAGS)!r})
dag = bag.dags["longseq_daily"]
print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                  "imported": sorted(set(sys.modules) - before), "already": sorted(before),
                  "tasks": [t.task_id for t in dag.topological_sort()], "max_active_runs": dag.max_active_runs,
                  "build_depends_on_past": dag.get_task("build").depends_on_past,
                  "backoff": dag.get_task("validate").retry_exponential_backoff}}))
""", airflow_env)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["errors"] == {}
    heavy = [m for m in info["imported"] if m.split(".")[0] in HEAVY or m.startswith(HEAVY_OWN)]
    assert heavy == [], f"parsing the DAG file imported {heavy[:10]}"
    assert "longseq.pipelines.daily" in info["imported"], "the check saw the DAG file's own imports"
    assert info["tasks"] == ["wait_for_raw", "build", "validate", "publish", "train_enabled", "train"]
    assert info["max_active_runs"] == 1 and info["build_depends_on_past"] and info["backoff"]


def _dag_test(env: dict[str, str], conf: dict) -> subprocess.CompletedProcess:
    return _python(f"""
import datetime as dt, json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag({str(DAGS)!r}).dags["longseq_daily"]
run = dag.test(logical_date=dt.datetime({DAY.year}, {DAY.month}, {DAY.day}, tzinfo=dt.timezone.utc), run_conf={conf!r})
print("STATE", run.state)
sys.exit(0 if str(run.state) in ("success", "DagRunState.SUCCESS") else 3)
""", env)


def test_a_day_runs_end_to_end_and_the_reader_reads_it(airflow_env, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate(raw, PROFILES["tiny"], seed=2, start=DAY)
    conf = {"raw": str(raw), "data": str(out), "max_len": 64, "spark_master": "local[1]",
            "spark_conf": {"spark.sql.shuffle.partitions": "2"}}
    done = _dag_test(airflow_env, conf)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert (out / "published" / f"ds={DAY}" / "manifest.json").exists()
    assert not (out / "published" / f"ds={DAY + dt.timedelta(days=1)}").exists()

    from longseq.reader.readers import ReaderConfig, open_published

    manifest = json.loads((out / "published" / f"ds={DAY}" / "manifest.json").read_text())
    batches = list(open_published(str(out), DAY, config=ReaderConfig(shuffle=False)).batches())
    assert sum(b.num_requests for b in batches) == manifest["rows"] > 0


def test_a_day_that_fails_validation_fails_the_run_and_is_not_published(airflow_env, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate(raw, PROFILES["tiny"], seed=2, start=DAY)
    strict = tmp_path / "strict.yaml"  # no real day has 100+ targets per request
    strict.write_text("targets_per_request: [100, 200]\ncritical_only: [targets_per_request_mean]\n")
    conf = {"raw": str(raw), "data": str(out), "max_len": 64, "spark_master": "local[1]",
            "validation_config": str(strict)}
    done = _dag_test(airflow_env, conf)
    assert done.returncode != 0, done.stdout[-2000:]
    assert (out / "reports" / f"ds={DAY}" / "build.json").exists(), "the build ran"
    assert not (out / "published").exists(), "nothing of the day is published"
