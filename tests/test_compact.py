"""The compact layout (contract user_day, dataset/compact.py): each user's history stored once
per day; `materialize` gives back the request records.

The engines write it from the same intermediate results as the request layout, and the
materialised records must equal the request layout's byte for byte (written the same way):
on generated dirty data under the default, e-commerce, MovieLens and a tricky spec, over
several days from the state, with truncation (a small max_len) and without.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.dataset.compact import UserDays, materialize
from longseq.etl.batch.polars_engine import PART_FILE, PolarsEngine, write_part
from longseq.schemas.contracts import COMPACT_LAYOUT, DEFAULT_CONTRACTS, DEFAULT_SPEC, REQUEST_LAYOUT, contracts_of
from longseq.schemas.forms import to_arrow
from longseq.schemas.spec import SPECS_DIR, load_spec
from tests.test_build_spec import DAYS, TRICKY, write_random_raw

SPECS = [pytest.param(DEFAULT_SPEC, id="default"), pytest.param(load_spec(SPECS_DIR / "ecommerce.yaml"), id="ecommerce"),
         pytest.param(load_spec(SPECS_DIR / "movielens.yaml"), id="movielens"), pytest.param(TRICKY, id="tricky")]


def _user_day(user_id: int, events: list[int], requests: list[tuple[str, int, int, int, list[int]]]) -> dict:
    """A user_day row of the default spec: history fields all equal to `events`; each request
    (request_id, request_ts, hist_end, hist_len, targets' item ids)."""
    c = DEFAULT_CONTRACTS
    row: dict = {"user_id": user_id, **{f"hist_{n}": events for n in c.history_names}}
    row |= {"request_id": [r[0] for r in requests], "request_ts": [r[1] for r in requests],
            "hist_end": [r[2] for r in requests], "hist_len": [r[3] for r in requests],
            "tgt_count": [len(r[4]) for r in requests]}
    return row | {f"tgt_{n}": [t for r in requests for t in r[4]] for n in c.target_names}


def test_materialize_cuts_each_requests_window_and_targets_out_of_its_user_day():
    events = list(range(10))
    table = pa.Table.from_pylist([
        _user_day(7, events, [("a", 1, 6, 3, [10, 11]), ("b", 2, 9, 3, [12]), ("c", 3, 10, 3, [13, 14, 15])]),
        _user_day(8, [], [("d", 5, 0, 0, [99])]),
    ], schema=to_arrow(DEFAULT_CONTRACTS.user_day))
    records = materialize(table)
    assert records.schema == to_arrow(DEFAULT_CONTRACTS.request_record)
    got = [(r["request_id"], r["user_id"], r["request_ts"], r["hist_item_id"], r["tgt_item_id"]) for r in records.to_pylist()]
    assert got == [("a", 7, 1, [3, 4, 5], [10, 11]), ("b", 7, 2, [6, 7, 8], [12]), ("c", 7, 3, [7, 8, 9], [13, 14, 15]),
                   ("d", 8, 5, [], [99])]
    # any requests, in any order, across user-days: the same records as cut from all of them
    pick = np.array([3, 0, 2])
    assert materialize(UserDays.of(table), select=pick).equals(records.take(pick))


def _build_days(raw: Path, out: Path, spec, layout: str, max_len: int) -> list[Path]:
    """Each day of DAYS built by the polars engine from the state of the day before; the
    request files, in order."""
    engine, state, files = PolarsEngine(row_group_bytes=4096), None, []
    for day in DAYS:
        temps = {kind: str(out / kind / f"ds={day}") for kind in ("requests", "quarantine", "state")}
        engine.build_day(str(raw / f"ds={day}"), state, day, max_len, temps, spec=spec, layout=layout)
        state = temps["state"]
        files.append(Path(temps["requests"]) / PART_FILE)
    return files


@pytest.mark.parametrize("max_len", [6, 10_000])
@pytest.mark.parametrize("spec", SPECS)
def test_the_polars_engines_compact_output_materialises_to_its_request_records_byte_for_byte(spec, max_len, tmp_path):
    raw = tmp_path / "raw"
    write_random_raw(raw, spec)
    requests = _build_days(raw, tmp_path / "request", spec, REQUEST_LAYOUT, max_len)
    compact = _build_days(raw, tmp_path / "compact", spec, COMPACT_LAYOUT, max_len)
    c = contracts_of(spec)
    stored = materialized = 0
    for day, want, got in zip(DAYS, requests, compact):
        user_days = pq.read_table(got)
        assert user_days.schema == to_arrow(c.user_day)
        records = materialize(user_days, spec)
        out = tmp_path / "materialized" / f"ds={day}"
        write_part(pl.from_arrow(records), c.request_record, str(out), 4096)
        assert (out / PART_FILE).read_bytes() == want.read_bytes(), f"ds={day}"
        stored += sum(map(len, user_days.column("hist_event_ts").to_pylist()))
        materialized += sum(map(len, records.column("hist_event_ts").to_pylist()))
    assert materialized > stored > 0, "users with several requests a day share their history"


def test_the_state_of_a_compact_build_is_the_request_builds(tmp_path):
    """The layout changes DATA/requests/ only: state and quarantine are the same bytes."""
    raw = tmp_path / "raw"
    write_random_raw(raw, DEFAULT_SPEC)
    _build_days(raw, tmp_path / "request", DEFAULT_SPEC, REQUEST_LAYOUT, 6)
    _build_days(raw, tmp_path / "compact", DEFAULT_SPEC, COMPACT_LAYOUT, 6)
    for kind in ("state", "quarantine"):
        for day in DAYS:
            a, b = (tmp_path / layout / kind / f"ds={day}" / PART_FILE for layout in ("request", "compact"))
            assert a.read_bytes() == b.read_bytes(), (kind, day)


def test_a_day_with_no_requests_is_an_empty_compact_file(tmp_path):
    engine = PolarsEngine()
    day = dt.date(2026, 1, 1)
    temps = {kind: str(tmp_path / kind) for kind in ("requests", "quarantine", "state")}
    counts = engine.build_day(None, None, day, 16, temps, layout=COMPACT_LAYOUT)
    assert counts.requests == 0 and pq.read_table(Path(temps["requests"]) / PART_FILE).num_rows == 0
    assert materialize(pq.read_table(Path(temps["requests"]) / PART_FILE)).num_rows == 0
