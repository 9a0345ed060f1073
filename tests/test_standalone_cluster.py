"""The daily build and the stream on a real cluster manager: a Spark standalone master and
worker on 127.0.0.1 (tests/standalone_cluster.py), not local[*]. Their days equal the
polars engine's, and their executors run the project's interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.records import record_rows
from tests.standalone_cluster import cluster_env, standalone_cluster

pytestmark = [pytest.mark.spark, pytest.mark.subprocess, pytest.mark.slow]

# What an executor reports about itself: its Python, its process, whether it is the driver's.
PROBE = """
import json, os, sys
from longseq.etl.spark_session import SparkConfig, spark_session
spark = spark_session(SparkConfig(master=sys.argv[1], driver_memory="512m", shuffle_partitions=2,
                                  conf={"spark.executor.memory": "512m", "spark.executor.cores": "1"}))
seen = spark.sparkContext.parallelize(range(4), 2).map(lambda _: (sys.executable, os.getpid(), os.getcwd())).collect()
print(json.dumps({"master": spark.sparkContext.master, "driver_pid": os.getpid(), "executors": seen}))
spark.stop()
"""


def _records(data: Path) -> dict[str, dict]:
    return {r["request_id"]: r for d in sorted(data.glob("requests/ds=*")) for r in record_rows(d)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(master URL, the cluster's work directory, the environment to run jobs with)."""
    work = tmp_path_factory.mktemp("cluster")
    with standalone_cluster(work) as master:
        yield master, work, cluster_env(work)


EXECUTOR = ["--driver-memory", "512m", "--conf", "spark.executor.memory=512m", "--conf", "spark.executor.cores=1"]


def _in_worker(work: Path, cwd: str) -> bool:
    """An executor's working directory: the worker's app-*/<executor>/, which local mode never uses."""
    return Path(cwd).parent.parent == work / "worker" and Path(cwd).parent.name.startswith("app-")


def test_the_daily_build_on_a_standalone_cluster_equals_polars(cluster, tiny_raw, tmp_path):
    master, work, env = cluster
    probe = subprocess.run([sys.executable, "-c", PROBE, master], env=env, capture_output=True, text=True,
                           timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert report["master"] == master
    # the Python work ran in other processes, the worker's executors (their working directory
    # is the worker's app-*/<executor>/, which local mode never uses), under this interpreter
    assert {exe for exe, _, _ in report["executors"]} == {sys.executable}
    assert report["driver_pid"] not in {pid for _, pid, _ in report["executors"]}
    assert all(_in_worker(work, cwd) for _, _, cwd in report["executors"]), report["executors"]

    longseq = [sys.executable, "-m", "longseq.cli.main", "build", "--raw", str(tiny_raw), "--start", "2026-01-01",
               "--end", "2026-01-02", "--max-len", "32"]
    on_cluster = subprocess.run([*longseq, "--data", str(tmp_path / "spark"), "--engine", "spark", "--master",
                                 master, "--shuffle-partitions", "2", *EXECUTOR],
                                env=env, capture_output=True, text=True, timeout=600)
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    # the worker ran tasks: its application directory holds executor logs
    assert list((work / "worker").glob("app-*/*/stderr"))
    local = subprocess.run([*longseq, "--data", str(tmp_path / "polars"), "--engine", "polars"], capture_output=True,
                           text=True, timeout=300)
    assert local.returncode == 0, local.stderr[-3000:]
    spark_records, polars_records = _records(tmp_path / "spark"), _records(tmp_path / "polars")
    assert spark_records and spark_records == polars_records


def test_the_stream_on_a_standalone_cluster_equals_the_daily_build(cluster, tmp_path):
    """`longseq stream --once` against the cluster: the state function runs in the worker's
    executors, under this interpreter (each Python worker writes where it ran), and the days
    are the daily build's."""
    from longseq.etl.batch.build import BuildConfig, build
    from longseq.etl.batch.polars_engine import PolarsEngine
    from longseq.schemas.contracts import DEFAULT_SPEC
    from longseq.sources import SAMPLE_START
    from longseq.sources.generate import PROFILES, generate
    from tests.test_stream_sim import DAYS, arrivals
    from tests.test_stream_spark import assert_same_days, land

    master, work, env = cluster
    raw = tmp_path / "raw"
    generate(raw, PROFILES["tiny"].with_sizes(users=None, days=len(DAYS)), seed=11, start=SAMPLE_START, dirty=0.04)
    land(arrivals(raw, DAYS, DEFAULT_SPEC, 30 * 60_000, seed=3, rows_per_file=(40, 160), files_per_batch=(1, 1)),
         tmp_path / "landing")
    probes = tmp_path / "probes"
    stream = subprocess.run(
        [sys.executable, "-m", "longseq.cli.main", "stream", "--once", "--raw", str(tmp_path / "landing"), "--data",
         str(tmp_path / "data"), "--checkpoint", str(tmp_path / "ckpt"), "--lateness", "2h", "--watermark-delay", "30m",
         "--max-len", "16", "--max-files-per-trigger", "10", "--state-partitions", "2", "--master", master, *EXECUTOR,
         "--conf", f"spark.executorEnv.LONGSEQ_STREAM_PROBE={probes}"],
        env=env, capture_output=True, text=True, timeout=900)
    assert stream.returncode == 0, stream.stderr[-3000:]
    seen = [json.loads(p.read_text()) for p in probes.glob("probe-*.json")]
    assert seen and {s["executable"] for s in seen} == {sys.executable}
    assert all(_in_worker(work, s["cwd"]) for s in seen), seen

    batch = tmp_path / "batch"
    build(PolarsEngine(), BuildConfig(str(raw), str(batch), DAYS[0], DAYS[-1], 16, lateness_ms=2 * 3_600_000),
          log=lambda m: None)
    assert_same_days(tmp_path / "data", batch, DAYS)
