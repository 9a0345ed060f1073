"""The compact layout (contract user_day, dataset/compact.py): each user's history stored once
per day; `materialize` gives back the request records.

Each engine writes it from the same intermediate results as its request layout, and the
materialised records must equal that layout's records value for value (the same Arrow
table after the same sort), with the same counts, state and quarantine: on generated dirty
data under the default, e-commerce, MovieLens and a tricky spec, over several days built
from the state, with truncation (a small max_len) and without.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.dataset.compact import UserDays, materialize, user_days_of
from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.batch.polars_engine import PART_FILE, PolarsEngine
from longseq.schemas.contracts import COMPACT_LAYOUT, DEFAULT_CONTRACTS, DEFAULT_SPEC, LAYOUTS, REQUEST_LAYOUT, contracts_of
from longseq.schemas.check import check_arrow_schema
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


def _engine(name: str, request):
    if name == "polars":
        return PolarsEngine(row_group_bytes=4096)
    from longseq.etl.batch.spark_engine import SparkEngine

    return SparkEngine(request.getfixturevalue("spark"))


def _build(engine, raw: Path, out: Path, spec, layout: str, max_len: int, day_by_day: bool = False,
           days: list[dt.date] = DAYS) -> None:
    """`days` built into out, in one range build or one build a day (each from the state before)."""
    ranges = [(d, d) for d in days] if day_by_day else [(days[0], days[-1])]
    for start, end in ranges:
        build(engine, BuildConfig(str(raw), str(out), start, end, max_len, spec=spec, layout=layout), log=lambda m: None)


def _table(out: Path, day: dt.date, kind: str = "requests") -> pa.Table:
    files = sorted((out / kind / f"ds={day}").glob("*.parquet"))
    return pa.concat_tables(pq.read_table(f) for f in files)


def _sorted(records: pa.Table, spec) -> pa.Table:
    """The records in one order, with the contract's Arrow schema (Spark names list elements otherwise)."""
    records = records.cast(to_arrow(contracts_of(spec).request_record))
    return records.sort_by([("user_id", "ascending"), ("request_ts", "ascending"), ("request_id", "ascending")])


def _check_materialises_to_requests(raw: Path, tmp_path: Path, engine, spec, max_len: int,
                                    days: list[dt.date] = DAYS) -> None:
    _build(engine, raw, tmp_path / "request", spec, REQUEST_LAYOUT, max_len, days=days)
    _build(engine, raw, tmp_path / "compact", spec, COMPACT_LAYOUT, max_len, days=days)
    c = contracts_of(spec)
    stored = materialized = 0
    for day in days:
        user_days = _table(tmp_path / "compact", day)
        check_arrow_schema(user_days.schema, c.user_day, source=f"ds={day}", allow_extra=False)
        records = materialize(user_days, spec)
        want = _sorted(_table(tmp_path / "request", day), spec)
        got = _sorted(records, spec)
        assert got.num_rows == want.num_rows, f"ds={day}"
        for name in want.column_names:
            assert got[name].equals(want[name]), f"ds={day}: {name}"
        report = json.loads((tmp_path / "compact" / "reports" / f"ds={day}" / "build.json").read_text())
        want = json.loads((tmp_path / "request" / "reports" / f"ds={day}" / "build.json").read_text())
        assert report["layout"] == COMPACT_LAYOUT and {k: report[k] for k in COUNTS} == {k: want[k] for k in COUNTS}
        for kind in ("state", "quarantine"):  # the layout changes DATA/requests/ only
            assert _table(tmp_path / "compact", day, kind).equals(_table(tmp_path / "request", day, kind)), kind
        # an independent route to the same rows: the request records, compacted
        want_days = user_days.cast(to_arrow(c.user_day))
        assert user_days_of(_table(tmp_path / "request", day), spec).equals(want_days), f"ds={day}"
        assert user_days_of(_split_rows(want_days, spec), spec).equals(want_days), f"ds={day}: rows merged"
        for row in user_days.select(["hist_event_ts", "hist_end", "hist_len"]).to_pylist():  # only windows are stored
            covered = {i for end, n in zip(row["hist_end"], row["hist_len"]) for i in range(end - n, end)}
            assert covered == set(range(len(row["hist_event_ts"]))), f"ds={day}: events no window holds"
        stored += sum(map(len, user_days.column("hist_event_ts").to_pylist()))
        materialized += sum(map(len, records.column("hist_event_ts").to_pylist()))
    assert materialized > stored > 0, "users with several requests a day share their history"


def _split_rows(user_days: pa.Table, spec) -> pa.Table:
    """The same requests, each user's day split over two rows (as a stream's micro-batches
    split it): every other request in one, the rest in the other, that one first."""
    records = materialize(user_days, spec)
    halves = [list(range(0, records.num_rows, 2)), list(range(1, records.num_rows, 2))]  # windows interleave in time
    return pa.concat_tables([user_days_of(records.take(pa.array(h)), spec) for h in reversed(halves)])


COUNTS = ("rows_read", "duplicates", "quarantined", "requests", "targets", "requests_without_valid_impressions",
          "users_in_state", "history_length")


@pytest.mark.parametrize("max_len", [6, 10_000])
@pytest.mark.parametrize("spec", SPECS)
def test_the_polars_engines_compact_output_materialises_to_its_request_records(spec, max_len, tmp_path, request):
    raw = tmp_path / "raw"
    write_random_raw(raw, spec)
    _check_materialises_to_requests(raw, tmp_path, _engine("polars", request), spec, max_len)


@pytest.mark.spark
def test_the_spark_engines_compact_output_materialises_to_its_request_records(tmp_path, request):
    spec = SPECS[1].values[0]  # e-commerce: features on both sides
    raw = tmp_path / "raw"
    write_random_raw(raw, spec)
    _check_materialises_to_requests(raw, tmp_path, _engine("spark", request), spec, 6, days=DAYS[:2])  # the 2nd from the state


@pytest.mark.parametrize("engine_name", ["polars", pytest.param("spark", marks=pytest.mark.spark)])
def test_events_that_no_request_sees_are_not_stored(engine_name, tmp_path, request):
    """max_len 3: r0 sees nothing, r1 the event of r0, r2 the last 3 of r1's 8 events; r1's
    first 5 events and r2's own are in no window, so the user-day stores 4 events."""
    from tests.test_build_semantics import D1, imp, t, write_raw

    rows = [imp("e0", "r0", 1, t(0), t(1), 10)]
    rows += [imp(f"e{i}", "r1", 1, t(100), t(100 + i), 10 + i, position=i) for i in range(1, 9)]
    rows += [imp("e9", "r2", 1, t(200), t(201), 19)]
    write_raw(tmp_path / "raw", D1, rows)
    build(_engine(engine_name, request), BuildConfig(str(tmp_path / "raw"), str(tmp_path / "out"), D1, D1, 3,
                                                     layout=COMPACT_LAYOUT), log=lambda m: None)
    table = _table(tmp_path / "out", D1).cast(to_arrow(DEFAULT_CONTRACTS.user_day))
    [day] = table.to_pylist()
    assert day["hist_event_ts"] == [t(1), t(106), t(107), t(108)]
    assert (day["request_id"], day["hist_end"], day["hist_len"]) == (["r0", "r1", "r2"], [0, 1, 4], [0, 1, 3])
    assert user_days_of(materialize(table)).equals(table)  # the stream's route: records, compacted


def test_a_compact_build_day_by_day_equals_one_range_build_byte_for_byte(tmp_path, request):
    raw = tmp_path / "raw"
    write_random_raw(raw, DEFAULT_SPEC)
    engine = _engine("polars", request)
    _build(engine, raw, tmp_path / "ranged", DEFAULT_SPEC, COMPACT_LAYOUT, 6)
    _build(engine, raw, tmp_path / "daily", DEFAULT_SPEC, COMPACT_LAYOUT, 6, day_by_day=True)
    for day in DAYS:
        a, b = (tmp_path / out / "requests" / f"ds={day}" / PART_FILE for out in ("ranged", "daily"))
        assert a.read_bytes() == b.read_bytes(), day


def test_a_day_with_no_requests_is_an_empty_compact_file(tmp_path):
    engine = PolarsEngine()
    day = dt.date(2026, 1, 1)
    temps = {kind: str(tmp_path / kind) for kind in ("requests", "quarantine", "state")}
    counts = engine.build_day(None, None, day, 16, temps, layout=COMPACT_LAYOUT)
    assert counts.requests == 0 and pq.read_table(Path(temps["requests"]) / PART_FILE).num_rows == 0
    assert materialize(pq.read_table(Path(temps["requests"]) / PART_FILE)).num_rows == 0


# ---------------------------------------------------------------- the gate


def _rewrite(path: Path, column: str, edit) -> None:
    """Rewrite one list column of a user_day file: edit(list of each row's lists) in place."""
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    edit(values)
    index = table.schema.get_field_index(column)
    pq.write_table(table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type)),
                   path)


@pytest.mark.spark
def test_the_gate_checks_a_compact_day_as_its_records_and_catches_a_bad_window_or_sequence(spark, tmp_path):
    """A compact day gets every check of the records suite, with the same outcomes as the
    same day in the request layout, and the layout's own. A window end moved past an event
    at or after its request fails no_leakage; a window end before the one of the request
    before fails window_ends_ordered; a sequence out of order fails history_sorted. Spark
    and pandas give the same outcomes."""
    import shutil

    from longseq.etl.gates.validation import ValidationConfig
    from tests.test_validation import validate_on_both as validate

    raw = tmp_path / "raw"
    write_random_raw(raw, DEFAULT_SPEC)
    day = DAYS[1]
    for layout in (REQUEST_LAYOUT, COMPACT_LAYOUT):
        build(PolarsEngine(), BuildConfig(str(raw), str(tmp_path / layout), DAYS[0], day, 6, layout=layout),
              log=lambda m: None)
    cfg = ValidationConfig(max_len=6, label_rates={t: (0.0, 1.0) for t in DEFAULT_SPEC.tasks})
    outcomes = {layout: validate(spark, str(tmp_path / layout), day, "requests", cfg=cfg)
                for layout in (REQUEST_LAYOUT, COMPACT_LAYOUT)}
    assert outcomes[COMPACT_LAYOUT]["passed"], outcomes[COMPACT_LAYOUT]["checks"]
    checks = {layout: {r["check"]: (r["success"], r["observed"]) for r in o["checks"]} for layout, o in outcomes.items()}
    assert {k: v for k, v in checks[COMPACT_LAYOUT].items() if k in checks[REQUEST_LAYOUT]} == checks[REQUEST_LAYOUT]
    assert {"window_ends_ordered", "windows_within_sequence", "request_lists_aligned"} <= set(checks[COMPACT_LAYOUT])

    # three corruptions, each in its own user-day, in one copy: each fails its own check
    part = Path("requests") / f"ds={day}" / PART_FILE
    user_days = pq.read_table(tmp_path / COMPACT_LAYOUT / part).to_pylist()
    # a request whose window ends before the next one's: the event after it was logged at or after it
    leak, at = next((i, j) for i, r in enumerate(user_days) for j in range(len(r["hist_end"]) - 1)
                    if r["hist_end"][j] < r["hist_end"][j + 1])
    swap = next(i for i, r in enumerate(user_days) if i != leak and r["hist_end"][-1] > r["hist_end"][0])
    unordered = next(i for i, r in enumerate(user_days) if i not in (leak, swap) and len(set(r["hist_event_ts"])) > 1)

    def ends(values: list) -> None:
        values[leak][at] += 1
        values[swap][0], values[swap][-1] = values[swap][-1], values[swap][0]

    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / COMPACT_LAYOUT, bad)
    _rewrite(bad / part, "hist_end", ends)
    _rewrite(bad / part, "hist_event_ts", lambda times: times[unordered].reverse())
    outcome = validate(spark, str(bad), day, "requests", cfg=cfg)
    failed = {r["check"] for r in outcome["checks"] if not r["success"]}
    assert not outcome["passed"] and {"no_leakage", "window_ends_ordered", "history_sorted"} <= failed, failed


# ---------------------------------------------------------------- the readers


def test_a_user_with_a_thousand_requests_in_a_day_is_read_a_piece_at_a_time():
    """One user-day: 11,000 events and 1,000 requests of 10,000-event windows, 10M history
    events once materialised. The reader holds them a piece of at most PIECE_TOKENS events
    (about 30 MB) at a time, never the user-day's 10M."""
    from longseq.reader.steps import ReaderConfig
    from longseq.reader.windows import PIECE_TOKENS, windows_of_user_days

    n = 1_000
    requests = [(f"r{i:04d}", 1_000 + i, 10_000 + i, 10_000, [i % 2]) for i in range(n)]
    table = pa.Table.from_pylist([_user_day(1, list(range(11_000)), requests)],
                                 schema=to_arrow(DEFAULT_CONTRACTS.user_day))
    w = windows_of_user_days(table, ReaderConfig(shuffle=False), 0)
    sizes = [p.num_history_tokens for p in w.pieces()]
    assert sum(sizes) == n * 10_000 and max(sizes) <= PIECE_TOKENS and len(sizes) == -(-n * 10_000 // PIECE_TOKENS)


@pytest.mark.parametrize("shuffled", [False, True])
def test_windows_materialised_a_piece_at_a_time_are_the_materialised_records_prepared(shuffled, tmp_path, request):
    """A row group of user-days as windows, cut into pieces of a few history events, gives
    the requests that materialising the rows and preparing them as request records gives: the
    same order, truncation and values, whatever the piece size."""
    from longseq.features.lengths import LengthSampler
    from longseq.reader.chunks import chunk_from_arrow, concat
    from longseq.reader.steps import ReaderConfig, prepare_chunk
    from longseq.reader.windows import windows_of_user_days

    raw = tmp_path / "raw"
    write_random_raw(raw, load_spec(SPECS_DIR / "ecommerce.yaml"))
    spec = load_spec(SPECS_DIR / "ecommerce.yaml")
    _build(_engine("polars", request), raw, tmp_path / "c", spec, COMPACT_LAYOUT, 6)
    table = _table(tmp_path / "c", DAYS[-1])
    cfg = ReaderConfig(shuffle=shuffled, seed=5, truncation=LengthSampler(min_len=1, max_len=6, multiple=1) if shuffled
                       else None)
    want = prepare_chunk(chunk_from_arrow(materialize(table, spec), spec), cfg, epoch=2)
    w = windows_of_user_days(table, cfg, 2, spec)
    for tokens in (1, 7, 10**9):
        pieces = list(w.pieces(tokens))
        if tokens == 7:
            assert len(pieces) > 1
        got = concat(pieces)
        assert list(got.request["request_id"]) == list(want.request["request_id"]), tokens
        assert np.array_equal(got.hist_offsets, want.hist_offsets) and np.array_equal(got.tgt_offsets, want.tgt_offsets)
        for side in ("hist", "tgt", "request"):
            for name, values in getattr(want, side).items():
                assert np.array_equal(getattr(got, side)[name], values), (tokens, side, name)


@pytest.mark.parametrize("engine", ["arrow", "petastorm"])
def test_the_readers_give_the_same_batches_from_both_layouts(engine, tmp_path, request):
    """Read in file order, a compact day gives the request layout's batches exactly: its
    user-days hold the same requests in the same order. Shuffled and truncated, both
    layouts give every request once per epoch, with the same seed the same batches again."""
    import torch

    from longseq.dataset.storage import file_url
    from longseq.reader.readers import ReaderConfig, open_reader

    raw = tmp_path / "raw"
    write_random_raw(raw, DEFAULT_SPEC)
    for layout in (REQUEST_LAYOUT, COMPACT_LAYOUT):
        _build(_engine("polars", request), raw, tmp_path / layout, DEFAULT_SPEC, layout, 6)

    def urls(layout: str) -> list[str]:
        return [file_url(str(tmp_path / layout / "requests" / f"ds={d}" / PART_FILE)) for d in DAYS]

    def batches(layout: str, cfg: ReaderConfig, epoch: int = 0) -> list:
        return list(open_reader(urls(layout), cfg, engine).batches(epoch))

    in_order = ReaderConfig(batch_size=8, shuffle=False, workers=2)
    want, got = batches(REQUEST_LAYOUT, in_order), batches(COMPACT_LAYOUT, in_order)
    assert len(got) == len(want) > 2
    for a, b in zip(got, want):
        assert list(a.request_id) == list(b.request_id)
        assert torch.equal(a.history.values["item_id"], b.history.values["item_id"])
        assert torch.equal(a.history.offsets, b.history.offsets) and torch.equal(a.labels(), b.labels())

    from longseq.features.lengths import LengthSampler

    trained = ReaderConfig(batch_size=8, seed=3, truncation=LengthSampler(min_len=1, max_len=4, multiple=1), workers=2)
    first, again = batches(COMPACT_LAYOUT, trained, epoch=1), batches(COMPACT_LAYOUT, trained, epoch=1)
    assert [list(b.request_id) for b in first] == [list(b.request_id) for b in again]
    seen = sorted(r for b in first for r in b.request_id)
    assert seen == sorted(r for b in want for r in b.request_id)
    assert max(int(n) for b in first for n in b.history.lengths()) <= 4
    # shuffled, a batch mixes user-days: more users a batch than read in file order, where
    # a user's requests of a day come one after the other
    def users_per_batch(batches: list) -> float:
        return float(np.mean([len(set(b.user_id.tolist())) for b in batches]))

    assert users_per_batch(first) > users_per_batch(got)


# ---------------------------------------------------------------- end to end, through the command line


def test_a_compact_build_publishes_trains_evaluates_and_scores_as_the_request_layout(tmp_path, capsys):
    """`longseq build --layout compact`, publish, train, evaluate, score: the manifest says
    the layout and counts requests, and one model scores both layouts of the same days the
    same (the same metrics, the same score per target)."""
    from longseq.cli.main import main

    raw, start, end = tmp_path / "raw", str(DAYS[0]), str(DAYS[1])
    assert main(["generate", "--raw", str(raw), "--profile", "tiny", "--users", "60", "--days", "2", "--start", start]) == 0
    for layout in LAYOUTS:
        data = str(tmp_path / layout)
        assert main(["build", "--raw", str(raw), "--data", data, "--start", start, "--end", end, "--max-len", "64",
                     "--layout", layout]) == 0
        assert main(["publish", "--data", data, "--start", start, "--end", end,
                     "--override-validation", "the gate runs in its own test"]) == 0
    manifest = json.loads((tmp_path / COMPACT_LAYOUT / "published" / f"ds={end}" / "manifest.json").read_text())
    report = json.loads((tmp_path / COMPACT_LAYOUT / "reports" / f"ds={end}" / "build.json").read_text())
    assert (manifest["layout"], manifest["contract"], manifest["rows"]) == (COMPACT_LAYOUT, "user_day", report["requests"])
    run = str(tmp_path / "run")
    train = ["--start", start, "--end", start, "--preset", "tiny", "--max-steps", "3", "--device", "cpu"]
    assert main(["train", "--data", str(tmp_path / COMPACT_LAYOUT), "--run-dir", str(tmp_path / "compact-run"),
                 *train]) == 0
    assert main(["train", "--data", str(tmp_path / REQUEST_LAYOUT), "--run-dir", run, *train]) == 0
    results = {}
    for layout in LAYOUTS:
        data = str(tmp_path / layout)
        assert main(["evaluate", "--data", data, "--start", end, "--run-dir", run, "--bootstrap", "0", "--device",
                     "cpu"]) == 0
        out = tmp_path / "run" / "eval" / f"{end}_{end}_lenfull.json"
        assert main(["score", "--data", data, "--start", end, "--run-dir", run, "--device", "cpu", "--output",
                     str(tmp_path / f"{layout}.parquet")]) == 0
        results[layout] = json.loads(out.read_text())["tasks"]
    assert results[COMPACT_LAYOUT] == results[REQUEST_LAYOUT]
    scores = [pq.read_table(tmp_path / f"{layout}.parquet") for layout in LAYOUTS]
    key = [(name, "ascending") for name in scores[0].column_names if name not in ("score", "logit") and
           not name.startswith(("score_", "logit_"))]
    assert scores[0].sort_by(key).equals(scores[1].sort_by(key))
