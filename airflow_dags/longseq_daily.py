"""longseq_daily: one ds a run. Wait for raw logs -> build -> validate -> publish [-> train].

Thin on purpose: every stage is a shell command built by etl/daily.py at run time, so
parsing this file imports nothing heavy and the stages run the same by hand. The build
depends on the previous day's run (the history state chains the days); runs go one at a
time, in date order, also under `airflow backfill create`. See docs/AIRFLOW.md.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

ENV = os.environ.get  # defaults for the params, so a deployment can set them without editing this file


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
        "out": Param(ENV("LONGSEQ_OUT", ""), type="string", description="build output directory or URI"),
        "max_len": Param(int(ENV("LONGSEQ_MAX_LEN", "10000")), type="integer", minimum=1),
        "spark_master": Param(ENV("LONGSEQ_SPARK_MASTER", "local[*]"), type="string"),
        "spark_conf": Param({}, type="object", description="extra Spark settings, KEY: VALUE"),
        "validation_config": Param(ENV("LONGSEQ_VALIDATION_CONFIG", ""), type="string"),
        "train": Param(False, type="boolean", description="train and evaluate after publishing"),
        "run_dir": Param(ENV("LONGSEQ_RUN_DIR", ""), type="string"),
        "train_days": Param(7, type="integer", minimum=1),
        "train_config": Param(ENV("LONGSEQ_TRAIN_CONFIG", ""), type="string"),
    },
    tags=["longseq"],
    doc_md=__doc__,
)
def longseq_daily():
    @task.sensor(poke_interval=60, timeout=float(ENV("LONGSEQ_RAW_TIMEOUT_HOURS", "12")) * 3600, mode="reschedule")
    def wait_for_raw(params=None, ds=None):
        from etl.daily import raw_partition_ready

        return raw_partition_ready(params["raw"], ds)

    @task.bash(depends_on_past=True)
    def build(params=None, ds=None):
        from etl.daily import DailySettings, build_command

        return build_command(DailySettings.from_params(params), ds)

    @task.bash
    def validate(params=None, ds=None):
        from etl.daily import DailySettings, validate_command

        return validate_command(DailySettings.from_params(params), ds)

    @task.bash
    def publish(params=None, ds=None):
        from etl.daily import DailySettings, publish_command

        return publish_command(DailySettings.from_params(params), ds)

    @task.short_circuit
    def train_enabled(params=None):
        return bool(params["train"])

    @task.bash(execution_timeout=timedelta(hours=12))
    def train(params=None, ds=None):
        from etl.daily import DailySettings, train_command

        return train_command(DailySettings.from_params(params), ds)

    wait_for_raw() >> build() >> validate() >> publish() >> train_enabled() >> train()


longseq_daily()
