"""The polars engine: one day of raw logs + the state after the day before -> request records.

It runs on one machine without a JVM (local samples, tests) and is the independent
reference the Spark engine is compared against record by record, so it takes the plainest
route to the semantics of docs/CONTRACTS.md rather than mirroring etl/batch/spark_engine.py:

    raw ds=D --reason--> quarantine (rows breaking a rule in etl/batch/row_rules.py, then
        |                   requests whose valid rows disagree on user or time)
        \\--valid--> dedupe by event_id (min by dedup_order), minus event_ids the state
              |          kept within the lateness bound = the day's kept rows, with their
              |          action flags and feature values (etl/batch/feature_values.py)
              |-- events: the previous state exploded + the kept rows, in one table sorted
              |   by (user_id, event_ts, event_id) and ranked 0, 1, ... within each user
              |-- the state after D: per user, the last max_len events logged before the
              |   end of D, then every later one; and the dedup window's ids
              \\-- requests: targets sorted by (position, event_id);
                  k = the user's events with event_ts < request_ts (an as-of join on the ranks);
                  LEFT join the user's event lists (cold-start users keep their record);
                  history = events[max(k - max_len, 0) : k]

Everything is whole-table polars expressions: no Python runs per user, request or row.
Each output is one zstd file, sorted, so the same input gives the same bytes. Every column
derives from the build's dataset spec (schemas/contracts.py contracts_of): history events
carry its history features, targets its target features and labels.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from longseq.dataset.compact import requests_of
from longseq.dataset.layout import ROW_GROUP_BYTES
from longseq.dataset.parquet_files import read_arrow
from longseq.dataset.storage import LocalStorage
from longseq.etl.batch.build import DayCounts, length_summary
from longseq.etl.batch.feature_values import feature_columns, polars_value_ops
from longseq.etl.batch.row_rules import INCONSISTENT_REQUEST, REQUEST_KEYS, dedup_order, polars_ops, reason_expr, reasons_for
from longseq.features.actions import encode_actions
from longseq.schemas.contracts import (
    COMPACT_LAYOUT, DAY_MS, DEFAULT_LATENESS_MS, DEFAULT_LAYOUT, DEFAULT_SPEC, HIST_PREFIX, SUCCESS_MARKER, TGT_PREFIX,
    Contracts, contracts_of, day_start_ms,
)
from longseq.schemas.forms import to_arrow, to_polars
from longseq.schemas.spec import DatasetSpec
from longseq.schemas.types import Schema

PART_FILE = "part-00000.parquet"
# Working columns start with "_", which no spec name can (schemas/spec.py), so a task or
# feature named like one cannot clash with it.
RANK, INDEX, LOGGED, K = "_rank", "_index", "_logged", "_k"




def _event_sort(c: Contracts) -> tuple[str, ...]:
    """Event order: (event_ts, event_id), then `seq` (the list position of settled state
    events, which have no event_id), then the other fields, so even two events sharing an
    event_id (redelivered on another day) sort the same in every engine."""
    return ("user_id", "event_ts", "event_id", "seq", *(f for f in c.history_names if f != "event_ts"))


class PolarsEngine:
    name = "polars"
    storage = LocalStorage()

    def __init__(self, row_group_bytes: int = ROW_GROUP_BYTES):
        self.row_group_bytes = row_group_bytes

    def build_day(
        self, raw_partition: str | None, prev_state: str | None, day: dt.date, max_len: int, temps: dict[str, str],
        lateness_ms: int = DEFAULT_LATENESS_MS, spec: DatasetSpec = DEFAULT_SPEC, layout: str = DEFAULT_LAYOUT,
    ) -> DayCounts:
        c = contracts_of(spec)
        day_end = day_start_ms(day) + DAY_MS
        tagged = _with_request_rule(
            (_empty(c.raw_log) if raw_partition is None else _read_parquet_dir(raw_partition, c.raw_log, spec.raw_names))
            .with_columns(reason=reason_expr(polars_ops(day, lateness_ms), spec))
        )
        quarantine = sorted_quarantine(tagged.filter(pl.col("reason").is_not_null()), c)
        valid = tagged.filter(pl.col("reason").is_null()).drop("reason")

        prev = _read_parquet_dir(prev_state, c.user_state) if prev_state is not None else _empty(c.user_state)
        seen = _dedup_window(prev, day_start_ms(day) - lateness_ms)
        kept = _dedupe(valid, spec).join(seen.select("event_id"), on="event_id", how="anti")
        events = _ranked_events(prev, kept, c)
        state = _new_state(events, day_end, max_len, _dedup_lists(seen, kept, day_end - lateness_ms), c)

        write_quarantine(quarantine, c, temps["quarantine"], self.row_group_bytes)
        write_part(state, c.user_state, temps["state"], self.row_group_bytes)
        if layout == COMPACT_LAYOUT:
            write_part(_user_days(kept, events, max_len, c), c.user_day, temps["requests"], self.row_group_bytes)
        else:
            write_part(_records(kept, events, max_len, c), c.request_record, temps["requests"], self.row_group_bytes)

        # Counted from the input (duplicates) and from what was written (the rest), so the
        # balance rows = targets + quarantined + duplicates can catch a lost or doubled row.
        written = _written_requests(f"{temps['requests']}/{PART_FILE}", layout)
        request_id = spec.raw_names.get("request_id", "request_id")  # the file has the logs' names
        rejected = pl.read_parquet(f"{temps['quarantine']}/{PART_FILE}", columns=["reason", request_id]).rename(
            {request_id: "request_id"})
        by_reason = dict(rejected.group_by("reason").len().iter_rows())
        lengths = written.group_by("hist_len").len().iter_rows()
        orphaned = (
            rejected.select(pl.col("request_id").drop_nulls().unique())
            .join(written.select("request_id"), on="request_id", how="anti")
        )
        repeated = valid.height - valid["event_id"].n_unique()
        across_days = valid.select("event_id").unique().join(seen.select("event_id"), on="event_id", how="semi").height
        return DayCounts(
            rows_read=tagged.height,
            duplicates=repeated + across_days,
            duplicates_across_days=across_days,
            quarantined={reason: int(by_reason.get(reason, 0)) for reason in reasons_for(spec)},
            requests=written.height,
            targets=int(written["tgt_count"].sum() or 0),
            requests_without_valid_impressions=orphaned.height,
            users_in_state=state.height,
            history_length=length_summary(dict(lengths)),
        )


def _written_requests(path: str, layout: str) -> pl.DataFrame:
    """(request_id, hist_len, tgt_count) of each request in a written requests file."""
    columns = ["request_id", "hist_len", "tgt_count"] if layout == COMPACT_LAYOUT else [
        "request_id", "hist_event_ts", "tgt_item_id"]
    return pl.from_arrow(requests_of(pq.read_table(path, columns=columns), layout))


def write_quarantine(rows: pl.DataFrame, c: Contracts, directory: str, row_group_bytes: int) -> None:
    """Quarantined rows (the spec's names) written under the logs' names (c.quarantine_file)."""
    write_part(rows.rename(c.spec.raw_names), c.quarantine_file, directory, row_group_bytes)


def sorted_quarantine(rows: pl.DataFrame, c: Contracts) -> pl.DataFrame:
    """Quarantined rows in the order every polars-written quarantine file has."""
    return rows.sort(["reason", *c.raw_log.names], nulls_last=True)


def _with_request_rule(tagged: pl.DataFrame) -> pl.DataFrame:
    """The valid rows of request_ids whose valid rows disagree on REQUEST_KEYS get INCONSISTENT_REQUEST."""
    valid = pl.col("reason").is_null()
    disagree = pl.any_horizontal(
        [pl.col(k).filter(valid).n_unique().over("request_id") > 1 for k in REQUEST_KEYS]
    )
    return tagged.with_columns(
        reason=pl.when(valid & disagree).then(pl.lit(INCONSISTENT_REQUEST)).otherwise(pl.col("reason"))
    )


# ---------------------------------------------------------------- reading and writing


def _empty(contract: Schema) -> pl.DataFrame:
    return pl.DataFrame(schema=to_polars(contract))


def _read_parquet_dir(path: str, contract: Schema, names: dict[str, str] | None = None) -> pl.DataFrame:
    """The contract's columns of every data file in `path` (which may name them otherwise:
    `names`), all checked first, as the Spark engine checks them."""
    return pl.from_arrow(read_arrow(path, contract, names=names))


def write_part(frame: pl.DataFrame, contract: Schema, directory: str, row_group_bytes: int) -> None:
    """One zstd part file with the contract's exact Arrow schema, then the _SUCCESS marker."""
    table = frame.select(contract.names).to_arrow().cast(to_arrow(contract))
    rows_per_group = max(1, row_group_bytes * table.num_rows // max(table.nbytes, 1))
    Path(directory).mkdir(parents=True, exist_ok=True)
    pq.write_table(table, f"{directory}/{PART_FILE}", compression="zstd", row_group_size=rows_per_group)
    Path(directory, SUCCESS_MARKER).touch()


# ---------------------------------------------------------------- the day


def _dedupe(valid: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """One row per event_id, the smallest by dedup_order (nulls first), plus its action
    flags and feature values."""
    return (
        valid.sort(["event_id", *dedup_order(spec)], nulls_last=False)
        .unique(subset="event_id", keep="first", maintain_order=True)
        .with_columns(
            action=encode_actions({t: pl.col(t).cast(pl.Int32) for t in spec.tasks}, spec.tasks).cast(pl.Int32),
            **feature_columns(spec, polars_value_ops()),
        )
    )


def _ranked_events(prev: pl.DataFrame, kept: pl.DataFrame, c: Contracts) -> pl.DataFrame:
    """Every event a user's history can draw on, sorted by EVENT_SORT, with a 0-based rank per user.

    The state keeps event_ids only for its pending tail (events logged after its day), the
    only events that can tie with new ones on event_ts. The settled events before them get
    a null event_id and their list position as `seq`: their order is already final, and
    they were logged before this day began, so before any pending or new event.
    """
    hist = c.history_names
    n_settled = pl.col("hist_event_ts").list.len() - pl.col("pending_event_id").list.len()
    from_state = (
        prev.select(
            "user_id",
            *[pl.col(HIST_PREFIX + f).alias(f) for f in hist],
            event_id=pl.lit(None, pl.String).repeat_by(n_settled).list.concat("pending_event_id"),
            **{INDEX: pl.int_ranges(0, pl.col("hist_event_ts").list.len())},
        )
        .explode([*hist, "event_id", INDEX])
        .select("user_id", *hist, "event_id", seq=pl.when(pl.col("event_id").is_null()).then(pl.col(INDEX)))
    )
    today = kept.select("user_id", *hist, "event_id", seq=pl.lit(None, pl.Int64))
    return (
        pl.concat([from_state, today])
        .sort(_event_sort(c), nulls_last=False)
        .with_columns(pl.int_range(pl.len()).over("user_id").alias(RANK))
    )


def _new_state(events: pl.DataFrame, day_end: int, max_len: int, dedup: pl.DataFrame, c: Contracts) -> pl.DataFrame:
    """Per user: the last max_len events logged before day_end, then all later (pending) ones,
    and the dedup lists (`dedup`: one row per user)."""
    # sum() of booleans is unsigned: cast before subtracting
    logged_before_end = (pl.col("event_ts") < day_end).sum().cast(pl.Int64).over("user_id")
    empty = {c: pl.col(c).fill_null(pl.lit([], dtype=dtype)) for c, dtype in dedup.schema.items() if c != "user_id"}
    return (
        events.filter(pl.col(RANK) >= logged_before_end - max_len)
        .group_by("user_id")
        .agg(
            *[pl.col(f).alias(HIST_PREFIX + f) for f in c.history_names],
            pending_event_id=pl.col("event_id").filter(pl.col("event_ts") >= day_end),
        )
        .join(dedup, on="user_id", how="left")
        .with_columns(**empty)
        .sort("user_id")
    )


def _dedup_window(prev: pl.DataFrame, since: int) -> pl.DataFrame:
    """(user_id, event_id, event_ts) of the state's kept events logged at or after `since`."""
    return (
        prev.select("user_id", event_id="dedup_event_id", event_ts="dedup_event_ts")
        .explode(["event_id", "event_ts"])
        .filter(pl.col("event_ts") >= since)
    )


def _dedup_lists(seen: pl.DataFrame, kept: pl.DataFrame, since: int) -> pl.DataFrame:
    """Per user, the event_ids and times of the kept events logged at or after `since`, in
    (event_ts, event_id) order: the window the next day deduplicates against."""
    cols = ["user_id", "event_id", "event_ts"]
    return (
        pl.concat([seen.select(cols), kept.select(cols)])
        .filter(pl.col("event_ts") >= since)
        .sort(["user_id", "event_ts", "event_id"])
        .group_by("user_id", maintain_order=True)
        .agg(dedup_event_id="event_id", dedup_event_ts="event_ts")
    )


def _requests(kept: pl.DataFrame, events: pl.DataFrame, c: Contracts) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(one row per request with a kept row: its targets and K, how many of its user's events
    were logged before it; per user, the events in rank order)."""
    hist, tgt = c.history_names, c.target_names
    requests = kept.group_by("request_id").agg(
        pl.col("user_id").min(),
        pl.col("request_ts").min(),
        *[pl.col(f).sort_by(["position", "event_id"]).alias(TGT_PREFIX + f) for f in tgt],
    )
    # events with event_ts <= t per (user, t); the as-of match strictly before request_ts
    # counts the user's events logged before the request (none: 0)
    logged_by = (
        events.group_by("user_id", "event_ts").agg((pl.col(RANK).max() + 1).alias(LOGGED)).sort("event_ts")
    )
    # both sides sorted by time over all users, hence within each user as join_asof needs
    requests = requests.sort("request_ts").join_asof(
        logged_by, left_on="request_ts", right_on="event_ts", by="user_id",
        strategy="backward", allow_exact_matches=False, check_sortedness=False,
    ).select(pl.exclude("event_ts", LOGGED), pl.col(LOGGED).fill_null(0).alias(K))
    return requests, events.group_by("user_id").agg(*hist)  # in rank order


def _records(kept: pl.DataFrame, events: pl.DataFrame, max_len: int, c: Contracts) -> pl.DataFrame:
    """One record per request with a kept row: its targets and its user's history before it."""
    requests, user_events = _requests(kept, events, c)
    # A request's own rows are events of its user, so every user is there; LEFT all the
    # same, so that no request can be lost to the join (no history = empty lists, k = 0).
    records = requests.join(user_events, on="user_id", how="left")
    offset = pl.max_horizontal(pl.col(K) - max_len, 0)
    length = pl.min_horizontal(pl.col(K), max_len)
    return records.select(
        "request_id", "user_id", "request_ts",
        *[pl.col(f).list.slice(offset, length).fill_null([]).alias(HIST_PREFIX + f) for f in c.history_names],
        *[TGT_PREFIX + f for f in c.target_names],
    ).sort(["user_id", "request_ts", "request_id"])


def _user_days(kept: pl.DataFrame, events: pl.DataFrame, max_len: int, c: Contracts) -> pl.DataFrame:
    """One row per user with a request (contract user_day): the user's events that some
    request's history holds, stored once in history order, and per request where its
    history ends in them and how long it is. Request i stores the part of its window after
    the one before it (its events from K[i-1] on): windows only move forward (K grows with
    request_ts), so each window is a run of the stored events."""
    requests, user_events = _requests(kept, events, c)
    window_start = (pl.col(K) - max_len).clip(lower_bound=0)
    piece_start = pl.max_horizontal(window_start, pl.col(K).shift(1).over("user_id").fill_null(0))
    days = (
        requests.sort(["user_id", "request_ts", "request_id"])
        .with_columns(_piece=piece_start)
        .with_columns(_piece_len=pl.col(K) - pl.col("_piece"))
        .group_by("user_id", maintain_order=True)
        .agg(
            "request_id", "request_ts",
            hist_end=pl.col("_piece_len").cum_sum().cast(pl.Int32),
            hist_len=pl.min_horizontal(pl.col(K), max_len).cast(pl.Int32),
            tgt_count=pl.col(TGT_PREFIX + c.target_names[0]).list.len().cast(pl.Int32),
            **{TGT_PREFIX + f: pl.col(TGT_PREFIX + f).explode() for f in c.target_names},
            _stored=pl.int_ranges(pl.col("_piece"), pl.col(K)).explode().drop_nulls(),
        )
    )
    return days.join(user_events, on="user_id", how="left").select(
        "user_id",
        *[pl.col(f).list.gather(pl.col("_stored")).fill_null([]).alias(HIST_PREFIX + f) for f in c.history_names],
        "request_id", "request_ts", "hist_end", "hist_len", "tgt_count",
        *[TGT_PREFIX + f for f in c.target_names],
    ).sort("user_id")
