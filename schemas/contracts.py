"""The one definition of every longseq record (see docs/CONTRACTS.md).

- RAW_LOG          contract 1: one row per impression, Parquet partitioned by ds.
- REQUEST_RECORD   contract 2: one row per feed request = one truncated history + all
                   its targets, aligned lists.
- USER_STATE       the per-user history carried from one daily build to the next.

The history and target columns are derived from the per-event fields below, so a
feature added to HISTORY_EVENT appears in the request record and the state alike.
"""

from __future__ import annotations

import datetime as dt

from schemas.types import INT8, INT32, INT64, STRING, Field, ListOf, Schema

# Tasks, in bit order: the action flag of task i is 1 << i (finish 1, skip 2, like 4, comment 8).
TASKS: tuple[str, ...] = ("finish", "skip", "like", "comment")

PARTITION_COLUMN = "ds"  # UTC date of request_ts, YYYY-MM-DD
SUCCESS_MARKER = "_SUCCESS"
DEFAULT_MAX_LEN = 10_000

DAY_MS = 86_400_000
# How long after its request an impression's outcome may still be logged. A later event is
# quarantined (late_event); event_ids stay in the user state this long, so a redelivery on a
# later day within the bound is a duplicate (docs/CONTRACTS.md).
DEFAULT_LATENESS_MS = 3 * DAY_MS


def day_start_ms(day: dt.date) -> int:
    """ms since epoch of 00:00 UTC on `day`: a ds partition holds request_ts in [start, start + DAY_MS)."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp() * 1000)


HIST_PREFIX = "hist_"
TGT_PREFIX = "tgt_"

RAW_LOG = Schema(
    name="raw_log",
    doc="Contract 1: raw impression log, one row per impression; untrusted input.",
    fields=(
        Field("event_id", STRING, nullable=True, doc="id of this log line; at-least-once delivery, may repeat"),
        Field("request_id", STRING, nullable=True, doc="feed request that served the impression"),
        Field("user_id", INT64, nullable=True),
        Field("request_ts", INT64, nullable=True, doc="ms since epoch, when the request was served"),
        Field("item_id", INT64, nullable=True, doc="video"),
        Field("author_id", INT64, nullable=True),
        Field("position", INT32, nullable=True, doc="rank of the item within the request"),
        Field("event_ts", INT64, nullable=True, doc="ms since epoch, when the outcome was logged (>= request_ts)"),
        Field("play_ms", INT32, nullable=True, required=False, doc="watch time"),
        Field("duration_ms", INT32, nullable=True, required=False, doc="video length"),
        *(Field(t, INT8, nullable=True, doc="label, 0 or 1") for t in TASKS),
    ),
)

# One history event as the model sees it. `action` packs the task labels into bit flags.
HISTORY_EVENT: tuple[Field, ...] = (
    Field("item_id", INT64),
    Field("author_id", INT64),
    Field("event_ts", INT64, doc="ms since epoch, when the outcome was logged (in a record: < request_ts)"),
    Field("action", INT32, doc="bit flags: 1 finish, 2 skip, 4 like, 8 comment"),
)

# One target (impression of the request) as the model sees it.
TARGET: tuple[Field, ...] = (
    Field("item_id", INT64),
    Field("author_id", INT64),
    *(Field(t, INT8, doc="label, 0 or 1") for t in TASKS),
)


def _lists(prefix: str, fields: tuple[Field, ...]) -> tuple[Field, ...]:
    return tuple(Field(prefix + f.name, ListOf(f.dtype), doc=f.doc) for f in fields)


HISTORY_COLUMNS: tuple[Field, ...] = _lists(HIST_PREFIX, HISTORY_EVENT)
TARGET_COLUMNS: tuple[Field, ...] = _lists(TGT_PREFIX, TARGET)

REQUEST_RECORD = Schema(
    name="request_record",
    doc=(
        "Contract 2: one row per feed request. History = the user's valid events with "
        "event_ts < request_ts, oldest first, most recent max_len kept; targets = the "
        "request's valid impressions ordered by (position, event_id). hist_* lists share "
        "one length, tgt_* lists another."
    ),
    fields=(
        Field("request_id", STRING),
        Field("user_id", INT64),
        Field("request_ts", INT64),
        *HISTORY_COLUMNS,
        *TARGET_COLUMNS,
    ),
)

USER_STATE = Schema(
    name="user_state",
    doc=(
        "Per-user history after day D, input to the build of day D+1: the most recent "
        "max_len events logged before the end of D, then every event logged after it (a "
        "request of D+1 may still precede those). Lists ordered by (event_ts, event_id). "
        "Only the trailing events logged after D can still be reordered against new ones, "
        "so only their event_ids are kept: pending_event_id, whose length says how many there are. "
        "dedup_event_id/ts: the user's kept events logged no more than the lateness bound before "
        "the next day starts, whatever max_len keeps: a later day's copy of one is a duplicate."
    ),
    fields=(
        Field("user_id", INT64),
        *HISTORY_COLUMNS,
        Field("pending_event_id", ListOf(STRING), doc="event_ids of the trailing events logged after the state's day"),
        Field("dedup_event_id", ListOf(STRING), doc="event_ids kept within the lateness bound, by (event_ts, event_id)"),
        Field("dedup_event_ts", ListOf(INT64), doc="their event_ts, aligned"),
    ),
)

QUARANTINE = Schema(
    name="quarantine",
    doc="Raw rows the build rejected, as they were read, with the first rule each broke.",
    fields=(*RAW_LOG.fields, Field("reason", STRING, doc="see etl/row_rules.py")),
)

CONTRACTS: dict[str, Schema] = {s.name: s for s in (RAW_LOG, REQUEST_RECORD, USER_STATE, QUARANTINE)}
