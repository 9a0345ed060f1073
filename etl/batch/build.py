"""`longseq build`: raw logs -> request records, one day at a time, from the history state.

The build of day D reads D's raw partition and the user state after D-1, and writes D's
request records, quarantine and the state after D (dataset/layout.py has the layout, etl/batch/commit.py
the commit protocol). A range is built day by day, so its cost per day does not grow with
the number of days built. The engines (Spark, polars) implement `Engine.build_day`; this
module checks prerequisites, commits atomically and writes the report.

Everything a build reads and writes derives from its dataset spec (BuildConfig.spec,
schemas/spec.py): the raw partitions are checked against the spec's raw-log contract, and
the output records its spec in DATA/spec.yaml (dataset/spec_record.py), so that a later
build with another spec is refused rather than mixing two record layouts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from longseq.dataset.layout import KINDS, BuildLayout, day_range, partition_path
from longseq.dataset.output_lock import output_lock
from longseq.dataset.parquet_files import check_parquet_files
from longseq.dataset.raw import check_raw_partitions
from longseq.dataset.spec_record import (
    check_output_spec, record_spec, recorded_spec, spec_summary, spec_warnings,
)
from longseq.dataset.storage import Storage, absolute, checksums
from longseq.etl.batch.commit import commit_day, mark_later_days_stale, new_token, part_checksums, remove_leftover_temps, unpublish_stale_days
from longseq.schemas.contracts import (
    DEFAULT_LATENESS_MS, DEFAULT_LAYOUT, DEFAULT_MAX_LEN, DEFAULT_SPEC, LAYOUTS, REQUEST_LAYOUT, contracts_of,
)
from longseq.schemas.durations import format_duration
from longseq.schemas.errors import LongseqError, MissingPrerequisiteError
from longseq.schemas.spec import DatasetSpec


class AccountingError(LongseqError):
    """Rows read != targets + quarantined + duplicates: a bug, so nothing is committed."""


class StateChecksumError(LongseqError):
    """The state a build would continue from is not the one its day's build wrote."""


@dataclass
class DayCounts:
    """What an engine reports about one day; the build adds bytes and seconds.

    Counted independently, so that the balance can fail: rows read and duplicates from the
    input (valid rows - distinct valid event_ids, plus those the state had seen), targets,
    requests and quarantined rows from the files written.
    """

    rows_read: int
    duplicates: int  # within the day and across days
    duplicates_across_days: int  # of them: event_ids kept on an earlier day within the lateness bound
    quarantined: dict[str, int]  # reason -> rows
    requests: int
    targets: int
    requests_without_valid_impressions: int
    users_in_state: int
    history_length: dict[str, float]  # p50, p90, p99, max, mean over the day's records

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    def check_balance(self) -> None:
        if self.rows_read != self.targets + self.quarantined_total + self.duplicates:
            raise AccountingError(
                f"rows read {self.rows_read:,} != targets {self.targets:,} + quarantined "
                f"{self.quarantined_total:,} + duplicates {self.duplicates:,}"
            )


class Engine(Protocol):
    name: str
    storage: Storage

    def build_day(
        self, raw_partition: str | None, prev_state: str | None, day: dt.date, max_len: int, temps: dict[str, str],
        lateness_ms: int = DEFAULT_LATENESS_MS, spec: DatasetSpec = DEFAULT_SPEC, layout: str = DEFAULT_LAYOUT,
    ) -> DayCounts:
        """Write the day's requests (in `layout`: contract request_record or user_day),
        quarantine and state of the spec's contracts into temps[kind] (each with _SUCCESS).
        raw_partition None: a day declared empty (no rows)."""
        ...


@dataclass
class BuildConfig:
    raw: str
    out: str
    start: dt.date
    end: dt.date | None = None
    max_len: int = DEFAULT_MAX_LEN
    lateness_ms: int = DEFAULT_LATENESS_MS  # later outcomes are quarantined; dedup across days this far
    catch_up: bool = False  # build the missing days before `start` first
    # what the raw logs hold and the records carry (schemas/spec.py); None: the one the output
    # records (DATA/spec.yaml), else the default
    spec: DatasetSpec | None = None
    # days without logs and without a raw partition, declared so (--empty-days): built with no rows
    empty_days: tuple[dt.date, ...] = ()
    # how DATA/requests/ holds the records: one row per request, or per user-day (schemas/contracts.py);
    # None: the layout of the last day built before `start` (a chain keeps its layout), else the default
    layout: str | None = None

    def days(self) -> list[dt.date]:
        return day_range(self.start, self.end)


def plan_days(storage: Storage, layout: BuildLayout, config: BuildConfig, log: Callable[[str], None]) -> list[dt.date]:
    """The days to build, after checking that the state chain reaches the first one: the day
    before must be built and current (a stale day's state is that of an older chain).
    With --catch-up, the missing or stale days since the last current day come first."""
    days = config.days()
    prev = days[0] - dt.timedelta(days=1)
    if layout.is_current(storage, prev):
        return days
    earlier = [d for d in layout.built_days(storage) if d < days[0]]
    if not earlier:
        log(f"no state before {days[0]}: starting from empty histories (a cold start)")
        return days
    current = [d for d in earlier if layout.is_current(storage, d)]
    if not current:  # a cold start here would silently drop the histories of the stale days
        rebuilt = (layout.stale_info(storage, earlier[0]) or {}).get("rebuilt_day", earlier[0])
        raise MissingPrerequisiteError(
            f"every day built before {days[0]} ({earlier[0]}..{earlier[-1]}) is stale and the day it was built "
            f"on is not built: rebuild from {rebuilt} (--start {rebuilt} --end {prev})"
        )
    last = current[-1]
    todo = [last + dt.timedelta(days=i) for i in range(1, (days[0] - last).days)]
    stale = [d for d in todo if layout.stale_info(storage, d) is not None]
    if config.catch_up:
        what = f"missing or stale day(s) {todo[0]}..{todo[-1]} first ({len(stale)} stale)" if stale else \
            f"missing day(s) {todo[0]}..{todo[-1]} first"
        log(f"--catch-up: building {len(todo)} {what}")
        return todo + days
    if prev in stale:
        rebuilt = layout.stale_info(storage, prev)["rebuilt_day"]
        raise MissingPrerequisiteError(
            f"the history state after {prev} is stale: it was built on the state of {rebuilt} before that day "
            f"was rebuilt; rebuild {todo[0]}..{prev} first, or pass --catch-up"
        )
    raise MissingPrerequisiteError(
        f"the history state after {prev} is missing (the last day built before {days[0]} is {last}): "
        f"build {last + dt.timedelta(days=1)}..{prev} first, or pass --catch-up"
    )


def chain_layout(storage: Storage, layout: BuildLayout, before: dt.date) -> str:
    """The layout of the last day built before `before` (days built before there were
    layouts hold request records), else the default: a chain goes on as it was built."""
    earlier = [d for d in layout.built_days(storage) if d < before]
    if not earlier:
        return DEFAULT_LAYOUT
    return json.loads(storage.read_text(layout.report(earlier[-1]))).get("layout", REQUEST_LAYOUT)


def check_state_fits(storage: Storage, layout: BuildLayout, prev: dt.date, config: BuildConfig) -> None:
    """The state after prev keeps only that build's max_len events and its lateness window of
    event_ids: a longer max_len or lateness now would silently give shorter histories, or
    miss duplicates, compared with one build over all days."""
    if not storage.exists(layout.report(prev)):
        return
    report = json.loads(storage.read_text(layout.report(prev)))
    fresh = "Rebuild from the first day into a new --data directory"
    if "lateness_ms" not in report:
        raise LongseqError(f"{prev} was built by an older longseq, whose state has no deduplication window. {fresh}")
    if report.get("max_len", config.max_len) < config.max_len:
        raise LongseqError(f"{prev} was built with --max-len {report['max_len']}; its state cannot give histories "
                           f"of {config.max_len}. {fresh} with --max-len {config.max_len}")
    if report["lateness_ms"] < config.lateness_ms:
        raise LongseqError(f"{prev} was built with --lateness {format_duration(report['lateness_ms'])}; its state "
                           f"cannot deduplicate over {format_duration(config.lateness_ms)}. {fresh}, or keep "
                           f"--lateness {format_duration(report['lateness_ms'])}")


def check_state_checksums(storage: Storage, layout: BuildLayout, prev: dt.date, last: dt.date) -> None:
    """The state after prev is the one its build wrote: the same part files, each with the
    SHA-256 its report recorded (as publishing checks the records). A report from before
    checksums has none to check against. `last`: the last day of the build, for the fix."""
    built = json.loads(storage.read_text(layout.report(prev))).get("checksums", {}).get("state")
    if built is None:
        return
    state = layout.dir("state", prev)
    names = [n for n in storage.list_names(state) if n.endswith(".parquet")]
    fix = f"rebuild that day from its raw logs first: longseq build --raw RAW --data {layout.out} --start {prev} --end {last}"
    if sorted(names) != sorted(built):
        raise StateChecksumError(f"the state after {prev} in {state} is not the one its build wrote (files "
                                 f"{', '.join(sorted(names)) or 'none'}; built {', '.join(sorted(built))}); {fix}")
    for name, actual in checksums(storage, state, names).items():
        if actual != built[name]:
            raise StateChecksumError(f"{state}/{name} does not match the build report of {prev} (sha256 "
                                     f"{actual[:12]}..., built {built[name][:12]}...): the state changed after "
                                     f"it was built; {fix}")


def _span(days: list[dt.date]) -> str:
    return f"{days[0]}" if len(days) == 1 else f"{days[0]}..{days[-1]}"


def _quarantined(counts: dict[str, int]) -> str:
    """"quarantined N (reason n, ...)", or "quarantined 0" with no list after it."""
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()) if v)
    return f"quarantined {sum(counts.values()):,}" + (f" ({reasons})" if reasons else "")


def _summary(day: dt.date, report: dict) -> str:
    h = report["history_length"]
    return (
        f"ds={day}: {'declared empty (--empty-days): ' if report.get('declared_empty') else ''}"
        f"{report['rows_read']:,} rows -> {report['requests']:,} requests, {report['targets']:,} targets; "
        f"{_quarantined(report['quarantined'])}; duplicates {report['duplicates']:,}; "
        f"history p50 {h.get('p50', 0):,.0f} p99 {h.get('p99', 0):,.0f} max {h.get('max', 0):,.0f}; "
        f"{sum(report['bytes_written'].values()) / 2**20:,.1f} MB in {report['seconds']:.1f} s"
    )


def build(engine: Engine, config: BuildConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Build every day of the config in order, holding the output's lock; return the reports.

    Re-entrant: a caller that already holds the lock (dataset/output_lock.py) may call it.
    """
    with output_lock(absolute(config.out), "build", log=log) as locked:
        return _build_locked(engine, config, log, locked)


def _clean_up(storage: Storage, layout: BuildLayout, locked: bool, log: Callable[[str], None]) -> None:
    """Remove what killed runs left: temp dirs (only under the lock: without it they may be a
    running build's) and the manifests of stale days (a crash while marking them)."""
    if locked:
        removed = remove_leftover_temps(storage, layout)
        if removed:
            log(f"removed {len(removed)} temp dir(s) left by interrupted builds: {', '.join(removed)}")
    elif found := layout.leftover_temps(storage):
        log(f"note: {len(found)} temp dir(s) of other or interrupted builds in {layout.out}, left alone "
            f"as it cannot be locked; remove them when no build runs")
    for day in unpublish_stale_days(storage, layout):
        log(f"unpublished ds={day}: it is stale")


def _build_locked(engine: Engine, config: BuildConfig, log: Callable[[str], None], locked: bool) -> list[dict]:
    storage = engine.storage
    config = dataclasses.replace(config, raw=absolute(config.raw), out=absolute(config.out))
    layout = BuildLayout(config.out.rstrip("/"))
    if config.max_len < 1:
        raise LongseqError(f"--max-len must be at least 1, got {config.max_len}")
    _clean_up(storage, layout, locked, log)
    if config.spec is None:  # read through the engine's storage: an hdfs:// or s3a:// output too
        config = dataclasses.replace(config, spec=recorded_spec(storage, config.out))
    recorded = check_output_spec(storage, config.out, config.spec)  # before the raw check: the likelier cause of a mismatch
    if getattr(engine, "reads_raw", True):  # the stream said it once, as it started, not at each day's close
        for warning in spec_warnings(recorded, config.spec, config.out):
            log(warning)
    days = plan_days(storage, layout, config, log)
    check_state_fits(storage, layout, days[0] - dt.timedelta(days=1), config)
    if config.layout is None:
        config = dataclasses.replace(config, layout=chain_layout(storage, layout, days[0]))
    if config.layout not in LAYOUTS:
        raise LongseqError(f"unknown layout {config.layout!r}: one of {', '.join(LAYOUTS)}")
    empty = set(config.empty_days)
    if outside := sorted(empty - set(days)):
        raise LongseqError(f"--empty-days {outside[0]} is not a day this build builds ({_span(days)})")
    if getattr(engine, "reads_raw", True):  # the stream's day close gathers what it already read
        check_raw_partitions(storage, config.raw.rstrip("/"), days, empty)  # all of them before the first day runs
        raw_log = contracts_of(config.spec).raw_log
        for day in (d for d in days if d not in empty):  # every file's footer too, so a bad day 17 stops a backfill before day 1
            check_parquet_files(storage, partition_path(config.raw, day), raw_log,
                                spark=getattr(engine, "spark", None), names=config.spec.raw_names)
    # after the checks, so a spec fixed after a refused first build is not held against it
    record_spec(storage, config.out, config.spec)
    reports = []
    for day in days:
        t0 = time.perf_counter()
        prev = day - dt.timedelta(days=1)
        prev_state = layout.dir("state", prev) if layout.is_built(storage, prev) else None
        if prev_state is not None:
            check_state_checksums(storage, layout, prev, days[-1])
        raw_partition = None if day in empty else partition_path(config.raw, day)
        token = new_token()
        temps = {kind: layout.temp(kind, day, token) for kind in KINDS}
        try:
            counts = engine.build_day(raw_partition, prev_state, day, config.max_len, temps,
                                      lateness_ms=config.lateness_ms, spec=config.spec, layout=config.layout)
            counts.check_balance()
            report = {
                "ds": day.isoformat(),
                "run_id": token,  # each build of a day is a new run: validation and publishing name it
                "engine": engine.name,
                "max_len": config.max_len,
                "lateness_ms": config.lateness_ms,
                "spec": spec_summary(config.spec),
                "layout": config.layout,
                "raw_partition": raw_partition,
                # no partition, declared empty by --empty-days: not an observed day without logs
                "declared_empty": day in empty,
                "previous_state": prev_state,
                **dataclasses.asdict(counts),
                "bytes_written": {kind: storage.size(temps[kind]) for kind in KINDS},
                # by the names the commit gives the parts; publishing compares the bytes with them
                "checksums": {kind: part_checksums(storage, temps[kind]) for kind in KINDS},
                "seconds": round(time.perf_counter() - t0, 3),
            }
            # marked before the commit, so that no crash leaves a day built on the old state looking current
            chain = mark_later_days_stale(storage, layout, day, token)
            commit_day(storage, layout, day, temps, json.dumps(report, indent=2, sort_keys=True))
        finally:
            for path in temps.values():
                storage.delete(path)
        # the chain includes the days this run rebuilds next (if it stops early, they must not
        # look current); only the others need telling
        stale = [d for d in chain if d not in days]
        if stale:
            log(f"{len(stale)} later day(s) {_span(stale)} were built on the previous state of {day}: "
                f"marked stale and unpublished; rebuild them with --start {stale[-1]} --catch-up")
        log(_summary(day, report))
        reports.append(report)
    return reports


def summarize_build(reports: list[dict]) -> str:
    """What a build run did over all its days, in a few lines."""
    rows = sum(r["rows_read"] for r in reports)
    quarantined: dict[str, int] = {}
    for r in reports:
        for k, v in r["quarantined"].items():
            quarantined[k] = quarantined.get(k, 0) + v
    last = reports[-1]["history_length"]
    declared = [r["ds"] for r in reports if r.get("declared_empty")]
    return "\n".join([
        f"build: {rows:,} rows -> {sum(r['requests'] for r in reports):,} request records, "
        f"{sum(r['targets'] for r in reports):,} targets",
        f"  {_quarantined(quarantined)}",
        f"  duplicates removed {sum(r['duplicates'] for r in reports):,}; requests with no valid impression "
        f"{sum(r['requests_without_valid_impressions'] for r in reports):,}",
        f"  history length on the last day: p50 {last['p50']:,.0f}  p90 {last['p90']:,.0f}  p99 {last['p99']:,.0f}  "
        f"max {last['max']:,.0f}",
        *([f"  declared empty (--empty-days, no raw partition): {', '.join(declared)}"] if declared else []),
    ])


def length_summary(histogram: dict[int, int]) -> dict[str, float]:
    """p50/p90/p99/max/mean of history lengths from {length: number of records}.

    Exact ("lower" percentiles: the value at rank floor(q * (n - 1))), so the engines agree,
    and computed from a histogram of at most max_len + 1 entries, so no engine has to bring
    every record's length to the driver.
    """
    items = sorted((int(k), int(v)) for k, v in histogram.items() if v)
    n = sum(v for _, v in items)
    if n == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}

    def at_rank(rank: int) -> float:
        seen = 0
        for value, count in items:
            seen += count
            if seen > rank:
                return float(value)
        return float(items[-1][0])

    out = {f"p{q}": at_rank(int(q / 100 * (n - 1))) for q in (50, 90, 99)}
    out["max"] = float(items[-1][0])
    out["mean"] = round(sum(k * v for k, v in items) / n, 3)
    return out
