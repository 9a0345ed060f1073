"""Which raw rows are valid: the quarantine rules, defined once for every engine and
derived from the dataset spec (`rules_for(spec)`: its required columns and its tasks).

A rule is a function of an `Ops` adapter returning a boolean expression that is true when
a row breaks it. Spark Columns and polars Exprs share the operators (< <= != & |), so one
definition serves both engines; `Ops` supplies the few calls that differ. A row's reason
is the first rule it breaks, in the order below (null checks first, so later rules only
see non-null values).

One rule spans rows: the rows of one request_id that pass every row rule must agree on
REQUEST_KEYS (one user, one request_ts), or all of them are quarantined as
INCONSISTENT_REQUEST. Merging them would make one user's impressions targets of another
user's request, with the wrong history. Each engine applies it after the row rules with a
group-by on request_id.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache, reduce
from typing import Any, Callable

from longseq.schemas.contracts import DAY_MS, DEFAULT_LATENESS_MS, DEFAULT_SPEC, contracts_of, day_start_ms
from longseq.schemas.spec import DatasetSpec


@dataclass(frozen=True)
class Ops:
    """Engine adapter: column access, null test and a first-match CASE for one day."""

    col: Callable[[str], Any]
    is_null: Callable[[Any], Any]
    is_nonfinite: Callable[[Any], Any]  # NaN or +-inf (a float column)
    first_match: Callable[[list[tuple[Any, str]]], Any]  # [(condition, reason)] -> reason or null
    day_start_ms: Any  # ms: an int for one day, or a Column of each row's (the stream)
    lateness_ms: int = DEFAULT_LATENESS_MS

    @property
    def day_end_ms(self) -> int:
        return self.day_start_ms + DAY_MS


@dataclass(frozen=True)
class Rule:
    reason: str
    broken: Callable[[Ops], Any]
    doc: str


def _any(exprs: list[Any]) -> Any:
    return reduce(lambda a, b: a | b, exprs)


@lru_cache(maxsize=None)
def rules_for(spec: DatasetSpec) -> tuple[Rule, ...]:
    """The spec's row rules, in order: a null in each required raw column (required inputs
    included), then labels over the spec's tasks, then the id and time rules every spec shares."""
    tasks = spec.tasks
    return (
        *(
            Rule(f"missing_{name}", lambda o, name=name: o.is_null(o.col(name)), f"{name} is null")
            for name in contracts_of(spec).raw_log.required_names
        ),
        Rule(
            "label_out_of_range",
            lambda o: _any([(o.col(t) != 0) & (o.col(t) != 1) for t in tasks]),
            "a label is not 0 or 1",
        ),
        Rule("event_before_request", lambda o: o.col("event_ts") < o.col("request_ts"), "event_ts < request_ts"),
        Rule(
            "late_event",
            lambda o: o.col("event_ts") - o.col("request_ts") > o.lateness_ms,
            "event_ts - request_ts is more than the lateness bound (default 3 days)",
        ),
        Rule(
            "nonpositive_id",
            lambda o: _any([o.col(c) <= 0 for c in ("user_id", "item_id", "author_id")]),
            "user_id, item_id or author_id <= 0",
        ),
        Rule("negative_position", lambda o: o.col("position") < 0, "position < 0"),
        Rule(
            "request_ts_outside_partition",
            lambda o: (o.col("request_ts") < o.day_start_ms) | (o.col("request_ts") >= o.day_end_ms),
            "request_ts is not in the UTC day of its ds partition",
        ),
        # a bad value of a feature's input is the row's fault, not the day's: quarantined here,
        # it never reaches the records, whose validation would otherwise fail the whole day
        *(
            Rule(f"negative_{name}", lambda o, name=name: o.col(name) < 0, f"{name} < 0 (a categorical feature's id)")
            for name in categorical_inputs(spec)
        ),
        *(
            Rule(f"nonfinite_{name}", lambda o, name=name: o.is_nonfinite(o.col(name)), f"{name} is NaN or infinite")
            for name in float_feature_inputs(spec)
        ),
    )


def categorical_inputs(spec: DatasetSpec) -> tuple[str, ...]:
    """The inputs a categorical feature reads, in the spec's input order."""
    read = {f.source or f.name for f in spec.features if f.kind == "categorical"}
    return tuple(i.name for i in spec.inputs if i.name in read)


def float_feature_inputs(spec: DatasetSpec) -> tuple[str, ...]:
    """The float inputs some feature reads, directly or through a derived ratio."""
    return tuple(name for name in feature_inputs(spec) if spec.input(name).type.startswith("float"))


REQUEST_KEYS: tuple[str, ...] = ("user_id", "request_ts")
INCONSISTENT_REQUEST = "inconsistent_request"
# The stream only (etl/stream/process.py): a valid row that arrived after the event-time
# watermark passed its event_ts, when the requests it could change may be decided already.
LATE_ARRIVAL = "late_arrival"


def reasons_for(spec: DatasetSpec) -> tuple[str, ...]:
    """Every quarantine reason of the spec, in rule order: the keys of a report's `quarantined`."""
    return (*(r.reason for r in rules_for(spec)), INCONSISTENT_REQUEST)


def dedup_order(spec: DatasetSpec) -> tuple[str, ...]:
    """Duplicated event_ids collapse to the row that is smallest by these columns, so the
    kept copy is the same whatever order rows arrive in, in every engine.

    The id, time and label columns are required, so never null on a valid row; then the
    inputs the spec's features read (directly or through a derived ratio), in spec order,
    since their values reach the records. Those may be null: a null sorts before any value
    (NULLS FIRST, Spark's order for min(struct) and polars' default sort).
    """
    return (
        "event_ts", "request_ts", "request_id", "user_id", "position", "item_id", "author_id", *spec.tasks,
        *feature_inputs(spec),
    )


def feature_inputs(spec: DatasetSpec) -> tuple[str, ...]:
    """The inputs some feature reads, directly or through a derived ratio, in the spec's input order."""
    ratios = {d.name: d.ratio for d in spec.derived}
    read: set[str] = set()
    for f in spec.features:
        source = f.source or f.name
        read.update(ratios.get(source, (source,)))
    return tuple(i.name for i in spec.inputs if i.name in read)


# The default spec's rules, under the names the code base used before specs.
RULES: tuple[Rule, ...] = rules_for(DEFAULT_SPEC)
REASONS: tuple[str, ...] = reasons_for(DEFAULT_SPEC)
DEDUP_ORDER: tuple[str, ...] = dedup_order(DEFAULT_SPEC)


def reason_expr(ops: Ops, spec: DatasetSpec = DEFAULT_SPEC) -> Any:
    """Expression: the first rule of the spec a row breaks, or null for a valid row."""
    return ops.first_match([(rule.broken(ops), rule.reason) for rule in rules_for(spec)])


def spark_ops(day: dt.date | Any, lateness_ms: int = DEFAULT_LATENESS_MS) -> Ops:
    """Spark's adapter for one day, or for a Column of each row's day start in ms (a stream
    reads many days at once: etl/stream/job.py)."""
    from pyspark.sql import functions as F

    def first_match(cases: list[tuple[Any, str]]) -> Any:
        expr = F.when(cases[0][0], F.lit(cases[0][1]))
        for cond, reason in cases[1:]:
            expr = expr.when(cond, F.lit(reason))
        return expr  # no otherwise: null when nothing matched

    return Ops(col=F.col, is_null=lambda e: e.isNull(), is_nonfinite=lambda e: F.isnan(e) | (F.abs(e) == float("inf")),
               first_match=first_match, day_start_ms=day_start_ms(day) if isinstance(day, dt.date) else day,
               lateness_ms=lateness_ms)


def polars_ops(day: dt.date, lateness_ms: int = DEFAULT_LATENESS_MS) -> Ops:
    import polars as pl

    def first_match(cases: list[tuple[Any, str]]) -> Any:
        expr = pl.when(cases[0][0]).then(pl.lit(cases[0][1]))
        for cond, reason in cases[1:]:
            expr = expr.when(cond).then(pl.lit(reason))
        return expr.otherwise(pl.lit(None, dtype=pl.String))

    return Ops(col=pl.col, is_null=lambda e: e.is_null(), is_nonfinite=lambda e: e.is_nan() | e.is_infinite(),
               first_match=first_match, day_start_ms=day_start_ms(day), lateness_ms=lateness_ms)
