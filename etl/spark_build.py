"""The Spark engine: one day of raw logs + the state after the day before -> request records.

Plan (all Spark SQL, no Python UDFs, nothing per user on the driver):

    raw ds=D --reason--> quarantine (rows breaking a rule in etl/row_rules.py)
        \--valid--> dedupe by event_id (min by DEDUP_ORDER)
                     |-- group by user: the day's events, sorted by (event_ts, event_id)
                     |      + the state after D-1 (full outer join on user_id)
                     |      = each user's events, one sorted array per user
                     |          |-- the state after D: the last max_len events logged
                     |          |   before midnight + all logged after it
                     \-- group by request: targets sorted by (position, event_id)
                            left join the user's events (cold-start users keep their record)
                            k = number of events with event_ts < request_ts (a prefix, as the
                                array is sorted), history = events [max(k - max_len, 0), k)

The only per-request work is a scan and a slice of the user's array, whose size is the
record's own history plus the day's events: no intermediate of requests x max_len beyond
the output itself. Records are written sorted by (user_id, request_ts) within each file
(users hash-partitioned over files), zstd, 32 MB row groups: see docs/ETL.md.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from etl.build import DayCounts, length_summary
from etl.layout import LocalStorage, Storage, is_local, storage_for
from etl.row_rules import DEDUP_ORDER, REASONS, reason_expr, spark_ops
from features.actions import encode_actions
from schemas.check import check_spark_schema
from schemas.contracts import (
    DAY_MS, HISTORY_EVENT, QUARANTINE, RAW_LOG, REQUEST_RECORD, TARGET, TASKS, USER_STATE, day_start_ms,
)
from schemas.errors import SchemaMismatchError
from schemas.forms import spark_type, to_spark
from schemas.types import ListOf

ROW_GROUP_BYTES = 32 * 1024 * 1024  # 32 MB: ~100-1,000 records of 10k events; what Petastorm reads at once
# The sort key of a user's event array: struct ordering compares fields left to right.
EVENT_FIELDS = ("event_ts", "event_id", *(f.name for f in HISTORY_EVENT if f.name != "event_ts"))
TARGET_FIELDS = ("position", "event_id", *(f.name for f in TARGET))
_EVENT_TYPE = "struct<" + ",".join(  # the element type of a user's event array
    f"{f}:{spark_type(USER_STATE[f'hist_{f}'].dtype.element).simpleString()}" for f in EVENT_FIELDS
) + ">"


class RoutingStorage:
    """Local paths through the os module, URIs through Hadoop: one Storage for any path."""

    def __init__(self, spark: Any):
        self._local = LocalStorage()
        self._spark = spark

    def _for(self, path: str) -> Storage:
        return self._local if is_local(path) else storage_for(path, self._spark)

    def __getattr__(self, op: str) -> Any:
        return lambda path, *rest: getattr(self._for(path), op)(path, *rest)


def _non_null(expr: str, dtype: Any) -> str:
    """SQL marking a never-null value as non-nullable (coalesce with a non-null literal), so
    Parquet gets the contract's required fields; Spark infers nullable for aggregates."""
    if isinstance(dtype, ListOf):
        return f"coalesce(transform({expr}, x -> {_non_null('x', dtype.element)}), array())"
    default = "''" if dtype.name == "string" else f"cast(0 as {spark_type(dtype).simpleString()})"
    return f"coalesce({expr}, {default})"


class SparkEngine:
    name = "spark"

    def __init__(self, spark: SparkSession):
        self.spark = spark
        self.storage: Storage = RoutingStorage(spark)

    # ------------------------------------------------------------ reading

    def _read_raw(self, path: str) -> DataFrame:
        files = [n for n in self.storage.list_names(path) if n.endswith(".parquet")]
        if not files:  # a complete partition of a day without impressions
            return self.spark.createDataFrame([], to_spark(RAW_LOG))
        try:
            df = self.spark.read.option("mergeSchema", "true").parquet(path)
        except AnalysisException as e:  # files disagree on a column's type
            raise SchemaMismatchError(f"{path}: the files do not share one schema: {str(e).splitlines()[0]}") from None
        check_spark_schema(df.schema, RAW_LOG, source=path)
        return df.select(*RAW_LOG.names)

    def _read_state(self, path: str | None) -> DataFrame:
        if path is None:
            state = self.spark.createDataFrame([], to_spark(USER_STATE))
        else:
            state = self.spark.read.parquet(path)
            check_spark_schema(state.schema, USER_STATE, source=path)
        fields = ", ".join(f"'{f}', hist_{f}[i]" for f in EVENT_FIELDS)
        return state.select("user_id", F.expr(f"transform(hist_event_ts, (_, i) -> named_struct({fields}))").alias("prior"))

    # ------------------------------------------------------------ the day

    def build_day(
        self, raw_partition: str, prev_state: str | None, day: dt.date, max_len: int, temps: dict[str, str]
    ) -> DayCounts:
        raw = self._read_raw(raw_partition)
        tagged = raw.withColumn("reason", reason_expr(spark_ops(day))).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            by_reason = {r["reason"]: r["count"] for r in tagged.groupBy("reason").count().collect()}
            self._write_quarantine(tagged, temps["quarantine"])

            valid = tagged.where(F.col("reason").isNull()).drop("reason")
            kept = (
                valid.groupBy("event_id")
                .agg(F.min(F.struct(*DEDUP_ORDER, *[c for c in RAW_LOG.names if c not in DEDUP_ORDER and c != "event_id"])).alias("r"))
                .select("event_id", "r.*")
                .withColumn("action", encode_actions({t: F.col(t).cast("int") for t in TASKS}).cast("int"))
            )
            events = self._user_events(kept, prev_state)
            self._write_state(events, day, max_len, temps["state"])
            self._write_requests(kept, events, max_len, temps["requests"])
        finally:
            tagged.unpersist()
        return self._counts(by_reason, temps)

    def _user_events(self, kept: DataFrame, prev_state: str | None) -> DataFrame:
        """One row per user: all their known events, sorted by (event_ts, event_id)."""
        today = kept.groupBy("user_id").agg(F.collect_list(F.struct(*EVENT_FIELDS)).alias("today"))
        prior = self._read_state(prev_state)
        empty = F.array().cast(f"array<{_EVENT_TYPE}>")
        return today.join(prior, "user_id", "full_outer").select(
            "user_id",
            F.array_sort(F.concat(F.coalesce("prior", empty), F.coalesce("today", empty))).alias("events"),
        )

    def _write_state(self, events: DataFrame, day: dt.date, max_len: int, path: str) -> None:
        end = day_start_ms(day) + DAY_MS
        cols = [
            F.expr(_non_null(f"transform(state, e -> e.{f})", USER_STATE[f"hist_{f}"].dtype)).alias(f"hist_{f}")
            for f in ("event_id", *(f.name for f in HISTORY_EVENT))
        ]
        state = (
            events.selectExpr(
                "user_id",
                "events",
                f"aggregate(events, 0, (n, e) -> n + if(e.event_ts < {end}L, 1, 0)) as before_midnight",
            )
            # the most recent max_len events logged before midnight, then every later one
            .selectExpr(
                "user_id",
                f"slice(events, greatest(before_midnight - {max_len}, 0) + 1, size(events)) as state",
            )
            .where("size(state) > 0")
            .select(F.expr(_non_null("user_id", USER_STATE["user_id"].dtype)).alias("user_id"), *cols)
        )
        state.sortWithinPartitions("user_id").write.option("parquet.block.size", ROW_GROUP_BYTES).parquet(path)

    def _write_requests(self, kept: DataFrame, events: DataFrame, max_len: int, path: str) -> None:
        requests = kept.groupBy("request_id").agg(
            F.min("user_id").alias("user_id"),
            F.min("request_ts").alias("request_ts"),
            F.array_sort(F.collect_list(F.struct(*TARGET_FIELDS))).alias("targets"),
        )
        joined = requests.join(events, "user_id", "left").selectExpr(
            "request_id", "user_id", "request_ts", "targets",
            "coalesce(events, array()) as events",
        ).selectExpr(
            "*", "aggregate(events, 0, (n, e) -> n + if(e.event_ts < request_ts, 1, 0)) as k",
        ).selectExpr(
            "*", f"slice(events, greatest(k - {max_len}, 0) + 1, least(k, {max_len})) as hist",
        )
        out = []
        for f in REQUEST_RECORD:
            if f.name.startswith("hist_"):
                expr = f"transform(hist, e -> e.{f.name[5:]})"
            elif f.name.startswith("tgt_"):
                expr = f"transform(targets, t -> t.{f.name[4:]})"
            else:
                expr = f.name
            out.append(F.expr(_non_null(expr, f.dtype)).alias(f.name))
        records = joined.select(*out)
        (
            records.sortWithinPartitions("user_id", "request_ts", "request_id")
            .write.option("parquet.block.size", ROW_GROUP_BYTES)
            .parquet(path)
        )

    def _write_quarantine(self, tagged: DataFrame, path: str) -> None:
        rows = tagged.where("reason is not null").select(*QUARANTINE.names)
        rows.coalesce(1).sortWithinPartitions("reason", "event_id", "request_id", "event_ts").write.parquet(path)

    # ------------------------------------------------------------ counting, from what was written

    def _counts(self, by_reason: dict, temps: dict[str, str]) -> DayCounts:
        read = self.spark.read
        lengths = (
            read.parquet(temps["requests"])
            .select(F.size("hist_item_id").alias("n"), F.size("tgt_item_id").alias("t"))
            .groupBy("n")
            .agg(F.count("*").alias("records"), F.sum("t").alias("targets"))
            .collect()
        )
        quarantine = read.parquet(temps["quarantine"]).where("request_id is not null").select("request_id").distinct()
        orphaned = quarantine.join(read.parquet(temps["requests"]).select("request_id"), "request_id", "left_anti").count()
        quarantined = {reason: int(by_reason.get(reason, 0)) for reason in REASONS}
        rows_read = sum(int(v) for v in by_reason.values())
        targets = sum(int(r["targets"]) for r in lengths)
        return DayCounts(
            rows_read=rows_read,
            duplicates=int(by_reason.get(None, 0)) - targets,
            quarantined=quarantined,
            requests=sum(int(r["records"]) for r in lengths),
            targets=targets,
            requests_without_valid_impressions=int(orphaned),
            users_in_state=read.parquet(temps["state"]).count(),
            history_length=length_summary({int(r["n"]): int(r["records"]) for r in lengths}),
        )

