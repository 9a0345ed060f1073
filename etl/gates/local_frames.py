"""The frames the validation suites check, derived without a JVM: polars over Arrow tables,
handed to Great Expectations' pandas engine as pandas DataFrames.

Each function is the twin of one in etl/gates/validation.py that derives the same columns
in Spark (`request_frames`, `user_day_frames`, `raw_frame`), with Spark's semantics where
a corrupted record could tell them apart: lists of unequal length are zipped with null
padding (Spark's arrays_zip), an empty history is leak-free, a null flag is left to GX
(which skips nulls, as it does on Spark). tests/test_validation_engines.py checks that
both engines give the same outcome, clean and corrupted.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from longseq.etl.gates.check_columns import checks_actions, feature_check_name, feature_list_columns
from longseq.features.actions import num_actions
from longseq.schemas.contracts import COMPACT_LAYOUT, TGT_PREFIX, contracts_of
from longseq.schemas.spec import DatasetSpec


def _pl() -> Any:
    import polars as pl

    return pl


def _all(conditions: list[Any]) -> Any:
    pl = _pl()
    return pl.all_horizontal(conditions) if conditions else pl.lit(True)


def _every(column: str, condition: Any) -> Any:
    """Whether `condition` (on pl.element()) holds for every element of a list column; an
    empty list holds (Spark's forall)."""
    pl = _pl()
    return pl.col(column).list.eval(condition).list.all()


def _sorted(column: str) -> Any:
    """The list equals itself sorted, nulls last (Spark's `c == array_sort(c)`)."""
    pl = _pl()
    return pl.col(column).list.eval(pl.element().sort(nulls_last=True)).eq_missing(pl.col(column))


def _value_checks(spec: DatasetSpec) -> dict[str, Any]:
    """name -> whether every value of a row's lists is valid (validation._value_checks)."""
    pl = _pl()
    x = pl.element()
    checks = {}
    if checks_actions(spec):
        checks["actions_in_range"] = _every("hist_action", x.is_not_null() & (x >= 0) & (x < num_actions(spec.tasks)))
    for column, f in feature_list_columns(spec):
        valid = x.is_not_null() & (x >= 0) if f.kind == "categorical" else x.is_not_null() & x.is_finite()
        checks[feature_check_name(column, f)] = _every(column, valid)
    return checks


def _zipped(frame: Any, columns: list[str], keep: list[str] = ()) -> Any:
    """One row per position of `columns`' lists (and the `keep` columns repeated), the
    shorter lists padded with nulls: Spark's inline(arrays_zip(...))."""
    pl = _pl()
    longest = pl.max_horizontal([pl.col(c).list.len() for c in columns])
    positions = pl.int_ranges(0, longest)
    padded = frame.select(*keep, *[pl.col(c).list.gather(positions, null_on_oob=True) for c in columns])
    return padded.explode(columns, keep_nulls=False)  # no row for an empty or null list, as Spark's inline


def _targets(rows: Any, spec: DatasetSpec) -> Any:
    """One row per target of the rows' tgt_* label lists, a column per task."""
    pl = _pl()
    labels = [f"{TGT_PREFIX}{t}" for t in spec.tasks]
    zipped = _zipped(rows, labels)
    return zipped.select(*[pl.col(f"{TGT_PREFIX}{t}").cast(pl.Int32).alias(t) for t in spec.tasks])


def request_frames(records: pa.Table, spec: DatasetSpec) -> dict[str, Any]:
    """validation.request_frames, of request-layout records."""
    pl = _pl()
    c = contracts_of(spec)
    hist, tgt = list(c.history_columns), list(c.target_columns)
    rows = pl.from_arrow(records)
    frame = rows.select(
        "request_id",
        pl.col(hist[0]).list.len().cast(pl.Int32).alias("hist_len"),
        pl.col(tgt[0]).list.len().cast(pl.Int32).alias("n_targets"),
        _all([pl.col(h).list.len() == pl.col(hist[0]).list.len() for h in hist[1:]]).alias("hist_aligned"),
        _all([pl.col(t).list.len() == pl.col(tgt[0]).list.len() for t in tgt[1:]]).alias("tgt_aligned"),
        (pl.col("hist_event_ts").list.max() < pl.col("request_ts")).fill_null(True).alias("leak_free"),
        _sorted("hist_event_ts").alias("hist_sorted"),
        *[check.alias(name) for name, check in _value_checks(spec).items()],
    )
    return {"records": frame, "targets": _targets(rows, spec)}


def user_day_frames(user_days: pa.Table, spec: DatasetSpec) -> dict[str, Any]:
    """validation.user_day_frames, of compact rows. A request's newest event is looked up in
    the flattened sequences, never copied per request (a user's sequence is long)."""
    import numpy as np
    import pyarrow.compute as pc

    pl = _pl()
    c = contracts_of(spec)
    hist, tgt = list(c.history_columns), list(c.target_columns)
    requests = ["request_id", "request_ts", "hist_end", "hist_len", "tgt_count"]
    rows = pl.from_arrow(user_days)
    n = pl.col("request_id").list.len()
    ordered = lambda col: pl.col(col).list.eval(pl.element().diff().fill_null(0) >= 0).list.all()  # noqa: E731
    value_checks = _value_checks(spec)
    days = rows.with_row_index("_row").with_columns(
        _all([pl.col(h).list.len() == pl.col(hist[0]).list.len() for h in hist[1:]]).alias("hist_aligned"),
        _sorted("hist_event_ts").alias("hist_sorted"),
        _all([pl.col(r).list.len() == n for r in requests[1:]]).alias("request_lists_aligned"),
        _all([pl.col(t).list.len() == pl.col("tgt_count").list.sum() for t in tgt]).alias("tgt_aligned"),
        pl.when(n < 2).then(True).otherwise(ordered("hist_end") & ordered("request_ts")).alias("window_ends_ordered"),
        pl.col("hist_event_ts").list.len().fill_null(0).alias("_seq_len"),
        *[check.alias(name) for name, check in value_checks.items()],
    ).drop(*hist, *tgt)
    per_request = _zipped(days, requests, keep=["_row", "_seq_len"])

    # the newest event of each window: the sequence's element hist_end - 1 (the first for an
    # empty window), null past the sequence's end (Spark's element_at)
    sequences = user_days.column("hist_event_ts")
    times = pc.list_flatten(sequences).to_numpy(zero_copy_only=False)
    lengths = days["_seq_len"].to_numpy().astype(np.int64)  # unsigned plus signed is float in numpy
    starts = np.cumsum(lengths) - lengths
    row, length = per_request["_row"].to_numpy().astype(np.int64), per_request["_seq_len"].to_numpy().astype(np.int64)
    at = np.maximum(per_request["hist_end"].fill_null(0).to_numpy().astype(np.int64), 1) - 1
    found = per_request["hist_end"].is_not_null().to_numpy() & (at < length)
    newest = np.where(found, times[np.where(found, starts[row] + at, 0)] if len(times) else 0, 0)
    per_request = per_request.with_columns(pl.Series("_newest", newest).set(pl.Series(~found), None))

    window_ok = ((pl.col("hist_len") >= 0) & (pl.col("hist_end") - pl.col("hist_len") >= 0)
                 & (pl.col("hist_end") <= pl.col("_seq_len")))
    within = per_request.group_by("_row").agg(window_ok.all().alias("windows_within_sequence"))
    layout = days.join(within, on="_row", how="left").sort("_row").select(
        "user_id", "request_lists_aligned", "window_ends_ordered",
        pl.col("windows_within_sequence").fill_null(True))
    flags = days.select("_row", "hist_aligned", "tgt_aligned", "hist_sorted", *value_checks)
    records = per_request.join(flags, on="_row", how="left", maintain_order="left").select(
        "request_id", "hist_len", pl.col("tgt_count").alias("n_targets"), "hist_aligned", "tgt_aligned",
        ((pl.col("hist_len") == 0) | (pl.col("_newest") < pl.col("request_ts"))).alias("leak_free"), "hist_sorted",
        *value_checks,
    )
    return {"records": records, "targets": _targets(rows, spec), "user_days": layout}


def records_frames(data: pa.Table, spec: DatasetSpec, layout: str) -> dict[str, Any]:
    """The frames the request suite checks, of records in either layout, as pandas."""
    frames = user_day_frames(data, spec) if layout == COMPACT_LAYOUT else request_frames(data, spec)
    return {name: frame.to_pandas() for name, frame in frames.items()}


def raw_frame(raw: pa.Table) -> Any:
    """validation.raw_frame: the raw rows and whether each event is not before its request."""
    pl = _pl()
    frame = pl.from_arrow(raw).with_columns(
        (pl.col("event_ts") >= pl.col("request_ts")).alias("event_not_before_request"))
    return frame.to_pandas()


def sample(table: pa.Table, fraction: float, seed: int = 0) -> pa.Table:
    """A random `fraction` of the rows (Bernoulli, like Spark's sample; other rows than Spark's)."""
    import numpy as np

    keep = np.random.default_rng(seed).random(table.num_rows) < fraction
    return table.filter(pa.array(keep))
