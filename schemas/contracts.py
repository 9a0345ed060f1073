"""The one definition of every longseq record (see docs/CONTRACTS.md).

- RAW_LOG          contract 1: one row per impression, Parquet partitioned by ds.
- REQUEST_RECORD   contract 2: one row per feed request = one truncated history + all
                   its targets, aligned lists.
- USER_DAY         the compact layout of contract 2: one row per user and day, the user's
                   history events stored once and every request's history a window of
                   them (dataset/compact.py materialises the request records).
- USER_STATE       the per-user history carried from one daily build to the next.

All of them derive from a dataset spec (schemas/spec.py): its tasks become label columns
and action bits, its inputs raw columns, its features history and target columns. The
history and target columns derive from the per-event fields, so a feature on history
events appears in the request record and the state alike. The names below are the
default spec's contracts; `contracts_of(spec)` gives any spec's.
"""

from __future__ import annotations

import datetime as dt

from dataclasses import dataclass
from functools import lru_cache

from longseq.schemas.spec import ID_TIME_COLUMNS, DatasetSpec, Feature, load_default_spec
from longseq.schemas.types import INT8, INT32, STRING, Field, ListOf, Scalar, Schema

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


# How a build writes a day's request records (DATA/requests/ds=D/): one row per request
# (contract request_record), or one row per user-day with each history stored once
# (contract user_day, dataset/compact.py).
REQUEST_LAYOUT = "request"
COMPACT_LAYOUT = "compact"
LAYOUTS = (REQUEST_LAYOUT, COMPACT_LAYOUT)
# a new output's layout: the compact one stores 1/72 of the history values and reads 4-9x
# faster (docs/BENCHMARKS.md); a chain of built days keeps the layout it has
DEFAULT_LAYOUT = COMPACT_LAYOUT

HIST_PREFIX = "hist_"
TGT_PREFIX = "tgt_"


def _action_doc(tasks: tuple[str, ...]) -> str:
    return "bit flags: " + ", ".join(f"{1 << i} {t}" for i, t in enumerate(tasks))


_ID_TIME_DOCS = {
    "event_id": "id of this log line; at-least-once delivery, may repeat",
    "request_id": "feed request that served the impression",
    "request_ts": "ms since epoch, when the request was served",
    "item_id": "the item shown: a video, a product, an ad",
    "position": "rank of the item within the request",
    "event_ts": "ms since epoch, when the outcome was logged (>= request_ts)",
}


def _feature_field(f: Feature) -> Field:
    doc = f.doc or f"{f.kind} feature" + (f" from {f.source}" if f.source and f.source != f.name else "")
    return Field(f.name, Scalar(f.stored_type), doc=doc)


@dataclass(frozen=True)
class Contracts:
    """Every contract of one dataset spec."""

    spec: DatasetSpec
    raw_log: Schema
    history_event: tuple[Field, ...]  # one history event as the model sees it
    target: tuple[Field, ...]  # one target (impression of the request) as the model sees it
    request_record: Schema
    user_day: Schema
    user_state: Schema
    quarantine: Schema

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.spec.tasks

    @property
    def history_names(self) -> tuple[str, ...]:
        """A history event's fields: item_id, author_id, event_ts, action, the history features."""
        return tuple(f.name for f in self.history_event)

    @property
    def target_names(self) -> tuple[str, ...]:
        """A target's fields: item_id, author_id, the target features, the labels."""
        return tuple(f.name for f in self.target)

    @property
    def history_columns(self) -> tuple[str, ...]:
        """The request record's hist_* list columns (one per history field)."""
        return tuple(HIST_PREFIX + n for n in self.history_names)

    @property
    def target_columns(self) -> tuple[str, ...]:
        """The request record's tgt_* list columns (one per target field)."""
        return tuple(TGT_PREFIX + n for n in self.target_names)

    @property
    def quarantine_file(self) -> Schema:
        """The quarantine as written (DATA/quarantine/, the stream's parts): its raw columns
        under the logs' own names (the spec's `columns`), so that its rows read and join as
        the logs' do; the engines quarantine rows under the spec's names (`quarantine`)."""
        return self.quarantine.renamed(self.spec.raw_names)

    def records(self, layout: str) -> Schema:
        """The contract of DATA/requests/ files written in `layout`."""
        return self.user_day if layout == COMPACT_LAYOUT else self.request_record

    @property
    def all(self) -> dict[str, Schema]:
        return {s.name: s for s in (self.raw_log, self.request_record, self.user_day, self.user_state, self.quarantine)}


@lru_cache(maxsize=None)
def contracts_of(spec: DatasetSpec) -> Contracts:
    tasks = spec.tasks
    raw_log = Schema(
        name="raw_log",
        doc="Contract 1: raw impression log, one row per impression; untrusted input.",
        fields=(
            *(Field(name, Scalar(t), nullable=True, doc=_ID_TIME_DOCS.get(name, "")) for name, t in ID_TIME_COLUMNS.items()),
            *(Field(i.name, Scalar(i.type), nullable=True, required=i.required, doc=i.doc) for i in spec.inputs),
            *(Field(t, INT8, nullable=True, doc="label, 0 or 1") for t in tasks),
        ),
    )
    history_event = (
        Field("item_id", raw_log["item_id"].dtype),
        Field("author_id", raw_log["author_id"].dtype),
        Field("event_ts", raw_log["event_ts"].dtype,
              doc="ms since epoch, when the outcome was logged (in a record: < request_ts)"),
        Field("action", INT32, doc=_action_doc(tasks)),
        *(_feature_field(f) for f in spec.features_on("history")),
    )
    target = (
        Field("item_id", raw_log["item_id"].dtype),
        Field("author_id", raw_log["author_id"].dtype),
        *(_feature_field(f) for f in spec.features_on("target")),
        *(Field(t, INT8, doc="label, 0 or 1") for t in tasks),
    )
    history_columns, target_columns = _lists(HIST_PREFIX, history_event), _lists(TGT_PREFIX, target)
    request_record = Schema(
        name="request_record",
        doc=(
            "Contract 2: one row per feed request. History = the user's valid events with "
            "event_ts < request_ts, oldest first, most recent max_len kept; targets = the "
            "request's valid impressions ordered by (position, event_id). hist_* lists share "
            "one length, tgt_* lists another."
        ),
        fields=(
            Field("request_id", raw_log["request_id"].dtype),
            Field("user_id", raw_log["user_id"].dtype),
            Field("request_ts", raw_log["request_ts"].dtype),
            *history_columns,
            *target_columns,
        ),
    )
    user_day = Schema(
        name="user_day",
        doc=(
            "The compact layout of contract 2: one row per user and day. hist_* hold the user's "
            "events that some request's history holds, once, in history order; the request_* lists hold the day's "
            "requests in (request_ts, request_id) order, with where each one's history ends in "
            "those events (hist_end, exclusive) and how many it keeps (hist_len); tgt_* hold the "
            "requests' targets one request after the other, tgt_count of them each. Request i's "
            "record: its request_id and request_ts, hist_*[hist_end[i] - hist_len[i] : hist_end[i]] "
            "and its tgt_count[i] targets."
        ),
        fields=(
            Field("user_id", raw_log["user_id"].dtype),
            *history_columns,
            Field("request_id", ListOf(raw_log["request_id"].dtype), doc="the day's requests, by (request_ts, request_id)"),
            Field("request_ts", ListOf(raw_log["request_ts"].dtype), doc="aligned with request_id"),
            Field("hist_end", ListOf(INT32), doc="where each request's history ends in hist_* (exclusive), non-decreasing"),
            Field("hist_len", ListOf(INT32), doc="how many events each request's history keeps (at most max_len)"),
            Field("tgt_count", ListOf(INT32), doc="how many targets each request has in tgt_*"),
            *target_columns,
        ),
    )
    user_state = Schema(
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
            Field("user_id", raw_log["user_id"].dtype),
            *history_columns,
            Field("pending_event_id", ListOf(STRING), doc="event_ids of the trailing events logged after the state's day"),
            Field("dedup_event_id", ListOf(STRING), doc="event_ids kept within the lateness bound, by (event_ts, event_id)"),
            Field("dedup_event_ts", ListOf(raw_log["event_ts"].dtype), doc="their event_ts, aligned"),
        ),
    )
    quarantine = Schema(
        name="quarantine",
        doc=("Raw rows the build rejected, as they were read, with the first rule each broke. Written under "
             "the logs' own names (quarantine_file: the spec's `columns`; the default spec has none)."),
        fields=(*raw_log.fields, Field("reason", STRING, doc="see etl/batch/row_rules.py")),
    )
    return Contracts(spec, raw_log, history_event, target, request_record, user_day, user_state, quarantine)


def _lists(prefix: str, fields: tuple[Field, ...]) -> tuple[Field, ...]:
    return tuple(Field(prefix + f.name, ListOf(f.dtype), doc=f.doc) for f in fields)


# The default spec's contracts, under the names most of the code base uses.
DEFAULT_SPEC: DatasetSpec = load_default_spec()
DEFAULT_CONTRACTS = contracts_of(DEFAULT_SPEC)
TASKS: tuple[str, ...] = DEFAULT_SPEC.tasks  # in bit order: the action flag of task i is 1 << i
RAW_LOG = DEFAULT_CONTRACTS.raw_log
HISTORY_EVENT = DEFAULT_CONTRACTS.history_event
TARGET = DEFAULT_CONTRACTS.target
HISTORY_COLUMNS = _lists(HIST_PREFIX, HISTORY_EVENT)
TARGET_COLUMNS = _lists(TGT_PREFIX, TARGET)
REQUEST_RECORD = DEFAULT_CONTRACTS.request_record
USER_DAY = DEFAULT_CONTRACTS.user_day
USER_STATE = DEFAULT_CONTRACTS.user_state
QUARANTINE = DEFAULT_CONTRACTS.quarantine
CONTRACTS: dict[str, Schema] = DEFAULT_CONTRACTS.all
