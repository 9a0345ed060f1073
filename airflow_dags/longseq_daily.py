"""longseq_daily: one ds a run. Wait for raw logs -> build -> validate -> publish [-> train].

Thin on purpose: every stage is a shell command built by pipelines/daily.py at run time, so
parsing this file imports nothing heavy (no Spark, torch, polars or Great Expectations;
tests/test_airflow.py checks) and the stages run the same by hand. The build
depends on the previous day's run (the history state chains the days); runs go one at a
time, in date order, also under `airflow backfill create`. See docs/AIRFLOW.md.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from longseq.pipelines.daily import (
    DailySettings, build_command, publish_command, raw_partition_ready, train_command, validate_command,
)

ENV = os.environ.get  # defaults for the params, so a deployment can set them without editing this file
DEFAULT = DailySettings(raw="", data="")


@dag(
    dag_id="longseq_daily",
    schedule="@daily",
    start_date=datetime.fromisoformat(ENV("LONGSEQ_START_DATE", "2026-01-01")),
    catchup=False,
    max_active_runs=1,  # the state chain: one day at a time
    default_args={
        "retries": int(ENV("LONGSEQ_RETRIES", "2")),
        "retry_delay": timedelta(minutes=float(ENV("LONGSEQ_RETRY_DELAY_MINUTES", "5"))),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(hours=1),
        "execution_timeout": timedelta(hours=6),
    },
    params={
        "raw": Param(ENV("LONGSEQ_RAW", ""), type="string", description="raw log directory or URI"),
        "data": Param(ENV("LONGSEQ_DATA", ""), type="string",
                      description="the build's output directory or URI (longseq --data)"),
        "max_len": Param(int(ENV("LONGSEQ_MAX_LEN", DEFAULT.max_len)), type="integer", minimum=1),
        "spec": Param(ENV("LONGSEQ_SPEC", DEFAULT.spec), type="string",
                      description="dataset spec file (docs/SPEC.md); empty: the one the output records, or the default"),
        "spark_master": Param(ENV("LONGSEQ_SPARK_MASTER", DEFAULT.spark_master), type="string"),
        "spark_conf": Param({}, type="object", description="extra Spark settings, KEY: VALUE"),
        "validation_config": Param(ENV("LONGSEQ_VALIDATION_CONFIG", ""), type="string"),
        "validation_engine": Param(ENV("LONGSEQ_VALIDATION_ENGINE", DEFAULT.validation_engine), type="string",
                                   enum=["spark", "pandas"], description="GX's engine: pandas runs without Spark"),
        "train": Param(DEFAULT.train, type="boolean", description="train and evaluate after publishing"),
        "run_dir": Param(ENV("LONGSEQ_RUN_DIR", ""), type="string"),
        "train_days": Param(DEFAULT.train_days, type="integer", minimum=1),
        "train_config": Param(ENV("LONGSEQ_TRAIN_CONFIG", ""), type="string"),
    },
    tags=["longseq"],
    doc_md=__doc__,
)
def longseq_daily():
    @task.sensor(poke_interval=60, timeout=float(ENV("LONGSEQ_RAW_TIMEOUT_HOURS", "12")) * 3600, mode="reschedule")
    def wait_for_raw(params=None, ds=None):
        return raw_partition_ready(params["raw"], ds)

    @task.bash(depends_on_past=True)
    def build(params=None, ds=None):
        return build_command(DailySettings.from_params(params), ds)

    @task.bash
    def validate(params=None, ds=None):
        return validate_command(DailySettings.from_params(params), ds)

    @task.bash
    def publish(params=None, ds=None):
        return publish_command(DailySettings.from_params(params), ds)

    @task.short_circuit
    def train_enabled(params=None):
        return bool(params["train"])

    @task.bash(execution_timeout=timedelta(hours=12))
    def train(params=None, ds=None):
        return train_command(DailySettings.from_params(params), ds)

    wait_for_raw() >> build() >> validate() >> publish() >> train_enabled() >> train()


longseq_daily()
