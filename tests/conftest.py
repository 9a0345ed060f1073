"""Shared fixtures: one real local Spark session per test run, and small generated data."""

from __future__ import annotations

import datetime as dt
import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
warnings.filterwarnings("ignore", category=FutureWarning)

START = dt.date(2026, 1, 1)


@pytest.fixture(scope="session")
def spark():
    from etl.spark_session import SparkConfig, spark_session

    session = spark_session(
        SparkConfig(master="local[2]", app_name="longseq-tests", shuffle_partitions=2, driver_memory="1g")
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory) -> Path:
    """Two days of the tiny profile, 5% dirty: a few thousand rows."""
    from etl.generate import PROFILES, generate

    out = tmp_path_factory.mktemp("tiny_raw")
    generate(out, PROFILES["tiny"], seed=7, start=START, dirty=0.05)
    return out
