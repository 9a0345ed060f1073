"""A deliberately naive reference build: the test oracle for the request records.

It computes, from the raw partitions of ALL the given days at once, what the build of a
dataset spec must write, straight from the semantics in DESIGN.md / docs/CONTRACTS.md /
docs/SPEC.md, with no incremental state, no windows and no joins: plain Python loops over
lists of dicts. It shares no code with the engines beyond the contract definitions (column
names, the reason names and their order, the dedup key columns); the row checks and the
feature values are re-implemented here on purpose.

    validity   reason = the first rule a row breaks, in the order of etl.row_rules.reasons_for(spec);
               then every valid row of a request_id whose valid rows name two users or
               two request_ts gets "inconsistent_request"
    dedupe     valid rows of one ds partition with the same event_id collapse to the
               smallest by the dedup_order(spec) columns, a null before any value; a row
               whose event_id was kept on an earlier day, by a copy logged at most the
               lateness bound before this day began, is a duplicate too
    history    the user's kept events with event_ts < request_ts, sorted by
               (event_ts, event_id as a string), the last max_len of them
    targets    the request's kept rows, sorted by (position, event_id)
    action     sum of label << i over the spec's tasks (default: finish*1 + skip*2 + like*4 + comment*8)
    features   per kept row: an input as int64 (categorical) or float32 (numeric), null -> 0;
               a ratio a / b in float64 then float32, 0 when a or b is null or b <= 0;
               history events carry the history features, targets the target features

O(requests x user's events): meant for a few thousand rows.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from longseq.etl.batch.row_rules import dedup_order, reasons_for
from longseq.schemas.contracts import DEFAULT_LATENESS_MS, DEFAULT_SPEC, contracts_of
from longseq.schemas.spec import DatasetSpec, Feature

INCONSISTENT = "inconsistent_request"
MS_PER_DAY = 24 * 60 * 60 * 1000


def _day_start(day: dt.date) -> int:
    return calendar.timegm(day.timetuple()) * 1000


# ---------------------------------------------------------------- row validity, by hand


def _is_label(v: Any) -> bool:
    return v == 0 or v == 1


def _required_columns(spec: DatasetSpec) -> list[str]:
    """The raw columns a row may not leave null, in column order: all but the optional inputs."""
    optional = {i.name for i in spec.inputs if not i.required}
    return [c for c in contracts_of(spec).raw_log.names if c not in optional]


def _checks(day: dt.date, lateness_ms: int, spec: DatasetSpec) -> list[tuple[str, Any]]:
    """(reason, row -> True when broken), in rule order. Null checks come first, so the
    later checks only ever see non-null values."""
    start = _day_start(day)
    end = start + MS_PER_DAY
    checks: list[tuple[str, Any]] = [
        (f"missing_{name}", lambda r, name=name: r[name] is None) for name in _required_columns(spec)
    ]
    checks += [
        ("label_out_of_range", lambda r: not all(_is_label(r[t]) for t in spec.tasks)),
        ("event_before_request", lambda r: r["event_ts"] < r["request_ts"]),
        ("late_event", lambda r: r["event_ts"] > r["request_ts"] + lateness_ms),
        ("nonpositive_id", lambda r: r["user_id"] <= 0 or r["item_id"] <= 0 or r["author_id"] <= 0),
        ("negative_position", lambda r: r["position"] < 0),
        ("request_ts_outside_partition", lambda r: not (start <= r["request_ts"] < end)),
    ]
    categorical = {f.source or f.name for f in spec.features if f.kind == "categorical"}
    ratios = {d.name: d.ratio for d in spec.derived}
    read = {c for f in spec.features for c in ratios.get(f.source or f.name, (f.source or f.name,))}
    checks += [(f"negative_{i.name}", lambda r, name=i.name: r[name] is not None and r[name] < 0)
               for i in spec.inputs if i.name in categorical]
    checks += [(f"nonfinite_{i.name}", lambda r, name=i.name: r[name] is not None and not math.isfinite(r[name]))
               for i in spec.inputs if i.name in read and i.type.startswith("float")]
    names = (*(name for name, _ in checks), INCONSISTENT)
    if names != reasons_for(spec):  # the rules changed: this oracle must be updated with them
        raise AssertionError(f"reference rules {names} do not match etl.row_rules.reasons_for {reasons_for(spec)}")
    return checks


def reason_of(row: dict, day: dt.date, lateness_ms: int = DEFAULT_LATENESS_MS,
              spec: DatasetSpec = DEFAULT_SPEC) -> str | None:
    """The first row rule `row` breaks (the request rule needs the other rows: see below)."""
    for name, broken in _checks(day, lateness_ms, spec):
        if broken(row):
            return name
    return None


# ---------------------------------------------------------------- reading


def read_partition(raw: str | Path, day: dt.date, spec: DatasetSpec = DEFAULT_SPEC) -> list[dict]:
    """All rows of RAW/ds=day as dicts of the spec's raw-log columns, under longseq's names
    (the logs may name any raw column otherwise: spec.columns), files in name order."""
    path = Path(raw) / f"ds={day.isoformat()}"
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith(("_", ".")))
    names = contracts_of(spec).raw_log.names
    rows: list[dict] = []
    for f in files:
        for row in pq.read_table(f).to_pylist():
            rows.append({n: row[spec.raw_names.get(n, n)] for n in names})
    return rows


# ---------------------------------------------------------------- the result


@dataclass
class DayExpectation:
    rows: int = 0
    duplicates: int = 0
    duplicates_across_days: int = 0
    quarantined: dict[str, int] = field(default_factory=lambda: {r: 0 for r in reasons_for(DEFAULT_SPEC)})
    requests: int = 0
    targets: int = 0
    requests_without_valid_impressions: int = 0
    users_with_events: int = 0  # users with any kept event up to and including this day
    quarantine_rows: list[dict] = field(default_factory=list)  # raw row + "reason"
    request_ids: list[str] = field(default_factory=list)
    history_lengths: dict[int, int] = field(default_factory=dict)  # length -> records

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())


@dataclass
class Reference:
    records: dict[str, dict]  # request_id -> {REQUEST_RECORD column: value (lists as lists)}
    record_day: dict[str, dt.date]  # request_id -> the ds its record belongs to
    days: dict[dt.date, DayExpectation]
    kept_events: list[dict]  # after validity and dedupe, all days
    max_len: int

    def records_of(self, day: dt.date) -> dict[str, dict]:
        return {rid: rec for rid, rec in self.records.items() if self.record_day[rid] == day}

    def full_history_length(self, request_id: str) -> int:
        """How many events precede the request before truncation."""
        rec = self.records[request_id]
        return sum(
            1 for e in self.kept_events if e["user_id"] == rec["user_id"] and e["event_ts"] < rec["request_ts"]
        )


# ---------------------------------------------------------------- the build


def _action(e: dict, spec: DatasetSpec) -> int:
    return sum(e[t] << i for i, t in enumerate(spec.tasks))


def _feature(row: dict, f: Feature, spec: DatasetSpec) -> int | float:
    """Feature f's value on a raw row, by hand: as a reader of the records sees it."""
    source = f.source or f.name
    ratios = {d.name: d.ratio for d in spec.derived}
    if source in ratios:
        a, b = (row[c] for c in ratios[source])
        if a is None or b is None or b <= 0:
            return 0.0
        return float(np.float32(float(a) / float(b)))
    value = row[source]
    if f.kind == "categorical":
        return 0 if value is None else int(value)
    return 0.0 if value is None else float(np.float32(value))


def _with_values(row: dict, spec: DatasetSpec) -> dict:
    """A kept row with its action flags and, under `features`, every feature's value
    (apart from the raw columns: a feature may share its input's name)."""
    return {**row, "action": _action(row, spec), "features": {f.name: _feature(row, f, spec) for f in spec.features}}


def _dedup_key(row: dict, spec: DatasetSpec) -> tuple:
    """dedup_order's values with a null before any value (NULLS FIRST)."""
    return tuple((0,) if row[c] is None else (1, row[c]) for c in dedup_order(spec))


def _validate_and_dedupe(rows: list[dict], day: dt.date, exp: DayExpectation, lateness_ms: int,
                         seen: dict[str, int], spec: DatasetSpec) -> list[dict]:
    """The kept events of one ds partition; counts quarantined rows and duplicates in exp.
    `seen`: event_id -> event_ts of every copy kept on earlier days (updated here)."""
    valid = []
    for row in rows:
        reason = reason_of(row, day, lateness_ms, spec)
        if reason is None:
            valid.append(row)
        else:
            exp.quarantined[reason] += 1
            exp.quarantine_rows.append({**row, "reason": reason})
    by_request: dict[str, list[dict]] = defaultdict(list)
    for row in valid:
        by_request[row["request_id"]].append(row)
    consistent = []
    for request_rows in by_request.values():
        if len({r["user_id"] for r in request_rows}) > 1 or len({r["request_ts"] for r in request_rows}) > 1:
            exp.quarantined[INCONSISTENT] += len(request_rows)
            exp.quarantine_rows.extend({**r, "reason": INCONSISTENT} for r in request_rows)
        else:
            consistent.extend(request_rows)
    by_event: dict[str, list[dict]] = defaultdict(list)
    for row in consistent:
        by_event[row["event_id"]].append(row)
    kept = []
    since = _day_start(day) - lateness_ms
    for event_id, copies in by_event.items():
        exp.duplicates += len(copies) - 1
        if event_id in seen and seen[event_id] >= since:
            exp.duplicates += 1
            exp.duplicates_across_days += 1
            continue
        best = copies[0]
        for c in copies[1:]:
            if _dedup_key(c, spec) < _dedup_key(best, spec):
                best = c
        kept.append(_with_values(best, spec))
    for e in kept:
        seen[e["event_id"]] = e["event_ts"]
    return kept


def _group_requests(
    kept: list[dict], kept_day: list[dt.date]
) -> tuple[dict[str, list[dict]], dict[str, dt.date]]:
    """requests: the kept rows of one request_id within one ds partition, and its ds."""
    requests: dict[str, list[dict]] = defaultdict(list)
    request_day: dict[str, dt.date] = {}
    for e, day in zip(kept, kept_day):
        rid = e["request_id"]
        if rid in request_day and request_day[rid] != day:
            raise AssertionError(f"request {rid} has valid impressions in two partitions: undefined here")
        request_day[rid] = day
        requests[rid].append(e)
    return requests, request_day


def _history(kept: list[dict], user: int, request_ts: int, max_len: int) -> list[dict]:
    """The user's kept events before request_ts, oldest first, the last max_len of them."""
    history = [e for e in kept if e["user_id"] == user and e["event_ts"] < request_ts]
    history.sort(key=lambda e: (e["event_ts"], e["event_id"]))
    if len(history) > max_len:
        history = history[len(history) - max_len:]
    return history


def _record(rid: str, impressions: list[dict], kept: list[dict], max_len: int, spec: DatasetSpec) -> dict:
    """The request record of one request: its history and its targets."""
    users = {e["user_id"] for e in impressions}
    times = {e["request_ts"] for e in impressions}
    if len(users) != 1 or len(times) != 1:
        raise AssertionError(f"request {rid} has impressions of several users or times: undefined here")
    user, request_ts = users.pop(), times.pop()
    history = _history(kept, user, request_ts, max_len)
    targets = sorted(impressions, key=lambda e: (e["position"], e["event_id"]))
    rec = {
        "request_id": rid,
        "user_id": user,
        "request_ts": request_ts,
        "hist_item_id": [e["item_id"] for e in history],
        "hist_author_id": [e["author_id"] for e in history],
        "hist_event_ts": [e["event_ts"] for e in history],
        "hist_action": [e["action"] for e in history],
        **{f"hist_{f.name}": [e["features"][f.name] for e in history] for f in spec.features_on("history")},
        "tgt_item_id": [e["item_id"] for e in targets],
        "tgt_author_id": [e["author_id"] for e in targets],
        **{f"tgt_{f.name}": [e["features"][f.name] for e in targets] for f in spec.features_on("target")},
        **{f"tgt_{t}": [e[t] for e in targets] for t in spec.tasks},
    }
    contract = contracts_of(spec).request_record.names
    if sorted(rec) != sorted(contract):
        raise AssertionError(f"reference record columns {sorted(rec)} != contract {sorted(contract)}")
    return rec


def _fill_day_totals(
    day: dt.date,
    exp: DayExpectation,
    records: dict[str, dict],
    request_day: dict[str, dt.date],
    kept: list[dict],
    kept_day: list[dt.date],
) -> None:
    """The day's request counts and state (users with events so far); checks the accounting."""
    ids = sorted(rid for rid, d in request_day.items() if d == day)
    exp.request_ids = ids
    exp.requests = len(ids)
    exp.targets = sum(len(records[rid]["tgt_item_id"]) for rid in ids)
    for rid in ids:
        n = len(records[rid]["hist_item_id"])
        exp.history_lengths[n] = exp.history_lengths.get(n, 0) + 1
    quarantined_requests = {r["request_id"] for r in exp.quarantine_rows if r["request_id"] is not None}
    exp.requests_without_valid_impressions = len(quarantined_requests - set(ids))
    exp.users_with_events = len({e["user_id"] for e, d in zip(kept, kept_day) if d <= day})
    if exp.rows != exp.targets + exp.quarantined_total + exp.duplicates:
        raise AssertionError(f"reference accounting does not balance on {day}")


def build_reference(raw: str | Path, days: list[dt.date], max_len: int,
                    lateness_ms: int = DEFAULT_LATENESS_MS, spec: DatasetSpec = DEFAULT_SPEC) -> Reference:
    if max_len < 1:
        raise ValueError("max_len must be at least 1")
    per_day: dict[dt.date, DayExpectation] = {}
    kept: list[dict] = []
    kept_day: list[dt.date] = []
    seen: dict[str, int] = {}
    for day in sorted(days):
        exp = per_day[day] = DayExpectation(quarantined={r: 0 for r in reasons_for(spec)})
        rows = read_partition(raw, day, spec)
        exp.rows = len(rows)
        day_kept = _validate_and_dedupe(rows, day, exp, lateness_ms, seen, spec)
        kept.extend(day_kept)
        kept_day.extend([day] * len(day_kept))

    requests, request_day = _group_requests(kept, kept_day)
    records = {rid: _record(rid, impressions, kept, max_len, spec) for rid, impressions in requests.items()}
    for day, exp in per_day.items():
        _fill_day_totals(day, exp, records, request_day, kept, kept_day)
    return Reference(records=records, record_day=request_day, days=per_day, kept_events=kept, max_len=max_len)
