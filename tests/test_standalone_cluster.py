"""The daily build on a real cluster manager: a Spark standalone master and worker on
127.0.0.1 (tests/standalone_cluster.py), not local[*]. Its records equal the polars
engine's, and its executors run the project's interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.standalone_cluster import cluster_env, standalone_cluster

pytestmark = [pytest.mark.spark, pytest.mark.subprocess, pytest.mark.slow]

# What an executor reports about itself: its Python, its process, whether it is the driver's.
PROBE = """
import json, os, sys
from etl.spark_session import SparkConfig, spark_session
spark = spark_session(SparkConfig(master=sys.argv[1], driver_memory="512m", shuffle_partitions=2,
                                  conf={"spark.executor.memory": "512m", "spark.executor.cores": "1"}))
seen = spark.sparkContext.parallelize(range(4), 2).map(lambda _: (sys.executable, os.getpid(), os.getcwd())).collect()
print(json.dumps({"master": spark.sparkContext.master, "driver_pid": os.getpid(), "executors": seen}))
spark.stop()
"""


def _records(data: Path) -> dict[str, dict]:
    return {r["request_id"]: r for f in sorted(data.glob("requests/ds=*/*.parquet")) for r in pq.read_table(f).to_pylist()}


def test_the_daily_build_on_a_standalone_cluster_equals_polars(tiny_raw, tmp_path):
    work = tmp_path / "cluster"
    with standalone_cluster(work) as master:
        env = cluster_env(work)
        probe = subprocess.run([sys.executable, "-c", PROBE, master], env=env, capture_output=True, text=True,
                               timeout=300)
        assert probe.returncode == 0, probe.stderr[-3000:]
        report = json.loads(probe.stdout.strip().splitlines()[-1])
        assert report["master"] == master
        # the Python work ran in other processes, the worker's executors (their working directory
        # is the worker's app-*/<executor>/, which local mode never uses), under this interpreter
        assert {exe for exe, _, _ in report["executors"]} == {sys.executable}
        assert report["driver_pid"] not in {pid for _, pid, _ in report["executors"]}
        assert all(Path(cwd).parent.parent == work / "worker" and Path(cwd).parent.name.startswith("app-")
                   for _, _, cwd in report["executors"]), report["executors"]

        longseq = [sys.executable, "-m", "cli.main", "build", "--raw", str(tiny_raw), "--start", "2026-01-01",
                   "--end", "2026-01-02", "--max-len", "32"]
        on_cluster = subprocess.run([*longseq, "--data", str(tmp_path / "spark"), "--engine", "spark", "--master",
                                     master, "--driver-memory", "512m", "--shuffle-partitions", "2",
                                     "--conf", "spark.executor.memory=512m", "--conf", "spark.executor.cores=1"],
                                    env=env, capture_output=True, text=True, timeout=600)
        assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    # the worker ran tasks: its application directory holds executor logs
    assert list((work / "worker").glob("app-*/*/stderr"))
    local = subprocess.run([*longseq, "--data", str(tmp_path / "polars"), "--engine", "polars"], capture_output=True,
                           text=True, timeout=300)
    assert local.returncode == 0, local.stderr[-3000:]
    spark_records, polars_records = _records(tmp_path / "spark"), _records(tmp_path / "polars")
    assert spark_records and spark_records == polars_records
