"""The Great Expectations gate for raw logs and request records.

Suites are derived from the dataset spec of the output (DATA/spec.yaml, dataset/spec_record.py)
and its contracts: the required raw columns, the tasks, the action bits, the feature columns
and the history and target list columns, never from a second list here. GX's length
expectations do not work on Spark array columns, so each suite runs on scalar columns
derived in Spark (list sizes, alignment and sortedness flags, the newest history time)
and, for label rates, on one row per target.

    validate(spark, out, day, "requests")  ->  DATA/validation/ds=D/requests.json (+ Data Docs HTML)
    validate(None, out, day, "requests", engine="pandas")   the same suites without a JVM

A ds is publishable only when its requests validation passed (`require_publishable`);
an operator can override a failure with a reason, which is recorded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import getpass
import json
import os
import tempfile
from dataclasses import dataclass, field
from functools import partial, reduce
from typing import Any, Callable, Iterator

from longseq.dataset.layout import BuildLayout, ds_name, partition_path
from longseq.dataset.parquet_files import read_arrow, read_spark
from longseq.dataset.published import built_spec_summary
from longseq.dataset.raw import check_raw_partitions
from longseq.dataset.spec_record import differences_clause, spec_for, spec_path
from longseq.dataset.storage import LocalStorage, RoutingStorage, Storage, absolute, is_local
from longseq.etl.gates.check_columns import checks_actions, feature_check_name, feature_list_columns, list_columns
from longseq.features.actions import num_actions
from longseq.schemas.contracts import (
    COMPACT_LAYOUT, DAY_MS, DEFAULT_LATENESS_MS, DEFAULT_MAX_LEN, DEFAULT_SPEC, HIST_PREFIX, REQUEST_LAYOUT, SUCCESS_MARKER,
    TGT_PREFIX, contracts_of, day_start_ms,
)
from longseq.schemas.errors import LongseqError, MissingPrerequisiteError
from longseq.schemas.spec import DatasetSpec, Feature, SpecError, resolve_spec

SUITES = ("requests", "raw")
# GX's execution engines: Spark for cluster-sized days, pandas (frames derived with polars,
# etl/gates/local_frames.py) for days that fit a local run, without a JVM.
ENGINES = ("spark", "pandas")
# A task without a configured label-rate band: its rate is reported, never out of band.
ANY_RATE = (0.0, 1.0)


class ValidationFailed(LongseqError):
    """A critical expectation failed, or a ds is not publishable."""


@dataclass
class ValidationConfig:
    """Bands and severities. Checks whose name matches a `warn_only` pattern only warn."""

    max_len: int | None = None  # history length bound; default: the max_len in the day's build report
    raw_mostly: float = 0.99  # raw row rules: a few bad rows are quarantined by the build; more is an incident
    lateness_ms: int = DEFAULT_LATENESS_MS  # how long after its day an impression's outcome may still be logged
    label_rates: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"finish": (0.05, 0.95), "skip": (0.01, 0.9), "like": (0.0, 0.5), "comment": (0.0, 0.3)}
    )
    targets_per_request: tuple[float, float] = (1.0, 64.0)  # band of the mean
    history_length_median: tuple[float, float] | None = None  # default: (0, max_len)
    warn_only: tuple[str, ...] = ("label_rate_*", "targets_per_request_mean", "history_length_median")
    critical_only: tuple[str, ...] = ()  # names or globs made critical even if warn_only matches

    @classmethod
    def from_file(cls, path: str, **overrides: Any) -> "ValidationConfig":
        """YAML/JSON with any of the fields above, e.g. `label_rates: {like: [0.01, 0.2]}`."""
        from longseq.schemas.settings_file import load_settings

        data = load_settings(cls, path, "validation config")  # each value of its field's type, or one line
        rates = data.pop("label_rates", None) or {}
        try:
            cfg = cls(**{**data, **overrides})
        except (TypeError, ValueError) as e:
            raise LongseqError(f"{path}: {e} (label_rates maps a task to [low, high])") from None
        cfg.label_rates = {**cls().label_rates, **rates}
        cfg.warn_only, cfg.critical_only = tuple(cfg.warn_only), tuple(cfg.critical_only)
        return cfg

    def critical(self, check: str) -> bool:
        if any(fnmatch.fnmatch(check, pattern) for pattern in self.critical_only):
            return True
        return not any(fnmatch.fnmatch(check, pattern) for pattern in self.warn_only)


@dataclass(frozen=True)
class Check:
    name: str
    frame: str  # which derived frame it runs on: "records", "targets" or "raw"
    expectation: Any  # a great_expectations Expectation


# ---------------------------------------------------------------- derived frames (Spark)


def _all(conditions: list[Any]) -> Any:
    return reduce(lambda a, b: a & b, conditions)


def _feature_ok(column: str, feature: Feature) -> Any:
    """True when every value of the list is valid (a null element is not)."""
    from pyspark.sql import functions as F

    if feature.kind == "categorical":
        return F.forall(column, lambda x: x.isNotNull() & (x >= 0))
    return F.forall(column, lambda x: x.isNotNull() & ~F.isnan(x) & (F.abs(x) < float("inf")))


def request_frames(records: Any, spec: DatasetSpec = DEFAULT_SPEC) -> dict[str, Any]:
    """Scalar columns GX can check, derived from request records, plus one row per target."""
    from pyspark.sql import functions as F

    hist_columns, tgt_columns = list_columns(spec, HIST_PREFIX), list_columns(spec, TGT_PREFIX)

    def aligned(columns: list[str]) -> Any:
        return _all([F.size(c) == F.size(columns[0]) for c in columns[1:]])

    frame = records.select(
        "request_id",
        F.size(hist_columns[0]).alias("hist_len"),
        F.size(tgt_columns[0]).alias("n_targets"),
        aligned(hist_columns).alias("hist_aligned"),
        aligned(tgt_columns).alias("tgt_aligned"),
        # no event logged at or after the request; an empty history leaks nothing
        F.coalesce(F.array_max("hist_event_ts") < F.col("request_ts"), F.lit(True)).alias("leak_free"),
        (F.col("hist_event_ts") == F.array_sort("hist_event_ts")).alias("hist_sorted"),
        *[check.alias(name) for name, check in _value_checks(spec).items()],
    )
    return {"records": frame, "targets": _targets(records, spec)}


def _value_checks(spec: DatasetSpec) -> dict[str, Any]:
    """name -> whether every value of a row's lists is valid: the action flags (but for the
    default spec: checks_actions), then each side feature's values."""
    from pyspark.sql import functions as F

    checks = {feature_check_name(column, f): _feature_ok(column, f) for column, f in feature_list_columns(spec)}
    if checks_actions(spec):
        actions = num_actions(spec.tasks)
        checks = {"actions_in_range": F.forall("hist_action", lambda a: a.isNotNull() & (a >= 0) & (a < actions)),
                  **checks}
    return checks


def _targets(rows: Any, spec: DatasetSpec) -> Any:
    """One row per target of the rows' tgt_* label lists, a column per task."""
    from pyspark.sql import functions as F

    labels = [F.col(f"{TGT_PREFIX}{t}") for t in spec.tasks]
    return rows.select(F.explode(F.arrays_zip(*labels)).alias("t")).select(
        *[F.col("t")[f"{TGT_PREFIX}{t}"].cast("int").alias(t) for t in spec.tasks]
    )


def user_day_frames(user_days: Any, spec: DatasetSpec = DEFAULT_SPEC) -> dict[str, Any]:
    """The frames of `request_frames`, derived from compact rows (contract user_day) without
    materialising a window: per request the same columns, a window's last event standing for
    its newest (the sequence is checked sorted), the sequence's checks standing for every
    window's; plus one row per user-day with the checks of the layout itself."""
    from pyspark.sql import functions as F

    hist_columns, tgt_columns = list_columns(spec, HIST_PREFIX), list_columns(spec, TGT_PREFIX)
    request_columns = ["request_id", "request_ts", "hist_end", "hist_len", "tgt_count"]
    sizes = [F.size(c) for c in hist_columns]
    seq_aligned = _all([n == sizes[0] for n in sizes[1:]])
    seq_sorted = F.col("hist_event_ts") == F.array_sort("hist_event_ts")
    days = user_days.select(
        "*",
        seq_aligned.alias("hist_aligned"),
        seq_sorted.alias("hist_sorted"),
        _all([F.size(c) == F.size("request_id") for c in request_columns[1:]]).alias("request_lists_aligned"),
        _all([F.size(c) == F.aggregate("tgt_count", F.lit(0), lambda a, n: a + n) for c in tgt_columns])
        .alias("tgt_aligned"),
        # requests in (request_ts, request_id) order, windows ending no earlier than the one before
        F.forall(F.sequence(F.lit(1), F.greatest(F.size("request_id") - 1, F.lit(1))), lambda i: (
            F.size("request_id") < 2) | ((F.element_at("hist_end", i) <= F.element_at("hist_end", i + 1)) & (
                F.element_at("request_ts", i) <= F.element_at("request_ts", i + 1)))).alias("window_ends_ordered"),
        F.forall(F.arrays_zip("hist_end", "hist_len"), lambda w: (w["hist_len"] >= 0) & (w["hist_end"] - w["hist_len"] >= 0)
                 & (w["hist_end"] <= F.size("hist_event_ts"))).alias("windows_within_sequence"),
        # the newest event of each window (the last: the sequence is sorted) before its request
        F.transform(F.arrays_zip("request_ts", "hist_end", "hist_len"), lambda w: (w["hist_len"] == 0) | (
            F.element_at("hist_event_ts", F.greatest(w["hist_end"], F.lit(1))) < w["request_ts"])).alias("_leak_free"),
    )
    value_checks = _value_checks(spec)  # on the sequence: every window's values
    records = days.select(
        "hist_aligned", "tgt_aligned", "hist_sorted", *[check.alias(name) for name, check in value_checks.items()],
        F.inline(F.arrays_zip("request_id", "hist_len", "tgt_count", "_leak_free")),
    ).select(
        "request_id", "hist_len", F.col("tgt_count").alias("n_targets"), "hist_aligned", "tgt_aligned",
        F.col("_leak_free").alias("leak_free"), "hist_sorted", *value_checks,
    )
    layout = days.select("user_id", "request_lists_aligned", "window_ends_ordered", "windows_within_sequence")
    return {"records": records, "targets": _targets(user_days, spec), "user_days": layout}


def records_frames(data: Any, spec: DatasetSpec, layout: str) -> dict[str, Any]:
    """The frames the request suite checks, of records in either layout."""
    return user_day_frames(data, spec) if layout == COMPACT_LAYOUT else request_frames(data, spec)


def raw_frame(raw: Any) -> Any:
    from pyspark.sql import functions as F

    return raw.withColumn("event_not_before_request", F.col("event_ts") >= F.col("request_ts"))


# ---------------------------------------------------------------- suites


def label_bands(cfg: ValidationConfig, spec: DatasetSpec) -> dict[str, tuple[float, float]]:
    """The label-rate band of each of the spec's tasks. A configured band of a task that is
    neither the spec's nor the default config's (which bands the default tasks) is a typo."""
    unknown = set(cfg.label_rates) - set(spec.tasks) - set(ValidationConfig().label_rates)
    if unknown:
        raise LongseqError(f"validation config: label_rates names {', '.join(sorted(unknown))}, not a task of dataset "
                           f"spec {spec.name!r} (its tasks: {', '.join(spec.tasks)})")
    return {task: cfg.label_rates.get(task, ANY_RATE) for task in spec.tasks}


USER_DAY_CHECKS = ("request_lists_aligned", "window_ends_ordered", "windows_within_sequence")


def request_checks(cfg: ValidationConfig, spec: DatasetSpec = DEFAULT_SPEC, layout: str = REQUEST_LAYOUT) -> list[Check]:
    import great_expectations.expectations as gxe

    in_set = lambda column: gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[True])  # noqa: E731
    max_len = cfg.max_len or DEFAULT_MAX_LEN
    median_band = cfg.history_length_median or (0.0, float(max_len))
    checks = [
        Check("request_id_unique", "records", gxe.ExpectColumnValuesToBeUnique(column="request_id")),
        Check("history_within_max_len", "records",
              gxe.ExpectColumnValuesToBeBetween(column="hist_len", min_value=0, max_value=max_len)),
        Check("history_lists_aligned", "records", in_set("hist_aligned")),
        Check("target_lists_aligned", "records", in_set("tgt_aligned")),
        Check("has_targets", "records", gxe.ExpectColumnValuesToBeBetween(column="n_targets", min_value=1)),
        Check("no_leakage", "records", in_set("leak_free")),
        Check("history_sorted", "records", in_set("hist_sorted")),
        Check("targets_per_request_mean", "records", gxe.ExpectColumnMeanToBeBetween(
            column="n_targets", min_value=cfg.targets_per_request[0], max_value=cfg.targets_per_request[1])),
        Check("history_length_median", "records", gxe.ExpectColumnMedianToBeBetween(
            column="hist_len", min_value=median_band[0], max_value=median_band[1])),
    ]
    if checks_actions(spec):
        checks.append(Check("history_actions_in_range", "records", in_set("actions_in_range")))
    if layout == COMPACT_LAYOUT:  # the layout's own: each check names a way a writer can get it wrong
        checks += [Check(name, "user_days", in_set(name)) for name in USER_DAY_CHECKS]
    for column, feature in feature_list_columns(spec):
        name = feature_check_name(column, feature)
        checks.append(Check(name, "records", in_set(name)))
    for task, (lo, hi) in label_bands(cfg, spec).items():
        checks.append(Check(f"labels_binary_{task}", "targets",
                            gxe.ExpectColumnValuesToBeInSet(column=task, value_set=[0, 1])))
        checks.append(Check(f"label_rate_{task}", "targets",
                            gxe.ExpectColumnMeanToBeBetween(column=task, min_value=lo, max_value=hi)))
    return checks


def raw_checks(cfg: ValidationConfig, day: dt.date, spec: DatasetSpec = DEFAULT_SPEC) -> list[Check]:
    import great_expectations.expectations as gxe

    mostly = cfg.raw_mostly
    start = day_start_ms(day)
    checks = [
        Check(f"required_{c}", "raw", gxe.ExpectColumnValuesToNotBeNull(column=c, mostly=mostly))
        for c in contracts_of(spec).raw_log.required_names
    ]
    checks += [
        Check(f"label_binary_{t}", "raw", gxe.ExpectColumnValuesToBeInSet(column=t, value_set=[0, 1], mostly=mostly))
        for t in spec.tasks
    ]
    checks += [
        Check(f"positive_{c}", "raw", gxe.ExpectColumnValuesToBeBetween(column=c, min_value=1, mostly=mostly))
        for c in ("user_id", "item_id", "author_id")
    ]
    checks += [
        Check("event_not_before_request", "raw", gxe.ExpectColumnValuesToBeInSet(
            column="event_not_before_request", value_set=[True], mostly=mostly)),
        Check("request_ts_in_day", "raw", gxe.ExpectColumnValuesToBeBetween(
            column="request_ts", min_value=start, max_value=start + DAY_MS - 1, mostly=mostly)),
        Check("event_ts_within_lateness", "raw", gxe.ExpectColumnValuesToBeBetween(
            column="event_ts", min_value=start, max_value=start + DAY_MS + cfg.lateness_ms, mostly=mostly)),
    ]
    return checks


# ---------------------------------------------------------------- running


def validation_dir(out: str, day: dt.date) -> str:
    return f"{out.rstrip('/')}/validation/{ds_name(day)}"


def _observed(result: dict) -> str:
    r = result.get("result", {}) or {}
    if "observed_value" in r:
        value = r["observed_value"]
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    if "unexpected_count" in r:
        unexpected, rows = r["unexpected_count"], r.get("element_count")
        if unexpected is None or not rows:  # GX on Spark reports no counts on a frame without rows, on pandas 0 of 0
            return "no rows"
        return f"{unexpected:,} of {rows:,} unexpected"
    return ""


def run_checks(frames: dict[str, Any], checks: list[Check], cfg: ValidationConfig, suite: str, docs_dir: str,
               engine: str = "spark") -> dict:
    """Run the checks with GX (one suite per frame, on Spark or pandas DataFrames as `engine`
    says), write Data Docs; return the outcome."""
    from longseq.etl.gates.gx_runner import gx_runner

    runner = gx_runner(engine, suite)
    rows, raw_results = [], []
    for frame_name, frame in frames.items():
        mine = [c for c in checks if c.frame == frame_name]
        if not mine:
            continue
        for check in mine:
            check.expectation.meta = {**(check.expectation.meta or {}), "check": check.name}
        result = runner.validate(frame_name, mine, frame)
        by_name = {r.expectation_config.meta["check"]: r for r in result.results}  # GX reorders results
        for check in mine:
            r = by_name[check.name]
            rd = r.to_json_dict()
            rows.append({
                "check": check.name, "frame": frame_name, "critical": cfg.critical(check.name),
                "success": bool(r.success), "observed": _observed(rd),
            })
            raw_results.append({"check": check.name, **rd})
    runner.write_docs(docs_dir)  # once for all frames
    passed = all(row["success"] for row in rows if row["critical"])
    return {"suite": suite, "passed": passed, "checks": rows, "gx_results": raw_results}


def load_request_frames(spark: Any, storage: Storage, out: str, day: dt.date, cfg: ValidationConfig,
                        sample: float | None, spec: DatasetSpec = DEFAULT_SPEC, engine: str = "spark",
                        ) -> tuple[dict[str, Any], list[Check], str | None]:
    """The derived frames and checks of a built day's request records (of DATA's spec), and
    the build they came from. The history bound is the one the day was built with, unless
    cfg sets one."""
    layout = BuildLayout(out.rstrip("/"))
    path = layout.dir("requests", day)
    if not storage.exists(layout.report(day)) or not storage.exists(f"{path}/{SUCCESS_MARKER}"):
        raise MissingPrerequisiteError(f"no built request records at {path}: run `longseq build` for {day} first")
    report = json.loads(storage.read_text(layout.report(day)))
    check_built_spec(report, spec, day, out, "validate")
    if cfg.max_len is None:
        cfg = dataclasses.replace(cfg, max_len=report.get("max_len"))
    records = report.get("layout", REQUEST_LAYOUT)
    if engine == "pandas":
        import pyarrow.dataset as pads

        from longseq.etl.gates import local_frames

        table = pads.dataset(path, format="parquet").to_table()  # skips _SUCCESS and other hidden files
        if sample:  # compact: a sample of user-days, each with all its requests
            table = local_frames.sample(table, sample)
        frames = local_frames.records_frames(table, spec, records)
    else:
        data = spark.read.parquet(path)
        if sample:
            data = data.sample(fraction=sample, seed=0)
        frames = records_frames(data, spec, records)
    return frames, request_checks(cfg, spec, records), layout.build_digest(storage, day)


def load_raw_frames(spark: Any, storage: Storage, raw: str | None, day: dt.date, cfg: ValidationConfig,
                    sample: float | None, spec: DatasetSpec = DEFAULT_SPEC,
                    engine: str = "spark") -> tuple[dict[str, Any], list[Check], None]:
    """The derived frame and checks of a raw partition of the spec's raw-log contract."""
    if raw is None:
        raise LongseqError("--suite raw needs --raw DIR")
    check_raw_partitions(storage, raw.rstrip("/"), [day])
    contract = contracts_of(spec).raw_log
    # read as the build reads it: the same checks of the files, the same error
    if engine == "pandas":
        from longseq.etl.gates import local_frames

        table = read_arrow(partition_path(raw, day), contract, names=spec.raw_names)
        frame = local_frames.raw_frame(local_frames.sample(table, sample) if sample else table)
    else:
        data = read_spark(spark, storage, partition_path(raw, day), contract, spec.raw_names)
        frame = raw_frame(data.sample(fraction=sample, seed=0) if sample else data)
    return {"raw": frame}, raw_checks(cfg, day, spec), None


def suite_spec(storage: Storage, out: str, suite: str, spec: DatasetSpec | str | None = None) -> DatasetSpec:
    """The spec a suite checks: DATA's (checked against `spec` when one is given). Raw logs
    are validated before DATA may exist: there a given spec stands until DATA records one."""
    if suite == "raw" and spec is not None and not storage.exists(spec_path(out)):
        return resolve_spec(spec)
    return spec_for(storage, out, spec)


def check_built_spec(report: dict, spec: DatasetSpec, day: dt.date, out: str, action: str) -> None:
    """SpecError unless the day's build report names DATA's spec (a report without one was
    built with the default spec): its records have another spec's columns."""
    built = built_spec_summary(report)
    if built["fingerprint"] != spec.fingerprint:
        raise SpecError(
            f"refusing to {action} ds={day}: it was built with dataset spec {built['name']!r} "
            f"({built['fingerprint']}), but {out} holds spec {spec.name!r} ({spec.fingerprint})"
            f"{differences_clause(built, spec)}: rebuild the day with that spec")


def validate(
    spark: Any,
    out: str,
    day: dt.date,
    suite: str = "requests",
    raw: str | None = None,
    cfg: ValidationConfig | None = None,
    sample: float | None = None,
    storage: Storage | None = None,
    spec: DatasetSpec | str | None = None,
    engine: str = "spark",
) -> dict:
    """Validate one ds, write DATA/validation/ds=D/<suite>.json and Data Docs; return the outcome.

    The suites follow DATA's dataset spec; `spec` (an object or its file), when given, must
    agree with it, or names the spec of raw logs validated before DATA records one. With
    engine "pandas", `spark` is not used (None will do) and the data must be local."""
    cfg = cfg or ValidationConfig()
    out, raw = absolute(out), absolute(raw) if raw else None
    check_engine(engine, [out, *([raw] if raw else [])])
    storage = storage or (LocalStorage() if engine == "pandas" else RoutingStorage(spark))
    if suite not in SUITES:
        raise LongseqError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    if sample is not None and not 0 < sample <= 1:
        raise LongseqError(f"--sample must be a fraction in (0, 1], got {sample}")
    spec = suite_spec(storage, out, suite, spec)
    if suite == "raw" and raw and _declared_empty(storage, out, raw, day):
        raise MissingPrerequisiteError(
            f"ds={day} has no raw partition in {raw}: its build declared the day empty (--empty-days), so there are no "
            f"raw logs to validate; its requests suite validates the day")
    if suite == "requests":
        frames, checks, build_digest = load_request_frames(spark, storage, out, day, cfg, sample, spec, engine)
    else:
        frames, checks, build_digest = load_raw_frames(spark, storage, raw, day, cfg, sample, spec, engine)
    if engine == "spark":
        frames = {name: frame.cache() for name, frame in frames.items()}
    target = validation_dir(out, day)
    # GX writes Data Docs with local file I/O and wants an absolute path; for a cluster
    # path (hdfs://, s3a://) they go to a local temp dir, named in the outcome
    docs = os.path.abspath(f"{target}/docs") if is_local(target) else tempfile.mkdtemp(prefix=f"longseq-docs-{day}-")
    try:
        outcome = run_checks(frames, checks, cfg, suite, docs, engine)
    finally:
        if engine == "spark":
            for frame in frames.values():
                frame.unpersist()
    outcome.update(ds=day.isoformat(), sample=sample, docs=f"{docs}/index.html", build_digest=build_digest)
    storage.write_text(f"{target}/{suite}.json", json.dumps(outcome, indent=2, sort_keys=True, default=str))
    return outcome


def check_engine(engine: str, paths: list[str]) -> None:
    """LongseqError unless `engine` is one of ENGINES and, for pandas, every path is local."""
    if engine not in ENGINES:
        raise LongseqError(f"unknown validation engine {engine!r}; choose one of {', '.join(ENGINES)}")
    remote = [p for p in paths if not is_local(p)]
    if engine == "pandas" and remote:
        raise LongseqError(f"the pandas engine validates local data only, not {remote[0]}: use --engine spark")


def _declared_empty(storage: Storage, out: str, raw: str, day: dt.date) -> bool:
    """Whether the day has no raw partition because its build was told so (--empty-days)."""
    report = BuildLayout(out.rstrip("/")).report(day)
    if storage.exists(partition_path(raw, day)) or not storage.exists(report):
        return False
    return bool(json.loads(storage.read_text(report)).get("declared_empty"))


def outcome_rows(outcome: dict) -> list[tuple]:
    """What an outcome says, check by check: what the two engines agree on."""
    return [(r["check"], r["frame"], r["critical"], r["success"], r["observed"]) for r in outcome["checks"]]


def summary_table(outcome: dict) -> str:
    width = max(len(row["check"]) for row in outcome["checks"])
    lines = [f"{'expectation':<{width}}  {'result':<6}  observed"]
    for row in outcome["checks"]:
        status = "pass" if row["success"] else ("FAIL" if row["critical"] else "warn")
        lines.append(f"{row['check']:<{width}}  {status:<6}  {row['observed']}")
    verdict = "PASSED" if outcome["passed"] else "FAILED (critical expectations failed)"
    lines.append(f"{outcome['suite']} suite for ds={outcome['ds']}: {verdict}; Data Docs: {outcome['docs']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the gate


def require_publishable(out: str, day: dt.date, override_reason: str | None = None,
                        storage: Storage | None = None) -> None:
    """Raise ValidationFailed unless ds=day's requests validation passed, on the records
    the day holds now (a rebuild after validating needs a new validation).

    With an override reason, a failed or missing validation is let through and the
    reason, who and when are recorded in DATA/validation/ds=D/override.json. A stale day
    (built on the old state of a day rebuilt since) is refused even then.
    """
    storage = storage or LocalStorage()
    stale = BuildLayout(out.rstrip("/")).stale_problem(storage, day)
    if stale:  # its records are wrong whatever validation says: no override
        raise ValidationFailed(f"refusing to publish: {stale}")
    path = f"{validation_dir(out, day)}/requests.json"
    problem = None
    if not storage.exists(path):
        problem = _unvalidated(storage, out, day)
    else:
        outcome = json.loads(storage.read_text(path))
        if not outcome["passed"]:
            failed = [r["check"] for r in outcome["checks"] if r["critical"] and not r["success"]]
            problem = f"ds={day} failed validation ({', '.join(failed)}); see {outcome['docs']}"
        elif outcome.get("build_digest") != BuildLayout(out.rstrip("/")).build_digest(storage, day):
            problem = f"ds={day} was rebuilt after it was validated: run `longseq validate --data {out} --start {day}` again"
    if problem is None:
        return
    if not override_reason or not override_reason.strip():
        raise ValidationFailed(f"refusing to publish: {problem}. An operator may override with a reason.")
    storage.write_text(f"{validation_dir(out, day)}/override.json", json.dumps({
        "ds": day.isoformat(), "reason": override_reason.strip(), "problem": problem,
        "by": getpass.getuser(), "at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }, indent=2))


def _unvalidated(storage: Storage, out: str, day: dt.date) -> str:
    """Why a day without a requests validation is not publishable, saying what its raw
    validation (`--suite raw`, which does not make a day publishable) found, if it ran."""
    run = f"run `longseq validate --data {out} --start {day}` (the requests suite)"
    raw = f"{validation_dir(out, day)}/raw.json"
    if not storage.exists(raw):
        return f"ds={day} has not been validated: {run} first"
    outcome = json.loads(storage.read_text(raw))
    if outcome["passed"]:
        return f"ds={day}'s records have not been validated (its raw logs passed the raw suite): {run} first"
    failed = [r["check"] for r in outcome["checks"] if r["critical"] and not r["success"]]
    return (f"ds={day}'s raw logs failed the raw suite ({', '.join(failed)}; see {outcome['docs']}) and its records "
            f"have not been validated: fix the logs and rebuild the day, or {run}")


def refuse_stale_days(storage: Storage, data: str, days: list[dt.date]) -> None:
    """A stale day's records were built on an old state: validating them would pass on wrong histories."""
    layout = BuildLayout(data.rstrip("/"))
    problems = [p for p in (layout.stale_problem(storage, day) for day in days) if p]
    if problems:
        more = f" (and {len(problems) - 1} more stale day(s))" if len(problems) > 1 else ""
        raise MissingPrerequisiteError(f"refusing to validate: {problems[0]}{more}")


def validate_days(start_spark: Callable[[], Any] | None, data: str, days: list[dt.date], suite: str = "requests", *,
                  raw: str | None = None, cfg: ValidationConfig | None = None, sample: float | None = None,
                  spec: DatasetSpec | None = None, show: Callable[[str], None] = print,
                  describe: Callable[[dict], str] = summary_table, engine: str = "spark", jobs: int = 1) -> list[dict]:
    """Validate each day with `suite`, showing `describe(outcome)` of each; returns the outcomes,
    in day order. The requests suite refuses stale days first: before Spark starts
    (start_spark is called once, by the spark engine only) where the output is local. The
    pandas engine validates the days in `jobs` processes (Spark spreads each day itself)."""
    root = absolute(data)
    check_engine(engine, [root, *([absolute(raw)] if raw else [])])
    if jobs > 1 and engine != "pandas":
        raise LongseqError("--jobs applies to --engine pandas only: Spark spreads each day over its executors")
    if suite == "requests" and is_local(root):
        refuse_stale_days(LocalStorage(), root, days)
    spark = start_spark() if engine == "spark" else None
    if suite == "requests" and not is_local(root):
        refuse_stale_days(RoutingStorage(spark), root, days)
    one_day = partial(validate, spark, data, suite=suite, raw=raw, cfg=cfg, sample=sample, spec=spec, engine=engine)
    outcomes = []
    for outcome in _each_day(one_day, days, min(jobs, len(days))):
        outcomes.append(outcome)
        show(describe(outcome))
    return outcomes


def _each_day(one_day: Callable[[dt.date], dict], days: list[dt.date], jobs: int) -> Iterator[dict]:
    """one_day of each day, in day order: here, or in `jobs` fresh processes (spawned: a fork
    would copy the thread pools polars and GX have started)."""
    if jobs <= 1:
        yield from map(one_day, days)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(one_day, days)


def require_passed(days: list[dt.date], outcomes: list[dict]) -> None:
    """ValidationFailed naming each day whose critical checks failed, and the checks."""
    failed = [f"ds={day} ({', '.join(r['check'] for r in o['checks'] if r['critical'] and not r['success'])})"
              for day, o in zip(days, outcomes) if not o["passed"]]
    if failed:
        raise ValidationFailed(f"critical expectations failed: {'; '.join(failed)}")
