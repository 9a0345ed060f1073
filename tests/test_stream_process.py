"""The stream's state function with many requests of one user waiting in one call
(etl/stream/process.py): it decides them as the batch build does, and reads each pending row
a bounded number of times however many requests are waiting, so that a call costs linear
time in the user's pending rows (no rescan of them per row or per request)."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

import longseq.etl.stream.process as process_module
import tests.stream_sim as stream_sim
from longseq.etl.batch.polars_engine import PolarsEngine
from longseq.etl.stream.process import FAR_MS, process
from longseq.etl.stream.settings import StreamSettings
from longseq.etl.stream.state import StreamState
from longseq.schemas.contracts import RAW_LOG, REQUEST_RECORD, contracts_of
from longseq.schemas.forms import to_arrow
from longseq.sources import SAMPLE_START
from tests.stream_sim import ArrivedFile, StreamSimulator, simulate
from tests.test_build_semantics import imp, read_records, run_build, write_raw
from tests.test_stream_sim import _key, _rows

USER = 7
DAY = SAMPLE_START
NOON = int(dt.datetime(DAY.year, DAY.month, DAY.day, 12, tzinfo=dt.timezone.utc).timestamp()) * 1000
LATENESS_MS = 3_600_000
DELAY_MS = 60_000
MAX_LEN = 50
SETTINGS = StreamSettings(max_len=MAX_LEN, lateness_ms=LATENESS_MS)


def one_users_day(n_requests: int, seed: int = 0) -> list[dict]:
    """`n_requests` of one user 0.7 s apart, all within the lateness bound of the first (so
    that the stream decides them in one call), two impressions each, with the traps of the
    dedup: copies of an earlier request's event (the smaller by dedup order stays), exact
    copies within a request (the first stays) and requests whose rows disagree on request_ts
    (all quarantined). No copy involves such a request: there the stream may differ
    (docs/STREAMING.md)."""
    rng = random.Random(seed)
    inconsistent = lambda k: k % 50 == 7  # noqa: E731
    rows = []
    for k in range(n_requests):
        ts, rid = NOON + 700 * k, f"r{k:05d}"
        for p in range(2):
            rows.append(imp(f"e{k}-{p}", rid, USER, ts, ts + rng.randint(1, 20_000), 1_000 + 2 * k + p, position=p))
        if k % 10 == 3:
            j = rng.choice([j for j in range(k) if not inconsistent(j)])
            rows.append(imp(f"e{j}-0", rid, USER, ts, ts + rng.randint(1, 20_000), 1_000 + 2 * j, position=2))
        if k % 25 == 4:
            rows.append(dict(rows[-1]))
        if inconsistent(k):
            rows.append(imp(f"x{k}", rid, USER, ts + 1_000, ts + 2_000, 9, position=3))
    return rows


def _file(rows: list[dict]) -> ArrivedFile:
    return ArrivedFile(DAY, pa.Table.from_pylist(rows, schema=to_arrow(RAW_LOG)))


@pytest.mark.slow
def test_two_thousand_requests_decided_in_one_call_equal_the_batch_build(tmp_path: Path, monkeypatch) -> None:
    rows = one_users_day(2_000)
    write_raw(tmp_path / "raw", DAY, rows)
    [report] = run_build(PolarsEngine(), tmp_path / "raw", tmp_path / "batch", DAY, max_len=MAX_LEN,
                         lateness_ms=LATENESS_MS)

    records_per_call = []

    def counted(*args, **kwargs):
        out = process(*args, **kwargs)
        records_per_call.append(len(out.records))
        return out

    monkeypatch.setattr(stream_sim, "process", counted)
    result = simulate([[_file(rows)]], SETTINGS, DELAY_MS)
    got = result.days[DAY]
    assert max(records_per_call) == len(got.records) > 1_900  # every request waited for the one call

    want = read_records(tmp_path / "batch", DAY)
    assert {r["request_id"]: r for r in got.records} == {
        rid: {n: r[n] for n in REQUEST_RECORD.names} for rid, r in want.items()}
    names = contracts_of(SETTINGS.spec).quarantine.names
    want_q = Counter(_key(r, names) for r in _rows(tmp_path / "batch" / "quarantine" / f"ds={DAY}"))
    assert Counter(_key(r, names) for r in got.quarantine) == want_q
    assert report["duplicates"] > 100 and got.counts["duplicates"] == report["duplicates"]
    assert got.quarantined()["inconsistent_request"] == report["quarantined"]["inconsistent_request"] > 0
    assert result.states[DAY] == {r["user_id"]: r for r in _rows(tmp_path / "batch" / "state" / f"ds={DAY}")}


class _CountingRow(dict):
    """A pending row that counts how often a field of it is read."""

    reads = 0

    def __getitem__(self, key):
        _CountingRow.reads += 1
        return super().__getitem__(key)


def _reads_per_pending_row(n_requests: int, monkeypatch) -> float:
    """Field reads of pending rows per pending row in the one call that decides all of a
    user's `n_requests`."""
    sim = StreamSimulator(SETTINGS, DELAY_MS)
    sim.run_batch([_file(one_users_day(n_requests))])  # all pending, none due yet
    state = StreamState.decode(sim.states[USER], SETTINGS.spec)
    of = process_module._Work.of

    def counting_of(s: StreamState, spec):
        work = of(s, spec)
        work.pending = [_CountingRow(r) for r in work.pending]
        return work

    monkeypatch.setattr(process_module._Work, "of", staticmethod(counting_of))
    _CountingRow.reads = 0
    out = process(USER, state, [], FAR_MS, SETTINGS)
    assert len(out.records) > 0.9 * n_requests
    return _CountingRow.reads / state.pending.num_rows


def test_a_call_reads_each_pending_row_a_bounded_number_of_times(monkeypatch) -> None:
    """Four times the pending requests: about the same reads per row (a rescan of the pending
    rows per row or per request would make it about four times as many)."""
    small, large = _reads_per_pending_row(500, monkeypatch), _reads_per_pending_row(2_000, monkeypatch)
    assert large < 1.25 * small, (small, large)
