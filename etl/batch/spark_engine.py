"""The Spark engine: one day of raw logs + the state after the day before -> request records.

All Spark SQL, no Python UDFs, nothing per user on the driver. The plan rests on one fact:
every event in the state that was logged before midnight ("settled") precedes every event
that can still arrive (valid events of day D are logged at or after their request, so
after midnight). So a user's events are `settled ++ recent`, where only `recent` (the
state's pending tail plus the day's events, small) needs sorting:

    raw ds=D --reason--> quarantine (rows breaking a rule in etl/batch/row_rules.py, then
        |                   requests whose valid rows disagree on user or time)
        \\--valid--> dedupe by event_id (min by dedup_order), minus event_ids the state
              |          kept within the lateness bound = the day's kept rows, with their
              |          action flags and feature values (etl/batch/feature_values.py)
              |-- recent events per user: the state's pending tail + the day's events,
              |   sorted by (event_ts, event_id)
              |-- per user: events = settled ++ recent  ->  the state after D: the last
              |   max_len events logged before the end of D, then all later ones, and
              |   the ids kept within the lateness bound (the next day's dedup window)
              \\-- requests: targets sorted by (position, event_id);
                  k = settled + (recent events with event_ts < request_ts), counted by a
                  window over requests and recent events ordered by (ts, requests first);
                  LEFT join the user's events (cold-start users keep their record);
                  history = events[max(k - max_len, 0) : k]

Per request the work is one slice per history column, sized like the record itself: no
intermediate of requests x max_len beyond the output. Higher-order functions (interpreted
per element in Spark) only touch the small recent arrays and targets. Records are
written sorted by (user_id, request_ts) within each file (users hash-partitioned over
files), zstd, row groups of about 32 MB decoded (docs/ETL.md). Every column derives from the
build's dataset spec (schemas/contracts.py contracts_of): history events carry its history
features, targets its target features and labels.
"""

from __future__ import annotations

import datetime as dt
from functools import reduce
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from longseq.dataset.layout import ROW_GROUP_BYTES
from longseq.dataset.parquet_files import read_spark
from longseq.dataset.storage import RoutingStorage, Storage
from longseq.etl.batch.build import DayCounts, length_summary
from longseq.etl.batch.feature_values import feature_columns, spark_value_ops
from longseq.etl.batch.row_rules import INCONSISTENT_REQUEST, REQUEST_KEYS, dedup_order, reason_expr, reasons_for, spark_ops
from longseq.features.actions import encode_actions
from longseq.schemas.contracts import (
    COMPACT_LAYOUT, DAY_MS, DEFAULT_LATENESS_MS, DEFAULT_LAYOUT, DEFAULT_SPEC, HIST_PREFIX, TGT_PREFIX, Contracts,
    contracts_of, day_start_ms,
)
from longseq.schemas.forms import spark_type, to_spark
from longseq.schemas.spec import DatasetSpec
from longseq.schemas.types import ListOf, Schema

# History lists are long runs of mostly distinct ids and times: Parquet's dictionary
# encoding only falls back on them, costing time and size (measured: -10% time, -24%
# bytes without it; docs/BENCHMARKS.md).
# parquet-mr sizes a row group by its *compressed* bytes, and sorted histories compress
# 30-60x: at 32 MB a row group of 10k histories decoded to ~640 MB, which a reader must
# hold whole. 512 KB compressed gives ~30 MB decoded (at most ~50), as ROW_GROUP_BYTES
# intends; parquet-mr checks the size every 100 rows at the earliest.
SPARK_BLOCK_BYTES = ROW_GROUP_BYTES // 64
LIST_WRITE_OPTIONS = {"parquet.block.size": str(SPARK_BLOCK_BYTES), "parquet.enable.dictionary": "false"}
DEDUP_COLUMNS = ("dedup_event_id", "dedup_event_ts")
# Working columns start with "_", which no spec name can (schemas/spec.py), so a task or
# feature named like one (recent, targets, ...) cannot clash with it.
RECENT, TARGETS, N_SETTLED, RECENT_BEFORE_END = "_recent", "_targets", "_n_settled", "_recent_before_end"
K, REQUESTS = "_k", "_requests"  # a request's events logged before it; a user's requests of the day



def _event_sort(c: Contracts) -> tuple[str, ...]:
    """A recent event's struct: its field order is the sort order."""
    return ("event_ts", "event_id", *(f for f in c.history_names if f != "event_ts"))


def _target_sort(c: Contracts) -> tuple[str, ...]:
    return ("position", "event_id", *(f.name for f in c.target))


def _required(expr: Column | str, dtype: Any) -> Column:
    """`expr` marked non-nullable, so Parquet gets the contract's required fields.

    Spark infers nullable for aggregates and outer joins; coalescing with a non-null
    literal (never taken: the values are never null) tells it otherwise.
    """
    col = F.expr(expr) if isinstance(expr, str) else expr
    if isinstance(dtype, ListOf):  # empty typed array with non-null elements
        empty = F.array_repeat(F.lit(0 if dtype.element.name != "string" else "").cast(spark_type(dtype.element)), 0)
        return F.coalesce(col, empty)
    return F.coalesce(col, F.lit(0 if dtype.name != "string" else "").cast(spark_type(dtype)))


class SparkEngine:
    name = "spark"

    def __init__(self, spark: SparkSession):
        self.spark = spark
        self.storage: Storage = RoutingStorage(spark)

    # ------------------------------------------------------------ reading

    def _read_raw(self, path: str | None, c: Contracts) -> DataFrame:
        if path is None:  # a day declared empty: no partition, no rows
            return self.spark.createDataFrame([], to_spark(c.raw_log))
        # every file checked as the polars engine checks it, then exactly those read
        return read_spark(self.spark, self.storage, path, c.raw_log, c.spec.raw_names)

    def _read_state(self, path: str | None, c: Contracts) -> DataFrame:
        if path is None:
            return self.spark.createDataFrame([], to_spark(c.user_state))
        return read_spark(self.spark, self.storage, path, c.user_state)

    # ------------------------------------------------------------ the day

    def build_day(
        self, raw_partition: str | None, prev_state: str | None, day: dt.date, max_len: int, temps: dict[str, str],
        lateness_ms: int = DEFAULT_LATENESS_MS, spec: DatasetSpec = DEFAULT_SPEC, layout: str = DEFAULT_LAYOUT,
    ) -> DayCounts:
        c = contracts_of(spec)
        raw = self._read_raw(raw_partition, c)
        tagged = _with_request_rule(raw.withColumn("reason", reason_expr(spark_ops(day, lateness_ms), spec)))
        tagged = tagged.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            self._write_quarantine(tagged, temps["quarantine"], c)
            valid = tagged.where(F.col("reason").isNull()).drop("reason")
            state = self._read_state(prev_state, c)
            seen = _dedup_window(state, day_start_ms(day) - lateness_ms).persist(StorageLevel.MEMORY_AND_DISK)
            # counted from the input, before deduplication runs, so the balance can catch it
            input_counts = _input_counts(tagged, valid, seen)
            kept = self._dedupe(valid, spec).join(seen.select("event_id"), "event_id", "left_anti")
            kept = kept.persist(StorageLevel.MEMORY_AND_DISK)
            recent = self._recent_rows(kept, state, c)
            users = self._user_events(recent, state, day, c).persist(StorageLevel.MEMORY_AND_DISK)
            dedup = _dedup_lists(seen, kept, day_start_ms(day) + DAY_MS - lateness_ms)
            self._write_state(users, dedup, max_len, temps["state"], c)
            self._write_requests(kept, recent, users, max_len, temps["requests"], c, layout)
        finally:
            self.spark.catalog.clearCache()
        return self._counts(input_counts, temps, spec, layout)

    def _dedupe(self, valid: DataFrame, spec: DatasetSpec) -> DataFrame:
        """One row per event_id: the smallest by dedup_order, whatever order rows came in
        (min over a struct puts nulls first), plus its action flags and feature values."""
        order = dedup_order(spec)
        rest = [c for c in contracts_of(spec).raw_log.names if c not in order and c != "event_id"]
        return (
            valid.groupBy("event_id")
            .agg(F.min(F.struct(*order, *rest)).alias("_r"))
            .select("event_id", "_r.*")
            .withColumns({
                "action": encode_actions({t: F.col(t).cast("int") for t in spec.tasks}, spec.tasks).cast("int"),
                **feature_columns(spec, spark_value_ops()),
            })
        )

    def _recent_rows(self, kept: DataFrame, state: DataFrame, c: Contracts) -> DataFrame:
        """Events that may still need sorting: the day's kept rows and the state's pending tail."""
        tail = {
            f: F.expr(f"slice(hist_{f}, size(hist_{f}) - size(pending_event_id) + 1, size(pending_event_id))").alias(f)
            for f in c.history_names
        }
        pending = state.where(F.size("pending_event_id") > 0).select(
            "user_id", F.inline(F.arrays_zip(*tail.values(), F.col("pending_event_id").alias("event_id")))
        )
        columns = ("user_id", *_event_sort(c))
        return kept.select(*columns).unionByName(pending.select(*columns))

    def _user_events(self, recent_rows: DataFrame, state: DataFrame, day: dt.date, c: Contracts) -> DataFrame:
        """Per user: all events = settled (from the state) ++ recent (sorted), column by column."""
        end = day_start_ms(day) + DAY_MS
        hist = c.history_names
        settled = state.select(
            "user_id",
            *[F.expr(f"slice(hist_{f}, 1, size(hist_{f}) - size(pending_event_id))").alias(f"_settled_{f}") for f in hist],
        )
        recent = recent_rows.groupBy("user_id").agg(
            F.sort_array(F.collect_list(F.struct(*_event_sort(c)))).alias(RECENT),
            F.sum(F.when(F.col("event_ts") < end, 1).otherwise(0)).alias(RECENT_BEFORE_END),
        )
        recent = recent.select(
            "user_id", RECENT_BEFORE_END,
            *[F.expr(f"transform({RECENT}, e -> e.`{f}`)").alias(f"{RECENT}_{f}") for f in (*hist, "event_id")],
        )

        def elements(f: str) -> ListOf:
            return ListOf(_elem(f, c))

        return settled.join(recent, "user_id", "full_outer").select(
            "user_id",
            F.size(_required("_settled_event_ts", elements("event_ts"))).alias(N_SETTLED),  # size(null) is -1
            F.coalesce(RECENT_BEFORE_END, F.lit(0)).alias(RECENT_BEFORE_END),
            *[
                _required(F.concat(_required(f"_settled_{f}", elements(f)), _required(f"{RECENT}_{f}", elements(f))),
                          elements(f)).alias(f)
                for f in hist
            ],
            _required(f"{RECENT}_event_id", elements("event_id")).alias(f"{RECENT}_event_id"),
        )

    def _write_state(self, users: DataFrame, dedup: DataFrame, max_len: int, path: str, c: Contracts) -> None:
        # keep the last max_len events logged before the end of the day, then every later one
        user_state = c.user_state
        before_end = F.col(N_SETTLED) + F.col(RECENT_BEFORE_END)
        start = F.greatest(before_end - max_len, F.lit(0)) + 1
        recent_ids = f"{RECENT}_event_id"
        n_recent = F.size(recent_ids)
        state = users.join(dedup, "user_id", "left").select(
            _required("user_id", user_state["user_id"].dtype).alias("user_id"),
            *[_required(F.slice(f, start, F.size(f)), user_state[HIST_PREFIX + f].dtype).alias(HIST_PREFIX + f)
              for f in c.history_names],
            _required(
                F.slice(recent_ids, F.col(RECENT_BEFORE_END) + 1, n_recent - F.col(RECENT_BEFORE_END)),
                user_state["pending_event_id"].dtype,
            ).alias("pending_event_id"),
            *[_required(name, user_state[name].dtype).alias(name) for name in DEDUP_COLUMNS],
        ).where(F.size("hist_event_ts") > 0)
        state.sortWithinPartitions("user_id").write.options(**LIST_WRITE_OPTIONS).parquet(path)

    def _write_requests(self, kept: DataFrame, recent: DataFrame, users: DataFrame, max_len: int, path: str,
                        c: Contracts, layout: str = DEFAULT_LAYOUT) -> None:
        requests = kept.groupBy("request_id").agg(
            F.min("user_id").alias("user_id"),
            F.min("request_ts").alias("request_ts"),
            F.sort_array(F.collect_list(F.struct(*_target_sort(c)))).alias(TARGETS),
        )
        # recent events before each request: requests sort before events at equal times,
        # and the frame is ROWS, so an event at request_ts is not counted
        stream = requests.select("user_id", F.col("request_ts").alias("_ts"), F.lit(0).alias("_is_event"), "request_id")
        stream = stream.unionByName(recent.select(
            "user_id", F.col("event_ts").alias("_ts"), F.lit(1).alias("_is_event"),
            F.lit(None).cast("string").alias("request_id"),
        ))
        w = Window.partitionBy("user_id").orderBy("_ts", "_is_event").rowsBetween(Window.unboundedPreceding, Window.currentRow)
        counted = stream.withColumn("_recent_before", F.sum("_is_event").over(w)).where("_is_event = 0").select(
            "request_id", "_recent_before"
        )
        k = F.coalesce(F.col(N_SETTLED), F.lit(0)) + F.col("_recent_before")
        if layout == COMPACT_LAYOUT:
            with_k = requests.join(counted, "request_id").join(users.select("user_id", N_SETTLED), "user_id", "left")
            records = _user_days(with_k.withColumn(K, k), users, max_len, c)
            records.sortWithinPartitions("user_id").write.options(**LIST_WRITE_OPTIONS).parquet(path)
            return
        start = F.greatest(k - max_len, F.lit(0)) + 1
        length = F.least(k, F.lit(max_len))
        records = (
            requests.join(counted, "request_id")
            .join(users.select("user_id", N_SETTLED, *c.history_names), "user_id", "left")
            .select(
                *[
                    _required(
                        F.slice(f.name[len(HIST_PREFIX):], start, length) if f.name.startswith(HIST_PREFIX)
                        else F.col(TARGETS)[f.name[len(TGT_PREFIX):]] if f.name.startswith(TGT_PREFIX)
                        else F.col(f.name),
                        f.dtype,
                    ).alias(f.name)
                    for f in c.request_record
                ]
            )
        )
        records.sortWithinPartitions("user_id", "request_ts", "request_id").write.options(**LIST_WRITE_OPTIONS).parquet(path)

    def _write_quarantine(self, tagged: DataFrame, path: str, c: Contracts) -> None:
        rows = tagged.where("reason is not null").select(*c.quarantine.names).coalesce(1)
        rows = rows.sortWithinPartitions("reason", "event_id", "request_id", "event_ts")
        # under the logs' names (c.quarantine_file), renamed after the sort, which keeps its order
        rows.select(*[F.col(n).alias(logged) for n, logged in zip(c.quarantine.names, c.quarantine_file.names)]) \
            .write.parquet(path)

    # ------------------------------------------------------------ counting, from what was written

    def _counts(self, input_counts: dict[str, int], temps: dict[str, str], spec: DatasetSpec,
                layout: str = DEFAULT_LAYOUT) -> DayCounts:
        c = contracts_of(spec)

        def read(path: str, contract: Schema) -> DataFrame:
            # the schema as written: Spark would otherwise run a job per read to infer it
            return self.spark.read.schema(to_spark(contract)).parquet(path)

        if layout == COMPACT_LAYOUT:  # one row per request: its id, history length and targets
            requests = read(temps["requests"], c.user_day).select(
                F.inline(F.arrays_zip("request_id", "hist_len", "tgt_count"))
            ).select("request_id", F.col("hist_len").alias("n"), F.col("tgt_count").alias("t"))
        else:
            requests = read(temps["requests"], c.request_record).select(
                "request_id", F.size("hist_item_id").alias("n"), F.size("tgt_item_id").alias("t"))
        lengths = (
            requests
            .groupBy("n")
            .agg(F.count("*").alias("records"), F.sum("t").alias("targets"))
            .collect()
        )
        written = read(temps["quarantine"], c.quarantine_file).toDF(*c.quarantine.names)
        by_reason = {r["reason"]: int(r["count"]) for r in written.groupBy("reason").count().collect()}
        quarantine = written.where("request_id is not null").select("request_id").distinct()
        orphaned = quarantine.join(requests.select("request_id"), "request_id", "left_anti").count()
        return DayCounts(
            rows_read=input_counts["rows"],
            duplicates=input_counts["duplicates"],
            duplicates_across_days=input_counts["across_days"],
            quarantined={reason: int(by_reason.get(reason, 0)) for reason in reasons_for(spec)},
            requests=sum(int(r["records"]) for r in lengths),
            targets=sum(int(r["targets"]) for r in lengths),
            requests_without_valid_impressions=int(orphaned),
            users_in_state=read(temps["state"], c.user_state).count(),
            history_length=length_summary({int(r["n"]): int(r["records"]) for r in lengths}),
        )


def _with_request_rule(tagged: DataFrame) -> DataFrame:
    """The valid rows of request_ids whose valid rows disagree on REQUEST_KEYS get INCONSISTENT_REQUEST."""
    valid = F.col("reason").isNull()
    w = Window.partitionBy("request_id")
    # collect_set skips nulls, so only the valid rows' values are compared
    disagree = [F.size(F.collect_set(F.when(valid, F.col(k))).over(w)) > 1 for k in REQUEST_KEYS]
    return tagged.withColumn(
        "reason", F.when(valid & reduce(lambda a, b: a | b, disagree), F.lit(INCONSISTENT_REQUEST)).otherwise(F.col("reason"))
    )


def _dedup_window(state: DataFrame, since: int) -> DataFrame:
    """(user_id, event_id, event_ts) of the state's kept events logged at or after `since`."""
    return state.select(
        "user_id", F.inline(F.arrays_zip(F.col("dedup_event_id").alias("event_id"), F.col("dedup_event_ts").alias("event_ts")))
    ).where(F.col("event_ts") >= since)


def _dedup_lists(seen: DataFrame, kept: DataFrame, since: int) -> DataFrame:
    """Per user, the event_ids and times of the kept events logged at or after `since`, in
    (event_ts, event_id) order: the window the next day deduplicates against."""
    rows = seen.unionByName(kept.select("user_id", "event_id", "event_ts")).where(F.col("event_ts") >= since)
    ordered = rows.groupBy("user_id").agg(F.sort_array(F.collect_list(F.struct("event_ts", "event_id"))).alias("e"))
    return ordered.select(
        "user_id",
        F.expr("transform(e, x -> x.event_id)").alias("dedup_event_id"),
        F.expr("transform(e, x -> x.event_ts)").alias("dedup_event_ts"),
    )


def _input_counts(tagged: DataFrame, valid: DataFrame, seen: DataFrame) -> dict[str, int]:
    """Rows read, and duplicates: valid rows beyond one per event_id, plus the distinct valid
    event_ids the state had already kept within the lateness bound."""
    rows = tagged.count()
    totals = valid.agg(F.count("*").alias("n"), F.countDistinct("event_id").alias("ids")).collect()[0]
    across = valid.select("event_id").distinct().join(seen.select("event_id"), "event_id", "left_semi").count()
    return {"rows": rows, "duplicates": int(totals["n"]) - int(totals["ids"]) + across, "across_days": across}


def _user_days(requests: DataFrame, users: DataFrame, max_len: int, c: Contracts) -> DataFrame:
    """One user_day row per user with a request (requests: one row each, with its targets and
    K, the user's events logged before it): the user's events that some request's history
    holds, stored once, and per request, in (request_ts, request_id) order, where its history
    ends in them, how long it is, and its targets. Request i stores the part of its window
    after the one before it (its events from K[i-1] on): windows only move forward (K grows
    with request_ts), so each window is a run of the stored events."""
    user_day = c.user_day
    in_order = Window.partitionBy("user_id").orderBy("request_ts", "request_id")
    piece = F.greatest(F.col(K) - max_len, F.lag(K, 1, 0).over(in_order), F.lit(0))
    pieces = requests.withColumn("_piece", piece).withColumn("_piece_len", F.col(K) - F.col("_piece")).withColumn(
        "_hist_end", F.sum("_piece_len").over(in_order.rowsBetween(Window.unboundedPreceding, Window.currentRow)))
    per_user = pieces.groupBy("user_id").agg(
        F.sort_array(F.collect_list(F.struct("request_ts", "request_id", K, "_piece", "_piece_len", "_hist_end",
                                             TARGETS))).alias(REQUESTS),
    )

    def per_request(expr: str) -> Column:
        return F.expr(f"transform({REQUESTS}, r -> {expr})")

    columns = {
        "request_id": per_request("r.request_id"),
        "request_ts": per_request("r.request_ts"),
        "hist_end": per_request("cast(r._hist_end as int)"),
        "hist_len": per_request(f"cast(least(r.{K}, {int(max_len)}) as int)"),
        "tgt_count": per_request(f"size(r.{TARGETS})"),
        **{TGT_PREFIX + f: F.flatten(per_request(f"transform(r.{TARGETS}, t -> t.`{f}`)")) for f in c.target_names},
        **{HIST_PREFIX + f: F.flatten(per_request(f"slice(`{f}`, cast(r._piece + 1 as int), cast(r._piece_len as int))"))
           for f in c.history_names},
    }
    return per_user.join(users.select("user_id", *c.history_names), "user_id", "left").select(
        *[_required(columns.get(f.name, F.col(f.name)), f.dtype).alias(f.name) for f in user_day]
    )


def _elem(field: str, c: Contracts) -> Any:
    """The element type of a history field (event_id: the pending ids' element type)."""
    name = "pending_event_id" if field == "event_id" else HIST_PREFIX + field
    return c.user_state[name].dtype.element
