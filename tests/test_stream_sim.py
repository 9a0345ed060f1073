"""The stream's semantics without Spark (etl/stream/process.py driven by tests/stream_sim.py):
raw files arriving in micro-batches, in any order within the watermark delay, give the
records, quarantine, counts and daily states of the batch build (polars) and of the
independent reference."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.batch.polars_engine import PolarsEngine
from longseq.etl.batch.row_rules import LATE_ARRIVAL
from longseq.etl.stream.settings import StreamSettings
from tests.stream_sim import ArrivedFile, simulate
from longseq.schemas.contracts import DEFAULT_SPEC, contracts_of
from longseq.schemas.spec import SPECS_DIR, DatasetSpec, load_spec
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
from tests.records import record_rows
from tests.reference_build import build_reference, read_partition

HOUR_MS = 3_600_000
DAYS = [SAMPLE_START, SAMPLE_START + dt.timedelta(days=1), SAMPLE_START + dt.timedelta(days=2)]
MAX_LEN = 16
ECOMMERCE = load_spec(SPECS_DIR / "ecommerce.yaml")


def arrivals(raw: Path, days: list[dt.date], spec: DatasetSpec, delay_ms: int, seed: int,
             rows_per_file: tuple[int, int] = (1, 40), files_per_batch: tuple[int, int] = (1, 6)) -> list[list[ArrivedFile]]:
    """The raw rows as a log shipper would land them: in event-time order, each shuffled by
    up to `delay_ms` (so none arrives after the watermark passed it), cut into small files
    of one ds each, a few files per micro-batch."""
    rng = random.Random(seed)
    names = contracts_of(spec).raw_log.names
    rows = [(day, {n: r[n] for n in names}) for day in days for r in read_partition(raw, day, spec)]
    # a row with no event_ts lands with its neighbours in the file order
    keyed = [((r["event_ts"] if r["event_ts"] is not None else 0) + rng.uniform(0, delay_ms * 0.9), i, day, r)
             for i, (day, r) in enumerate(rows)]
    keyed.sort(key=lambda k: (k[0], k[1]))
    schema = pa.schema([f for f in pq.read_schema(next((raw / f"ds={days[0]}").glob("*.parquet")))])
    files: list[ArrivedFile] = []
    i = 0
    while i < len(keyed):  # runs of one ds, so that each file's rows come after all earlier files'
        n = rng.randint(*rows_per_file)
        chunk = keyed[i:i + n]
        chunk = chunk[:next((j for j, k in enumerate(chunk) if k[2] != chunk[0][2]), len(chunk))]
        i += len(chunk)
        part = [k[3] for k in chunk]
        table = pa.Table.from_pylist([{spec.raw_names.get(c, c): r[c] for c in names} for r in part],
                                     schema=schema).rename_columns(list(names))
        files.append(ArrivedFile(chunk[0][2], table))
    batches = []
    i = 0
    while i < len(files):
        n = rng.randint(*files_per_batch)
        batches.append(files[i:i + n])
        i += n
    return batches


def _polars(raw: Path, out: Path, lateness_ms: int, spec: DatasetSpec) -> list[dict]:
    config = BuildConfig(str(raw), str(out), DAYS[0], DAYS[-1], MAX_LEN, lateness_ms=lateness_ms, spec=spec)
    return build(PolarsEngine(), config, log=lambda m: None)


def _rows(directory: Path) -> list[dict]:
    return [r for f in sorted(directory.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def _key(row: dict, names) -> tuple:
    return tuple((v is None, v) if not isinstance(v, float) or v == v else (False, "nan") for v in
                 (row[n] for n in names))


def assert_stream_equals_batch(result, out: Path, spec: DatasetSpec, reports: list[dict]) -> None:
    c = contracts_of(spec)
    by_day = {r["ds"]: r for r in reports}
    assert sorted(result.days) == DAYS
    for day in DAYS:
        got = result.days[day]
        want_records = record_rows(out / "requests" / f"ds={day}")
        order = lambda r: (r["user_id"], r["request_ts"], r["request_id"])  # noqa: E731
        assert sorted(got.records, key=order) == sorted(want_records, key=order), f"ds={day}: records differ"
        # the files keep the logs' names; the stream's rows have the spec's
        want_q = Counter(_key(r, c.quarantine_file.names) for r in _rows(out / "quarantine" / f"ds={day}"))
        got_q = Counter(_key(r, c.quarantine.names) for r in got.quarantine)
        assert got_q == want_q, f"ds={day}: quarantine differs"
        report = by_day[day.isoformat()]
        assert got.counts["rows_read"] == report["rows_read"]
        assert got.counts["duplicates"] == report["duplicates"]
        assert got.counts["duplicates_across_days"] == report["duplicates_across_days"]
        assert got.counts["divergent_requests"] == 0
        quarantined = {k: v for k, v in report["quarantined"].items() if v}
        assert dict(got.quarantined()) == quarantined
        want_state = {r["user_id"]: r for r in _rows(out / "state" / f"ds={day}")}
        assert result.states[day] == want_state, f"ds={day}: state differs"


@pytest.fixture(scope="module", params=[DEFAULT_SPEC, ECOMMERCE], ids=["default", "ecommerce"])
def dirty_raw(request, tmp_path_factory) -> tuple[DatasetSpec, Path]:
    spec = request.param
    root = tmp_path_factory.mktemp("sim")
    profile = PROFILES["tiny"].with_sizes(users=None, days=len(DAYS))
    generate(root / "raw", profile, seed=11, start=SAMPLE_START, dirty=0.04, spec=spec)
    return spec, root / "raw"


# the last: files in any order within the lateness bound, with a watermark delay as long
@pytest.mark.parametrize("lateness_ms,delay_ms", [(3 * 24 * HOUR_MS, HOUR_MS), (2 * HOUR_MS, 10 * 60_000),
                                                  (2 * HOUR_MS, 2 * HOUR_MS)],
                         ids=["lateness-3d", "lateness-2h", "disorder-of-the-lateness-bound"])
@pytest.mark.slow
def test_the_stream_equals_the_batch_build_and_the_reference(dirty_raw, tmp_path, lateness_ms, delay_ms):
    spec, raw = dirty_raw
    reports = _polars(raw, tmp_path / "batch", lateness_ms, spec)
    settings = StreamSettings(spec=spec, max_len=MAX_LEN, lateness_ms=lateness_ms)
    batches = arrivals(raw, DAYS, spec, delay_ms, seed=5)
    assert len(batches) > 30
    result = simulate(batches, settings, delay_ms, replay_every=7)
    assert_stream_equals_batch(result, tmp_path / "batch", spec, reports)
    ref = build_reference(raw, DAYS, MAX_LEN, lateness_ms, spec)
    for day in DAYS:
        got = {r["request_id"]: r for r in result.days[day].records}
        assert got == ref.records_of(day)
    assert not any(d.quarantined()[LATE_ARRIVAL] for d in result.days.values())


# ---------------------------------------------------------------- what a stream keyed by user cannot match

def _imp(event_id: str, request_id: str, user_id: int, request_ts: int, event_ts: int, item_id: int, **kw) -> dict:
    from tests.test_build_semantics import imp

    return imp(event_id, request_id, user_id, request_ts, event_ts, item_id, **kw)


def _files(rows: list[dict], day: dt.date) -> list[ArrivedFile]:
    from longseq.schemas.contracts import RAW_LOG
    from longseq.schemas.forms import to_arrow

    return [ArrivedFile(day, pa.Table.from_pylist([r], schema=to_arrow(RAW_LOG))) for r in rows]


NOON = SAMPLE_START and (int(dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc).timestamp()) * 1000)
SETTINGS = StreamSettings(max_len=100, lateness_ms=HOUR_MS)


def test_a_request_id_shared_by_two_users_is_counted_as_divergent():
    """The batch build quarantines both users' rows; the stream, keyed by user, writes each
    user's record and counts the request as divergent, so that it is never silent."""
    rows = [_imp("a1", "shared", 1, NOON, NOON + 1000, 10), _imp("b1", "shared", 2, NOON, NOON + 2000, 20)]
    result = simulate([_files(rows, SAMPLE_START)], SETTINGS, delay_ms=60_000)
    day = result.days[SAMPLE_START]
    assert sorted(r["user_id"] for r in day.records) == [1, 2]
    assert day.counts["divergent_requests"] == 1


def test_rows_of_one_request_split_beyond_its_deadline_are_quarantined_and_counted():
    """Rows of a request with two request_ts, the later ones logged after the earlier's
    deadline: the record of the earlier rows is out, so the later rows are quarantined as
    inconsistent_request and the request counted as divergent (the batch build quarantines
    all of its rows). Within the deadline, the stream quarantines them all, as the batch does."""
    later = NOON + 2 * HOUR_MS
    rows = [_imp("e1", "r", 1, NOON, NOON + 1000, 10), _imp("e2", "r", 1, later, later + 1000, 11),
            _imp("x", "other", 1, later + 5000, later + 6000, 12)]
    clock = [_imp("c", "c", 2, later - 1000, later - 1000, 13)]  # another user's row moves the watermark
    # the no-data batch decides r (its deadline is past the watermark) before e2 arrives
    batches = [_files(rows[:1], SAMPLE_START), _files(clock, SAMPLE_START), [], _files(rows[1:], SAMPLE_START)]
    day = simulate(batches, SETTINGS, delay_ms=60_000).days[SAMPLE_START]
    assert sorted(r["request_id"] for r in day.records) == ["c", "other", "r"]
    assert [(q["event_id"], q["reason"]) for q in day.quarantine] == [("e2", "inconsistent_request")]
    assert day.counts["divergent_requests"] == 1

    close = NOON + 10 * 60_000  # within the hour: both rows are at hand at the deadline
    rows = [_imp("e1", "r", 1, NOON, NOON + 1000, 10), _imp("e2", "r", 1, close, close + 1000, 11)]
    day = simulate([_files(rows, SAMPLE_START)], SETTINGS, delay_ms=60_000).days[SAMPLE_START]
    assert day.records == [] and sorted(q["reason"] for q in day.quarantine) == ["inconsistent_request"] * 2
    assert day.counts["divergent_requests"] == 0


def test_a_row_that_arrives_after_the_watermark_passed_it_is_quarantined_not_dropped():
    """late_arrival: the request it belonged to may already be out. A late copy of a kept
    event is still a duplicate."""
    first = [_imp("e1", "r1", 1, NOON, NOON + 1000, 10)]
    much_later = NOON + 3 * HOUR_MS
    second = [_imp("e9", "r9", 2, much_later, much_later, 19)]
    late = [_imp("e2", "r1", 1, NOON, NOON + 2000, 11, position=1), _imp("e1", "r1", 1, NOON, NOON + 1000, 10)]
    result = simulate([_files(first, SAMPLE_START), _files(second, SAMPLE_START), _files(late, SAMPLE_START)],
                      SETTINGS, delay_ms=60_000)
    day = result.days[SAMPLE_START]
    assert {r["request_id"]: r["tgt_item_id"] for r in day.records} == {"r1": [10], "r9": [19]}
    assert [(q["event_id"], q["reason"]) for q in day.quarantine] == [("e2", LATE_ARRIVAL)]
    assert day.counts["duplicates"] == 1
    assert day.counts["rows_read"] == len(day.records[0]["tgt_item_id"]) + 1 + 1 + 1  # r1, r9, e2, the copy


@pytest.mark.slow
def test_arrival_order_does_not_matter_within_the_watermark_delay(dirty_raw, tmp_path):
    """Several seeds of arrival order and batch sizes give one and the same result."""
    spec, raw = dirty_raw
    settings = StreamSettings(spec=spec, max_len=MAX_LEN, lateness_ms=2 * HOUR_MS)
    results = [simulate(arrivals(raw, DAYS[:2], spec, 30 * 60_000, seed=s, rows_per_file=(1, 5 + 20 * s),
                                 files_per_batch=(1, 2 + s)), settings, 30 * 60_000) for s in range(3)]
    order = lambda r: (r["user_id"], r["request_ts"], r["request_id"])  # noqa: E731
    for other in results[1:]:
        for day in DAYS[:2]:
            assert sorted(other.days[day].records, key=order) == sorted(results[0].days[day].records, key=order)
            assert other.states[day] == results[0].states[day]
            assert other.days[day].counts == results[0].days[day].counts
