"""Shared fixtures: one real local Spark session per test run, and small generated data.

Tiers (markers, pyproject.toml): `make test-fast`, the loop for editing, deselects spark
(a JVM), airflow, subprocess (a child process: the console script, torchrun, spark-submit,
make) and slow (a second or more: model training, pipelines, long simulations); `make test`
runs everything. A test that takes the `spark` fixture is marked spark here, so it cannot
slip into the fast tier; `slow_engines(...)` marks a test slow for those build engines only.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from longseq.sources import SAMPLE_START

os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # `make test`: each worker its share of the cores, not all
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))
warnings.filterwarnings("ignore", category=FutureWarning)

START = SAMPLE_START


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)
        slow_engines = item.get_closest_marker("slow_engines")
        callspec = getattr(item, "callspec", None)
        if slow_engines and callspec and callspec.params.get("engine") in slow_engines.args:
            item.add_marker(pytest.mark.slow)
    # files with JVM or child-process tests first: `make test` hands each file to one of its
    # workers in this order, so the files left for the end are short ones and no worker waits
    # idle while the other runs a long file alone
    long_files = {item.path for item in items if item.get_closest_marker("spark") or item.get_closest_marker("subprocess")}
    items.sort(key=lambda item: item.path not in long_files)  # stable: the order within a file holds


@pytest.fixture(scope="session", autouse=True)
def quicker_jvm_starts(request, tmp_path_factory) -> None:
    """When the run holds a JVM test, every JVM the tests start starts from a class archive,
    and those of child processes (one short job each) with the client JIT
    (tests/jvm_startup.py)."""
    if not any(item.get_closest_marker("spark") for item in request.session.items):
        return
    from tests.jvm_startup import JIT, archive_options

    cache = request.config.cache.mkdir("jvm") if getattr(request.config, "cache", None) else \
        tmp_path_factory.mktemp("jvm")
    options = archive_options(Path(cache))
    for name in ("SPARK_SUBMIT_OPTS", "SPARK_DAEMON_JAVA_OPTS"):
        os.environ[name] = f"{os.environ.get(name, '')} {options} {JIT}".strip()


@pytest.fixture(scope="session")
def spark(quicker_jvm_starts):
    from longseq.etl.spark_session import SparkConfig, spark_session
    from tests.jvm_startup import JIT

    children = os.environ.get("SPARK_SUBMIT_OPTS", "")
    # this JVM runs every in-process test, hundreds of queries: the optimizing JIT repays itself
    os.environ["SPARK_SUBMIT_OPTS"] = children.replace(JIT, "").strip()
    try:
        session = spark_session(
            SparkConfig(master="local[2]", app_name="longseq-tests", shuffle_partitions=2, driver_memory="1g")
        )
    finally:
        os.environ["SPARK_SUBMIT_OPTS"] = children
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory) -> Path:
    """Two days of the tiny profile, 5% dirty: a few thousand rows."""
    from longseq.sources.generate import PROFILES, generate

    out = tmp_path_factory.mktemp("tiny_raw")
    generate(out, PROFILES["tiny"], seed=7, start=START, dirty=0.05)
    return out
