"""A Spark standalone cluster on 127.0.0.1 for tests: one master and one worker started from
the pinned pyspark's own launcher (`spark-class org.apache.spark.deploy.master.Master` and
`...deploy.worker.Worker`), not `local[*]`, so that a job really ships its Python work to
executor processes the worker starts.

    with standalone_cluster(tmp_path) as master:   # "spark://127.0.0.1:PORT"
        longseq build --engine spark --master {master} ...

The worker is told to run Python with this interpreter (PYSPARK_PYTHON), as a cluster's
workers must run the project's environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pyspark

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env(work: Path) -> dict[str, str]:
    """What the master, the worker and a driver share: loopback only, this Python."""
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOG_DIR": str(work / "logs"),
            "SPARK_WORKER_DIR": str(work / "worker")}


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return int(json.load(r).get("aliveworkers", 0))
    except OSError:
        return 0


@contextlib.contextmanager
def standalone_cluster(work: Path, cores: int = 1, memory: str = "1g", timeout_s: float = 120) -> Iterator[str]:
    """Start a master and a worker, wait until the worker has registered, yield the master
    URL; stop both on exit. Their logs are in WORK/master.log and WORK/worker.log."""
    work.mkdir(parents=True, exist_ok=True)
    env = cluster_env(work)
    port, ui_port = free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    processes: list[subprocess.Popen] = []
    try:
        with open(work / "master.log", "wb") as log:
            processes.append(subprocess.Popen(
                [str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port",
                 str(port), "--webui-port", str(ui_port)], env=env, stdout=log, stderr=subprocess.STDOUT))
        with open(work / "worker.log", "wb") as log:
            processes.append(subprocess.Popen(
                [str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores",
                 str(cores), "--memory", memory, "--webui-port", str(free_port()), "--work-dir", str(work / "worker")],
                env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout_s
        while _alive_workers(ui_port) < 1:
            dead = [p for p in processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "".join((work / f).read_text(errors="replace")[-2000:] for f in ("master.log", "worker.log"))
                raise RuntimeError(f"the standalone cluster did not come up at {url}:\n{logs}")
            time.sleep(0.5)
        yield url
    finally:
        for p in processes[::-1]:
            p.terminate()
        for p in processes[::-1]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
