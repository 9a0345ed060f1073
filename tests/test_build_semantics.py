"""The build's correctness traps, each with a test that a plausible wrong engine fails.

Every test runs on each engine (and the polars engine writing the compact layout, whose
records are materialised to be checked). Hand-made partitions pin exact histories written out by
hand (so they also check the reference build in tests/reference_build.py); generated data
compares every record with that reference, and the engines with each other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.etl.batch.build import BuildConfig, build, length_summary
from longseq.dataset.compact import materialize
from longseq.schemas.contracts import (
    COMPACT_LAYOUT, DAY_MS, DEFAULT_LATENESS_MS, QUARANTINE, RAW_LOG, REQUEST_LAYOUT, REQUEST_RECORD, day_start_ms,
)
from longseq.schemas.forms import to_arrow
from longseq.sources import SAMPLE_START
from tests.reference_build import Reference, build_reference

D1 = SAMPLE_START
D2 = D1 + dt.timedelta(days=1)
NOON = day_start_ms(D1) + 12 * 3600 * 1000
MIDNIGHT = day_start_ms(D2)  # between D1 and D2


def t(seconds: float) -> int:
    """ms since epoch, `seconds` after noon on D1."""
    return NOON + int(seconds * 1000)


# ---------------------------------------------------------------- engines

# "-compact": the engine writes the compact layout (contract user_day), which read_records
# materialises (dataset/compact.py): every trap holds for it too
ENGINES = [pytest.param("polars", id="polars"), pytest.param("polars-compact", id="polars-compact"),
           pytest.param("spark", id="spark", marks=pytest.mark.spark), pytest.param("stream", id="stream")]


def _make_engine(name: str, request):
    if name.endswith("-compact"):
        engine = _make_engine(name.removesuffix("-compact"), request)
        engine.built_layout = COMPACT_LAYOUT  # read by run_build
        return engine
    if name == "polars":
        from longseq.etl.batch.polars_engine import PolarsEngine

        return PolarsEngine()
    if name == "stream":  # the stream's semantics, without Spark (tests/stream_sim_engine.py)
        from tests.stream_sim_engine import StreamSimEngine

        return StreamSimEngine()
    from longseq.etl.batch.spark_engine import SparkEngine

    return SparkEngine(request.getfixturevalue("spark"))  # the one session of the run


@pytest.fixture(params=ENGINES)
def engine(request):
    return _make_engine(request.param, request)


# ---------------------------------------------------------------- raw data by hand


def imp(event_id, request_id, user_id, request_ts, event_ts, item_id, position=0, **overrides) -> dict:
    """One impression row (contract 1); labels default to finish=1 (action 1)."""
    row = {
        "event_id": event_id,
        "request_id": request_id,
        "user_id": user_id,
        "request_ts": request_ts,
        "item_id": item_id,
        "author_id": item_id + 100_000,
        "position": position,
        "event_ts": event_ts,
        "play_ms": 1000,
        "duration_ms": 2000,
        "finish": 1,
        "skip": 0,
        "like": 0,
        "comment": 0,
    }
    unknown = set(overrides) - set(row)
    assert not unknown, unknown
    row.update(overrides)
    return row


def write_raw(raw: Path, day: dt.date, rows: list[dict]) -> None:
    part = raw / f"ds={day.isoformat()}"
    part.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{c: r.get(c) for c in RAW_LOG.names} for r in rows], schema=to_arrow(RAW_LOG))
    pq.write_table(table, part / "part-00000.parquet")
    (part / "_SUCCESS").touch()


def run_build(engine, raw: Path, out: Path, start: dt.date, end: dt.date | None = None, max_len: int = 10_000,
              lateness_ms: int = DEFAULT_LATENESS_MS) -> list[dict]:
    config = BuildConfig(raw=str(raw), out=str(out), start=start, end=end, max_len=max_len, lateness_ms=lateness_ms,
                         layout=getattr(engine, "built_layout", REQUEST_LAYOUT))
    return build(engine, config, log=lambda m: None)


# ---------------------------------------------------------------- reading outputs


def _parquet_rows(directory: Path) -> list[dict]:
    rows: list[dict] = []
    for f in sorted(directory.glob("*.parquet")):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def read_records(out: Path, day: dt.date) -> dict[str, dict]:
    """request_id -> the record's contract columns (extra columns are allowed and ignored); a
    day built in the compact layout is materialised."""
    directory = out / "requests" / f"ds={day.isoformat()}"
    assert (directory / "_SUCCESS").exists(), f"{directory} has no _SUCCESS"
    compact = read_report(out, day).get("layout") == COMPACT_LAYOUT
    records: dict[str, dict] = {}
    for f in sorted(directory.glob("*.parquet")):
        table = materialize(pq.read_table(f)) if compact else pq.read_table(f)
        missing = set(REQUEST_RECORD.names) - set(table.column_names)
        assert not missing, f"{f} lacks contract columns {missing}"
        for row in table.select(REQUEST_RECORD.names).to_pylist():
            assert row["request_id"] not in records, f"request {row['request_id']} written twice"
            records[row["request_id"]] = row
    return records


def read_report(out: Path, day: dt.date) -> dict:
    return json.loads((out / "reports" / f"ds={day.isoformat()}" / "build.json").read_text())


def read_quarantine(out: Path, day: dt.date) -> list[dict]:
    return _parquet_rows(out / "quarantine" / f"ds={day.isoformat()}")


def hist(record: dict) -> list[int]:
    return record["hist_item_id"]


def assert_history_aligned(record: dict) -> None:
    n = len(record["hist_item_id"])
    assert [len(record[c]) for c in ("hist_author_id", "hist_event_ts", "hist_action")] == [n] * 3
    m = len(record["tgt_item_id"])
    assert [len(record[f"tgt_{c}"]) for c in ("author_id", "finish", "skip", "like", "comment")] == [m] * 5


COUNT_KEYS = ("rows_read", "duplicates", "duplicates_across_days", "quarantined", "requests", "targets", "requests_without_valid_impressions")


def expected_report_counts(ref: Reference, day: dt.date) -> dict:
    exp = ref.days[day]
    return {
        "rows_read": exp.rows,
        "duplicates": exp.duplicates,
        "duplicates_across_days": exp.duplicates_across_days,
        "quarantined": exp.quarantined,
        "requests": exp.requests,
        "targets": exp.targets,
        "requests_without_valid_impressions": exp.requests_without_valid_impressions,
    }


def assert_matches_reference(out: Path, raw: Path, days: list[dt.date], max_len: int,
                             lateness_ms: int = DEFAULT_LATENESS_MS) -> Reference:
    """Every record, report count and quarantined row of each day equals the reference's."""
    ref = build_reference(raw, days, max_len, lateness_ms)
    for day in days:
        got = read_records(out, day)
        want = ref.records_of(day)
        assert sorted(got) == sorted(want), f"ds={day}: request ids differ"
        for rid in want:
            assert got[rid] == want[rid], f"ds={day}: record {rid} differs"
        report = read_report(out, day)
        assert {k: report[k] for k in COUNT_KEYS} == expected_report_counts(ref, day), f"ds={day}: report counts"
        assert Counter(_row_key(r) for r in read_quarantine(out, day)) == Counter(
            _row_key(r) for r in ref.days[day].quarantine_rows
        ), f"ds={day}: quarantined rows"
    return ref


def _row_key(row: dict) -> tuple:
    return tuple(row[c] for c in QUARANTINE.names)


# ================================================================ the traps


def test_history_is_events_logged_before_the_request_not_served_before(engine, tmp_path):
    """r1's second impression is served before r2 but logged after it: in r3's history only."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_raw(raw, D1, [
        imp("e1a", "r1", 1, t(0), t(5), 11, position=0),
        imp("e1b", "r1", 1, t(0), t(50), 12, position=1),  # served at 0, logged at 50
        imp("e2", "r2", 1, t(20), t(60), 21),
        imp("e3", "r3", 1, t(100), t(110), 31, like=1, comment=1),
    ])
    run_build(engine, raw, out, D1)
    recs = read_records(out, D1)
    assert sorted(recs) == ["r1", "r2", "r3"]
    assert hist(recs["r1"]) == []
    assert hist(recs["r2"]) == [11]  # not 12: logged at 50 > 20
    r3 = recs["r3"]
    assert r3 == {
        "request_id": "r3", "user_id": 1, "request_ts": t(100),
        "hist_item_id": [11, 12, 21],
        "hist_author_id": [100_011, 100_012, 100_021],
        "hist_event_ts": [t(5), t(50), t(60)],
        "hist_action": [1, 1, 1],
        "tgt_item_id": [31], "tgt_author_id": [100_031],
        "tgt_finish": [1], "tgt_skip": [0], "tgt_like": [1], "tgt_comment": [1],
    }
    assert_matches_reference(out, raw, [D1], 10_000)


def _midnight_rows() -> tuple[list[dict], list[dict]]:
    m = MIDNIGHT
    s = 1000
    day1 = [
        # user 7: rA's second impression is logged after midnight, in day 1's partition
        imp("a0", "rA", 7, m - 60 * s, m - 30 * s, 101, position=0),
        imp("a1", "rA", 7, m - 60 * s, m + 120 * s, 102, position=1),
        # user 8: three events settle before midnight, two are logged after it
        *[imp(f"p{i}", "rP", 8, m - 100 * s, m - (90 - 10 * i) * s, 81 + i, position=i) for i in range(3)],
        imp("p3", "rP", 8, m - 100 * s, m + 30 * s, 84, position=3),
        imp("p4", "rP", 8, m - 100 * s, m + 40 * s, 85, position=4),
    ]
    day2 = [
        imp("b0", "rB", 7, m + 60 * s, m + 180 * s, 201),
        imp("c0", "rC", 7, m + 300 * s, m + 310 * s, 301),
        imp("q0", "rQ", 8, m + 35 * s, m + 200 * s, 86),
        imp("r0", "rR", 8, m + 100 * s, m + 400 * s, 87),
        imp("n0", "rN", 9, m + 50 * s, m + 60 * s, 901),  # user 9: first seen on day 2
    ]
    return day1, day2


def _check_midnight(out: Path) -> None:
    r1, r2 = read_records(out, D1), read_records(out, D2)
    assert sorted(r1) == ["rA", "rP"] and sorted(r2) == ["rB", "rC", "rN", "rQ", "rR"]
    assert hist(r1["rA"]) == [] and hist(r1["rP"]) == []
    assert hist(r2["rB"]) == [101]  # 102 was served before rB but logged after it
    assert r2["rB"]["hist_event_ts"] == [MIDNIGHT - 30_000]
    assert hist(r2["rC"]) == [102, 201]  # max_len 2: the most recent two of 101, 102, 201
    # user 8's state must keep the last max_len events settled before midnight AND the later ones
    assert hist(r2["rQ"]) == [83, 84]
    assert hist(r2["rR"]) == [84, 85]
    assert hist(r2["rN"]) == []


def test_logged_after_midnight_with_two_daily_builds(engine, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    day1, day2 = _midnight_rows()
    write_raw(raw, D1, day1)
    write_raw(raw, D2, day2)
    run_build(engine, raw, out, D1, max_len=2)
    run_build(engine, raw, out, D2, max_len=2)  # a separate run, from day 1's state
    assert read_report(out, D2)["previous_state"] is not None
    _check_midnight(out)
    assert_matches_reference(out, raw, [D1, D2], 2)

    ranged = tmp_path / "ranged"
    run_build(engine, raw, ranged, D1, D2, max_len=2)
    _check_midnight(ranged)
    for day in (D1, D2):
        assert read_records(ranged, day) == read_records(out, day)


def test_ties_order_by_event_id_as_string_and_equal_ts_is_not_history(engine, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_raw(raw, D1, [
        # three events of rA logged in one batch at t(10), ids "9" < "11" < "10" numerically
        imp("9", "rA", 3, t(0), t(10), 9, position=0),
        imp("10", "rA", 3, t(0), t(10), 10, position=1),
        imp("11", "rA", 3, t(0), t(10), 11, position=2),
        imp("20", "rB", 3, t(10), t(30), 20),  # rB at t(10) == their event_ts
        imp("30", "rC", 3, t(30), t(40), 30),  # rB's event at t(30) == rC's request_ts
        # targets: written out of order; equal positions ordered by event_id as a string
        imp("b2", "rT", 4, t(0), t(1), 42, position=2),
        imp("x", "rT", 4, t(0), t(1), 41, position=1),
        imp("t9", "rT", 4, t(0), t(1), 44, position=3),
        imp("t10", "rT", 4, t(0), t(1), 43, position=3),
        imp("a0", "rT", 4, t(0), t(1), 40, position=0),
    ])
    run_build(engine, raw, out, D1, max_len=2)
    recs = read_records(out, D1)
    assert hist(recs["rA"]) == []
    assert hist(recs["rB"]) == []  # event_ts == request_ts is not history
    # sorted ("10", "11", "9") at equal event_ts; max_len 2 keeps "11", "9"
    assert hist(recs["rC"]) == [11, 9]
    assert recs["rC"]["hist_event_ts"] == [t(10), t(10)]
    assert recs["rA"]["tgt_item_id"] == [9, 10, 11]
    assert recs["rT"]["tgt_item_id"] == [40, 41, 42, 43, 44]  # "t10" < "t9"
    assert recs["rT"]["tgt_author_id"] == [100_040, 100_041, 100_042, 100_043, 100_044]
    assert_matches_reference(out, raw, [D1], 2)


def test_truncation_keeps_the_most_recent_max_len(engine, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    rows = []
    for user, n in ((51, 5), (52, 2), (53, 3), (54, 1)):
        rows += [imp(f"{user}-{i}", f"{user}-r0", user, t(0), t(1 + i), user * 100 + i, position=i) for i in range(n)]
        rows.append(imp(f"{user}-x", f"{user}-r1", user, t(100), t(200), user * 100 + 99))
    write_raw(raw, D1, rows)
    run_build(engine, raw, out, D1, max_len=3)
    recs = read_records(out, D1)
    assert hist(recs["51-r1"]) == [5102, 5103, 5104]  # the most recent 3 of 5
    assert recs["51-r1"]["hist_event_ts"] == [t(3), t(4), t(5)]
    assert hist(recs["52-r1"]) == [5200, 5201]  # shorter than max_len: all of them
    assert hist(recs["53-r1"]) == [5300, 5301, 5302]
    assert hist(recs["54-r1"]) == [5400]
    for user in (51, 52, 53, 54):
        assert hist(recs[f"{user}-r0"]) == []
        assert_history_aligned(recs[f"{user}-r1"])
    assert read_report(out, D1)["history_length"]["max"] == 3.0
    assert_matches_reference(out, raw, [D1], 3)


def test_requests_and_events_interleaved_row_window_trap(engine, tmp_path):
    """A ROWS window over a stream mixing requests and events sees requests as rows: this
    user has several events between requests, two requests at one time, and events logged
    exactly at a request's time, so any row-count window gets these histories wrong."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    u = 60
    # (request, request_ts, [(event, logged at, item)])
    plan = [
        ("r1", 0, [("a", 1, 1), ("b", 2, 2), ("c", 9, 3)]),  # c is logged late, at r5's time
        ("r2", 3, [("d", 4, 4), ("e", 6, 5)]),  # e is logged at r3/r4's time
        ("r3", 6, [("f", 7, 6)]),
        ("r4", 6, [("g", 8, 7)]),  # same request_ts as r3
        ("r5", 9, [("h", 12, 8)]),
        ("r6", 10, [("i", 11, 9)]),
        ("r7", 13, [("j", 14, 10)]),
    ]
    rows = [
        imp(f"ev-{e}", r, u, t(rts), t(ets), item, position=p)
        for r, rts, events in plan
        for p, (e, ets, item) in enumerate(events)
    ]
    write_raw(raw, D1, rows)
    run_build(engine, raw, out, D1, max_len=3)
    recs = read_records(out, D1)
    assert {r: hist(recs[r]) for r, _, _ in plan} == {
        "r1": [],
        "r2": [1, 2],
        "r3": [1, 2, 4],  # e logged at 6 == request_ts: not history
        "r4": [1, 2, 4],
        "r5": [5, 6, 7],  # c logged at 9 == request_ts: not history
        "r6": [6, 7, 3],
        "r7": [3, 9, 8],
    }
    assert recs["r6"]["hist_event_ts"] == [t(7), t(8), t(9)]
    assert_matches_reference(out, raw, [D1], 3)


def test_requests_without_history_keep_their_record(engine, tmp_path):
    """An inner join with the history drops these: each must have a record with empty lists."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_raw(raw, D1, [
        imp("c1", "cold", 70, t(0), t(5), 700, position=0),  # a user never seen before
        imp("c2", "cold", 70, t(0), t(6), 701, position=1),
        imp("l1", "late1", 71, t(0), t(100), 710),  # user 71's events all come after both requests
        imp("l2", "late2", 71, t(10), t(120), 711),
        imp("w1", "warm1", 72, t(0), t(1), 720),  # a user with a history, so the join has rows
        imp("w2", "warm2", 72, t(10), t(20), 721),
    ])
    run_build(engine, raw, out, D1)
    recs = read_records(out, D1)
    assert sorted(recs) == ["cold", "late1", "late2", "warm1", "warm2"]
    for rid in ("cold", "late1", "late2", "warm1"):
        for c in ("hist_item_id", "hist_author_id", "hist_event_ts", "hist_action"):
            assert recs[rid][c] == [], (rid, c)  # empty lists, not nulls
    assert recs["cold"]["tgt_item_id"] == [700, 701]
    assert recs["cold"]["user_id"] == 70 and recs["cold"]["request_ts"] == t(0)
    assert hist(recs["warm2"]) == [720]
    report = read_report(out, D1)
    assert report["requests"] == 5 and report["history_length"]["p50"] == 0.0
    assert_matches_reference(out, raw, [D1], 10_000)


def test_duplicate_event_ids_collapse_to_the_smallest_row(engine, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    u = 80
    write_raw(raw, D1, [
        # d1: delivered three times, identical
        *[imp("d1", "r1", u, t(0), t(5), 1, position=0) for _ in range(3)],
        # d2: conflicting copies; the smallest by (event_ts, ..., item_id, ...) is (t8, item 2)
        imp("d2", "r1", u, t(0), t(30), 2, position=1),
        imp("d2", "r1", u, t(0), t(8), 5, position=1),
        imp("d2", "r1", u, t(0), t(8), 2, position=1),
        # d3: one invalid copy (quarantined, not a duplicate) and one valid
        imp("d3", "r1", u, t(0), t(6), 4, position=2, finish=2),
        imp("d3", "r1", u, t(0), t(6), 4, position=2),
        # d4: copies differ in labels only; finish 0 < 1, so the skip copy is kept (action 2)
        imp("d4", "r1", u, t(0), t(7), 6, position=3, finish=1, skip=0),
        imp("d4", "r1", u, t(0), t(7), 6, position=3, finish=0, skip=1),
        imp("d5", "r2", u, t(10), t(11), 7),
    ])
    run_build(engine, raw, out, D1)
    recs = read_records(out, D1)
    r1, r2 = recs["r1"], recs["r2"]
    assert r1["tgt_item_id"] == [1, 2, 4, 6]
    assert r1["tgt_finish"] == [1, 1, 1, 0] and r1["tgt_skip"] == [0, 0, 0, 1]
    assert hist(r2) == [1, 4, 6, 2]  # d2 is history at t8 < t10 (the t30 copy would not be)
    assert r2["hist_event_ts"] == [t(5), t(6), t(7), t(8)]
    assert r2["hist_action"] == [1, 1, 2, 1]
    report = read_report(out, D1)
    assert report["duplicates"] == 5  # d1: 2, d2: 2, d4: 1
    assert report["quarantined"]["label_out_of_range"] == 1
    assert report["targets"] == 5 and report["rows_read"] == 11
    assert_matches_reference(out, raw, [D1], 10_000)


def test_request_with_no_valid_impression_has_no_record_and_is_counted(engine, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    u = 90
    write_raw(raw, D1, [
        imp("x1", "rX", u, t(0), t(1), 1, position=0, finish=2),
        imp("x2", "rX", u, t(0), t(-5), 2, position=1),
        imp("x3", "rX", u, t(0), t(2), 3, position=-1),
        imp("y1", "rY", u, t(0), t(3), 5, position=0),
        imp("y2", "rY", u, t(0), t(4), 0, position=1),  # item_id 0
        imp("n1", None, u, t(0), t(3), 9),  # no request_id: not a request
        imp("z1", "rZ", u, t(10), t(12), 6),
    ])
    run_build(engine, raw, out, D1)
    recs = read_records(out, D1)
    assert sorted(recs) == ["rY", "rZ"]
    assert recs["rY"]["tgt_item_id"] == [5]
    assert hist(recs["rZ"]) == [5]  # invalid rows are never history
    report = read_report(out, D1)
    assert report["requests_without_valid_impressions"] == 1
    assert report["requests"] == 2
    assert {k: v for k, v in report["quarantined"].items() if v} == {
        "label_out_of_range": 1, "event_before_request": 1, "negative_position": 1,
        "nonpositive_id": 1, "missing_request_id": 1,
    }
    reasons = {r["event_id"]: r["reason"] for r in read_quarantine(out, D1)}
    assert reasons == {
        "x1": "label_out_of_range", "x2": "event_before_request", "x3": "negative_position",
        "y2": "nonpositive_id", "n1": "missing_request_id",
    }
    assert_matches_reference(out, raw, [D1], 10_000)


def _dirty_day(across_users: bool = True) -> tuple[list[dict], dict[str, str]]:
    """Rows breaking every rule (some several at once) and their expected reasons, plus
    valid rows and duplicates. `across_users`: with a request_id shared by two users, which
    a stream keyed by user cannot see (tests/test_stream_sim.py counts it instead)."""
    start, end = day_start_ms(D1), day_start_ms(D1) + 86_400_000
    rows, want = [], {}

    def bad(eid, reason, **overrides):
        row = imp(eid, f"bad-{eid}", 5, t(0), t(1), 1)
        assert set(overrides) <= set(row)
        rows.append({**row, **overrides})
        want[eid] = reason

    for i, name in enumerate(RAW_LOG.required_names):
        if name == "event_id":
            rows.append(imp(None, "bad-noid", 5, t(0), t(1), 1))
            want[None] = "missing_event_id"
        else:
            bad(f"m{i}", f"missing_{name}", **{name: None})
    bad("two-nulls", "missing_user_id", user_id=None, item_id=None)
    bad("null-and-label", "missing_user_id", user_id=None, finish=5)
    bad("label", "label_out_of_range", comment=-1)
    bad("label-and-early", "label_out_of_range", like=3, event_ts=t(-1))
    bad("early", "event_before_request", event_ts=t(-1))
    bad("early-and-id", "event_before_request", event_ts=t(-1), user_id=-1)
    bad("user0", "nonpositive_id", user_id=0)
    bad("author-neg", "nonpositive_id", author_id=-7)
    bad("id-and-pos", "nonpositive_id", item_id=0, position=-1)
    bad("pos", "negative_position", position=-2)
    bad("pos-and-day", "negative_position", position=-1, request_ts=end, event_ts=end + 1)
    bad("next-day", "request_ts_outside_partition", request_ts=end, event_ts=end + 5)
    bad("prev-day", "request_ts_outside_partition", request_ts=start - 1, event_ts=start + 5)
    bad("late", "late_event", event_ts=t(0) + DEFAULT_LATENESS_MS + 1)
    bad("late-and-day", "late_event", request_ts=end, event_ts=end + DEFAULT_LATENESS_MS + 1)
    # one request_id with two users, another with two request_ts: all their valid rows go
    shared = [("inc-a", "bad-inc", 7, t(0)), ("inc-b", "bad-inc", 8, t(0))] if across_users else []
    for eid, rid, user, ts in [*shared, ("inc-c", "bad-inc-ts", 7, t(0)), ("inc-d", "bad-inc-ts", 7, t(3))]:
        rows.append(imp(eid, rid, user, ts, ts + 1000, 40))
        want[eid] = "inconsistent_request"
    rows.append(imp("inc-e", "bad-inc", 9, t(0), t(1), 41, finish=7))  # invalid first: its own reason
    want["inc-e"] = "label_out_of_range"
    # valid: first ms of the day, the last ms, normal rows, and duplicates
    rows.append(imp("first-ms", "ok-first", 6, start, start, 11))
    rows.append(imp("last-ms", "ok-last", 6, end - 1, end + 1000, 12))
    rows += [imp(f"ok{i}", "ok", 6, t(0), t(1 + i), 20 + i, position=i) for i in range(4)]
    rows += [imp("ok1", "ok", 6, t(0), t(2), 21, position=1)] * 2  # two re-deliveries
    rows.append(imp("ok2", "ok", 6, t(0), t(50), 22, position=2))  # a conflicting one
    rows.append(imp("mixed-ok", "mixed", 6, t(5), t(6), 30))
    rows.append(imp("mixed-bad", "mixed", 6, t(5), t(6), 31, skip=9))
    want["mixed-bad"] = "label_out_of_range"
    return rows, want


def test_accounting_balances_and_every_rule_has_its_reason(engine, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    rows, want = _dirty_day(across_users=engine.name != "stream")
    write_raw(raw, D1, rows)
    run_build(engine, raw, out, D1)
    report = read_report(out, D1)
    ref = build_reference(raw, [D1], 10_000)

    expected_reasons = Counter(want.values())
    assert report["quarantined"] == {r: expected_reasons.get(r, 0) for r in report["quarantined"]}
    assert set(report["quarantined"]) == set(ref.days[D1].quarantined)
    assert all(report["quarantined"][r] >= 1 for r in ref.days[D1].quarantined)  # every rule exercised
    assert report["duplicates"] == 3
    assert report["rows_read"] == len(rows)
    assert report["rows_read"] == report["targets"] + sum(report["quarantined"].values()) + report["duplicates"]
    assert report["targets"] == 7 and report["requests"] == 4
    assert {k: report[k] for k in COUNT_KEYS} == expected_report_counts(ref, D1)
    # every bad-* request (each has one invalid impression) is counted; "mixed" has a record
    assert report["requests_without_valid_impressions"] == len({r["request_id"] for r in rows if r["request_id"] and r["request_id"].startswith("bad-")})
    recs = read_records(out, D1)
    assert sorted(recs) == ["mixed", "ok", "ok-first", "ok-last"]
    assert recs["ok"]["tgt_item_id"] == [20, 21, 22, 23]
    assert recs["ok-last"]["hist_item_id"] == [11, 20, 21, 22, 23, 30]
    assert_matches_reference(out, raw, [D1], 10_000)


def test_redelivery_on_a_later_day_is_a_duplicate_within_the_lateness_bound(engine, tmp_path):
    """An event_id kept on D1 and delivered again on D2 (under another request) counts once,
    while the D1 copy is logged within the lateness bound before D2 begins; not after."""
    raw = tmp_path / "raw"
    u = 70
    write_raw(raw, D1, [imp("e1", "r1", u, t(0), t(1), 1), imp("e2", "r1", u, t(0), t(2), 2, position=1)])
    d2 = NOON + DAY_MS
    write_raw(raw, D2, [imp("e1", "r2", u, d2, d2 + 1000, 1), imp("e3", "r2", u, d2, d2 + 2000, 3, position=1)])
    for lateness, across in [(DEFAULT_LATENESS_MS, 1), (3_600_000, 0)]:  # noon D1 is > 1 h before D2 began
        out = tmp_path / f"out-{lateness}"
        run_build(engine, raw, out, D1)
        run_build(engine, raw, out, D2, lateness_ms=lateness)  # day by day: through the state
        report = read_report(out, D2)
        assert (report["duplicates"], report["duplicates_across_days"]) == (across, across)
        want_targets = [3] if across else [1, 3]
        assert read_records(out, D2)["r2"]["tgt_item_id"] == want_targets
        assert_matches_reference(out, raw, [D1, D2], 10_000, lateness)


def test_a_longer_lateness_than_the_state_has_is_refused(tmp_path):
    from longseq.etl.batch.polars_engine import PolarsEngine
    from longseq.schemas.errors import LongseqError

    raw, out = tmp_path / "raw", tmp_path / "out"
    write_raw(raw, D1, [imp("e1", "r1", 1, t(0), t(1), 1)])
    write_raw(raw, D2, [imp("e2", "r2", 1, NOON + DAY_MS, NOON + DAY_MS + 1, 2)])
    run_build(PolarsEngine(), raw, out, D1, lateness_ms=DAY_MS)
    with pytest.raises(LongseqError, match="built with --lateness 1d; its state cannot deduplicate over 2d"):
        run_build(PolarsEngine(), raw, out, D2, lateness_ms=2 * DAY_MS)
    run_build(PolarsEngine(), raw, out, D2, lateness_ms=DAY_MS // 2)  # shorter is fine
    report = out / "reports" / f"ds={D1.isoformat()}" / "build.json"
    report.write_text(json.dumps({k: v for k, v in json.loads(report.read_text()).items() if k != "lateness_ms"}))
    with pytest.raises(LongseqError, match="built by an older longseq"):
        run_build(PolarsEngine(), raw, out, D2)


def test_request_id_shared_by_two_users_is_quarantined_not_merged(engine, tmp_path):
    if engine.name == "stream":
        pytest.skip("a stream keyed by user cannot see another user's rows: it counts the case instead "
                    "(tests/test_stream_sim.py::test_a_request_id_shared_by_two_users_is_counted_as_divergent)")
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_raw(raw, D1, [
        imp("a1", "shared", 1, t(0), t(1), 10), imp("b1", "shared", 2, t(0), t(2), 20, position=1),
        imp("a2", "ra", 1, t(10), t(11), 11),
        imp("late", "ra", 1, t(10), t(10) + DEFAULT_LATENESS_MS + 1, 12, position=1),  # "year 3000" kind
    ])
    run_build(engine, raw, out, D1)
    recs = read_records(out, D1)
    assert sorted(recs) == ["ra"] and hist(recs["ra"]) == [] and recs["ra"]["tgt_item_id"] == [11]
    reasons = {r["event_id"]: r["reason"] for r in read_quarantine(out, D1)}
    assert reasons == {"a1": "inconsistent_request", "b1": "inconsistent_request", "late": "late_event"}
    state = pq.read_table(out / "state" / f"ds={D1.isoformat()}").to_pylist()
    assert [s["pending_event_id"] for s in state] == [[]]  # nothing late waits in the state
    assert_matches_reference(out, raw, [D1], 10_000)


def test_quarantine_output_keeps_rows_as_read_with_a_reason(engine, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    rows, want = _dirty_day(across_users=engine.name != "stream")
    write_raw(raw, D1, rows)
    run_build(engine, raw, out, D1)
    directory = out / "quarantine" / f"ds={D1.isoformat()}"
    assert (directory / "_SUCCESS").exists()
    schema = pq.read_schema(sorted(directory.glob("*.parquet"))[0])
    assert set(QUARANTINE.names) <= set(schema.names)
    assert schema.field("reason").type == pa.string()
    got = read_quarantine(out, D1)
    assert len(got) == sum(read_report(out, D1)["quarantined"].values()) == len(want)
    assert all(r["reason"] is not None for r in got)
    assert {r["event_id"]: r["reason"] for r in got} == want
    # rows as they were read: every raw column, nulls and bad values included
    expected_rows = [{**r, "reason": want[r["event_id"]]} for r in rows if r["event_id"] in want]
    assert Counter(_row_key(r) for r in got) == Counter(_row_key(r) for r in expected_rows)


# ================================================================ generated data

TINY_DAYS = [D1, D2]
TINY_MAX_LEN = 20  # below many users' history, so truncation happens


@pytest.fixture(scope="module")
def tiny_reference(tiny_raw) -> Reference:
    ref = build_reference(tiny_raw, TINY_DAYS, TINY_MAX_LEN)
    # the data must exercise the traps, or matching it proves little
    assert sum(d.duplicates for d in ref.days.values()) > 0
    assert sum(d.quarantined_total for d in ref.days.values()) > 0
    lengths = [len(r["hist_item_id"]) for r in ref.records.values()]
    assert lengths.count(TINY_MAX_LEN) > 0 and lengths.count(0) > 0
    assert any(0 < n < TINY_MAX_LEN for n in lengths)
    assert sum(1 for rid in ref.records if ref.full_history_length(rid) > TINY_MAX_LEN) > 0
    assert len(ref.records_of(D2)) > 0
    events = ref.kept_events
    served_before_logged_after = [
        r for r in ref.records.values()
        if any(e["user_id"] == r["user_id"] and e["request_ts"] < r["request_ts"] <= e["event_ts"] for e in events)
    ]
    assert served_before_logged_after
    assert any(len(set(r["hist_event_ts"])) < len(r["hist_event_ts"]) for r in ref.records.values())  # ties
    return ref


@pytest.fixture(scope="module")
def tiny_builds(tiny_raw, tmp_path_factory):
    """One range build of the tiny data per engine, shared by the tests below."""
    cache: dict[str, Path] = {}

    def get(engine) -> Path:
        key = f"{engine.name}-{getattr(engine, 'built_layout', REQUEST_LAYOUT)}"
        if key not in cache:
            out = tmp_path_factory.mktemp(f"tiny-{key}")
            run_build(engine, tiny_raw, out, D1, D2, max_len=TINY_MAX_LEN)
            cache[key] = out
        return cache[key]

    return get


@pytest.mark.slow_engines("stream")
def test_generated_data_matches_the_reference(engine, tiny_raw, tiny_reference, tiny_builds):
    out = tiny_builds(engine)
    ref = tiny_reference
    for day in TINY_DAYS:
        got, want = read_records(out, day), ref.records_of(day)
        assert sorted(got) == sorted(want)
        wrong = [rid for rid in want if got[rid] != want[rid]]
        assert not wrong, f"ds={day}: {len(wrong)} of {len(want)} records differ, e.g. {wrong[0]}: {got[wrong[0]]} != {want[wrong[0]]}"
        for rec in got.values():
            assert_history_aligned(rec)
        report = read_report(out, day)
        assert {k: report[k] for k in COUNT_KEYS} == expected_report_counts(ref, day)
        assert report["rows_read"] == report["targets"] + sum(report["quarantined"].values()) + report["duplicates"]
        assert report["history_length"] == length_summary(ref.days[day].history_lengths)
        assert report["users_in_state"] == ref.days[day].users_with_events
        assert Counter(_row_key(r) for r in read_quarantine(out, day)) == Counter(
            _row_key(r) for r in ref.days[day].quarantine_rows
        )


@pytest.mark.slow_engines("stream")
def test_day_by_day_equals_one_range_build(engine, tiny_raw, tiny_builds, tmp_path):
    ranged = tiny_builds(engine)
    daily = tmp_path / "daily"
    for day in TINY_DAYS:
        run_build(engine, tiny_raw, daily, day, max_len=TINY_MAX_LEN)
    for day in TINY_DAYS:
        assert read_records(daily, day) == read_records(ranged, day)
        assert {k: read_report(daily, day)[k] for k in COUNT_KEYS} == {k: read_report(ranged, day)[k] for k in COUNT_KEYS}


def _digests(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for kind in ("requests", "quarantine", "state")
        for p in sorted((out / kind).rglob("*"))
        if p.is_file()
    }


def _state_rows(out: Path, day: dt.date) -> list[tuple]:
    rows = _parquet_rows(out / "state" / f"ds={day.isoformat()}")
    return sorted(tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(r.items())) for r in rows)


@pytest.mark.slow_engines("stream")
def test_rebuilding_a_day_is_idempotent(engine, tiny_raw, tiny_builds, tmp_path):
    ranged = tiny_builds(engine)
    out = tmp_path / "out"
    shutil.copytree(ranged, out)
    before = _digests(out)
    for day in (D2, D1, D2):  # day 2 again on day 1's state, day 1 over itself, day 2 on the new state
        run_build(engine, tiny_raw, out, day, max_len=TINY_MAX_LEN)
    for day in TINY_DAYS:
        assert read_records(out, day) == read_records(ranged, day)
        assert Counter(_row_key(r) for r in read_quarantine(out, day)) == Counter(
            _row_key(r) for r in read_quarantine(ranged, day)
        )
        assert _state_rows(out, day) == _state_rows(ranged, day)
        assert {k: read_report(out, day)[k] for k in COUNT_KEYS} == {k: read_report(ranged, day)[k] for k in COUNT_KEYS}
        leftovers = [p.name for kind in ("requests", "quarantine", "state") for p in (out / kind).iterdir() if p.name.startswith(".")]
        assert leftovers == []
    if engine.name == "polars":
        assert _digests(out) == before


@pytest.mark.spark
def test_spark_and_polars_write_identical_records(tiny_raw, tiny_builds, request):
    spark_out = tiny_builds(_make_engine("spark", request))
    polars_out = tiny_builds(_make_engine("polars", request))
    for day in TINY_DAYS:
        s, p = read_records(spark_out, day), read_records(polars_out, day)
        assert sorted(s) == sorted(p)
        differ = [rid for rid in s if s[rid] != p[rid]]
        assert not differ, f"ds={day}: {len(differ)} records differ, e.g. {differ[0]}"
        keys = (*COUNT_KEYS, "history_length", "users_in_state")
        assert {k: read_report(spark_out, day)[k] for k in keys} == {k: read_report(polars_out, day)[k] for k in keys}
        assert Counter(_row_key(r) for r in read_quarantine(spark_out, day)) == Counter(
            _row_key(r) for r in read_quarantine(polars_out, day)
        )
        assert _state_rows(spark_out, day) == _state_rows(polars_out, day)
