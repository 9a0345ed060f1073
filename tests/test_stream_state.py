"""The stream's per-user state: its byte form, and the handoff with daily builds' USER_STATE
(etl/stream/state.py), against states the polars engine built."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.batch.polars_engine import PolarsEngine
from longseq.etl.stream.state import StreamState, day_number, from_user_state, to_user_state
from longseq.schemas.contracts import DEFAULT_LATENESS_MS, DEFAULT_SPEC
from longseq.schemas.spec import SPECS_DIR, load_spec
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate

DAYS = [SAMPLE_START, SAMPLE_START + dt.timedelta(days=1)]
MAX_LEN = 16
ECOMMERCE = load_spec(SPECS_DIR / "ecommerce.yaml")


@pytest.fixture(scope="module", params=[DEFAULT_SPEC, ECOMMERCE], ids=["default", "ecommerce"])
def built_state(request, tmp_path_factory) -> tuple[object, list[dict]]:
    """The polars engine's state after the first day of a dirty tiny sample (late uploads
    leave pending tails; duplicates fill the dedup windows)."""
    spec = request.param
    root: Path = tmp_path_factory.mktemp("state")
    generate(root / "raw", PROFILES["tiny"], seed=6, start=SAMPLE_START, dirty=0.05, spec=spec)
    build(PolarsEngine(), BuildConfig(str(root / "raw"), str(root / "data"), DAYS[0], DAYS[-1], MAX_LEN, spec=spec),
          log=lambda m: None)
    rows = pq.read_table(root / "data" / "state" / f"ds={DAYS[0]}").to_pylist()
    assert any(r["pending_event_id"] for r in rows) and any(r["dedup_event_id"] for r in rows)
    assert any(len(r["hist_event_ts"]) > MAX_LEN for r in rows)  # a settled max_len plus a tail
    return spec, rows


def test_a_daily_state_comes_back_from_the_stream_state_unchanged(built_state):
    spec, rows = built_state
    for row in rows:
        state = from_user_state(row, DAYS[0], spec)
        assert state.truncated_at == int(dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc).timestamp() * 1000)
        assert state.last_snapshot == day_number(DAYS[0])
        again = to_user_state(state, row["user_id"], DAYS[0], MAX_LEN, DEFAULT_LATENESS_MS, spec)
        assert again == row


def test_the_byte_form_round_trips(built_state):
    spec, rows = built_state
    for row in rows[:20]:
        state = from_user_state(row, DAYS[0], spec)
        back = StreamState.decode(state.encode(), spec)
        assert back.hist.equals(state.hist) and back.window.equals(state.window)
        assert back.pending.equals(state.pending) and back.emitted.equals(state.emitted)
        assert (back.truncated_at, back.last_snapshot, back.active) == (state.truncated_at, state.last_snapshot,
                                                                       state.active)
    empty = StreamState.empty(spec)
    assert StreamState.decode(empty.encode(), spec).hist.num_rows == 0


def test_a_later_day_leaves_out_events_of_later_days():
    """A snapshot of day D keeps a tail event of D, not one that arrived for D+1."""
    d0 = DAYS[0]
    end = int(dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc).timestamp() * 1000)
    row = {"user_id": 7, "hist_item_id": [1, 2, 3], "hist_author_id": [1, 1, 1],
           "hist_event_ts": [end - 10, end + 5, end + 9], "hist_action": [1, 0, 2],
           "pending_event_id": ["a", "b"], "dedup_event_id": ["a", "b"], "dedup_event_ts": [end + 5, end + 9]}
    state = from_user_state(row, d0, DEFAULT_SPEC)
    # an event of the next day's data, logged at the same time as the tail
    later = {"item_id": 4, "author_id": 1, "event_ts": end + 7, "action": 1, "event_id": "c", "ds": day_number(d0) + 1}
    merged = state.hist.to_pylist() + [later]
    state.hist = pa.Table.from_pylist(sorted(merged, key=lambda e: (e["event_ts"], e["event_id"] or "")),
                                      schema=state.hist.schema)
    assert to_user_state(state, 7, d0, 16, DEFAULT_LATENESS_MS, DEFAULT_SPEC) == row
    with_later = to_user_state(state, 7, d0 + dt.timedelta(days=1), 16, DEFAULT_LATENESS_MS, DEFAULT_SPEC)
    assert with_later["hist_event_ts"] == [end - 10, end + 5, end + 7, end + 9]
