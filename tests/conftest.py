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


@pytest.fixture(scope="session")
def spark():
    from longseq.etl.spark_session import SparkConfig, spark_session

    session = spark_session(
        SparkConfig(master="local[2]", app_name="longseq-tests", shuffle_partitions=2, driver_memory="1g")
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory) -> Path:
    """Two days of the tiny profile, 5% dirty: a few thousand rows."""
    from longseq.sources.generate import PROFILES, generate

    out = tmp_path_factory.mktemp("tiny_raw")
    generate(out, PROFILES["tiny"], seed=7, start=START, dirty=0.05)
    return out
