"""`longseq build`: raw logs -> request records, one day at a time, from the history state.

The build of day D reads D's raw partition and the user state after D-1, and writes D's
request records, quarantine and the state after D (dataset/layout.py has the layout, etl/commit.py
the commit protocol). A range is built day by day, so its cost per day does not grow with
the number of days built. The engines (Spark, polars) implement `Engine.build_day`; this
module checks prerequisites, commits atomically and writes the report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from dataset.layout import KINDS, BuildLayout, day_range, partition_path
from dataset.raw import check_raw_partitions
from dataset.storage import Storage, absolute
from etl.commit import commit_day, new_token
from schemas.contracts import DEFAULT_MAX_LEN
from schemas.errors import LongseqError, MissingPrerequisiteError


class AccountingError(LongseqError):
    """Rows read != targets + quarantined + duplicates: a bug, so nothing is committed."""


@dataclass
class DayCounts:
    """What an engine reports about one day; the build adds bytes and seconds."""

    rows_read: int
    duplicates: int
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
        self, raw_partition: str, prev_state: str | None, day: dt.date, max_len: int, temps: dict[str, str]
    ) -> DayCounts:
        """Write the day's requests, quarantine and state into temps[kind] (each with _SUCCESS)."""
        ...


@dataclass
class BuildConfig:
    raw: str
    out: str
    start: dt.date
    end: dt.date | None = None
    max_len: int = DEFAULT_MAX_LEN
    catch_up: bool = False  # build the missing days before `start` first

    def days(self) -> list[dt.date]:
        return day_range(self.start, self.end)


def plan_days(storage: Storage, layout: BuildLayout, config: BuildConfig, log: Callable[[str], None]) -> list[dt.date]:
    """The days to build, after checking that the state chain reaches the first one."""
    days = config.days()
    prev = days[0] - dt.timedelta(days=1)
    if layout.is_built(storage, prev):
        return days
    earlier = [d for d in layout.built_days(storage) if d < days[0]]
    if not earlier:
        log(f"no state before {days[0]}: starting from empty histories (a cold start)")
        return days
    last = earlier[-1]
    if config.catch_up:
        missing = [last + dt.timedelta(days=i) for i in range(1, (days[0] - last).days)]
        log(f"--catch-up: building {len(missing)} missing day(s) {missing[0]}..{missing[-1]} first")
        return missing + days
    raise MissingPrerequisiteError(
        f"the history state after {prev} is missing (the last day built before {days[0]} is {last}): "
        f"build {last + dt.timedelta(days=1)}..{prev} first, or pass --catch-up"
    )


def _check_max_len(storage: Storage, layout: BuildLayout, prev: dt.date, max_len: int) -> None:
    """The state after prev keeps only that build's max_len events: a longer max_len now
    would silently give shorter histories than one build over all days."""
    if not storage.exists(layout.report(prev)):
        return
    before = json.loads(storage.read_text(layout.report(prev))).get("max_len", max_len)
    if before < max_len:
        raise LongseqError(
            f"{prev} was built with --max-len {before}; its state cannot give histories of {max_len}. "
            f"Rebuild from the first day with --max-len {max_len} into a new --data directory"
        )


def _summary(day: dt.date, report: dict) -> str:
    q = report["quarantined"]
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(q.items()) if v) or "none"
    h = report["history_length"]
    return (
        f"ds={day}: {report['rows_read']:,} rows -> {report['requests']:,} requests, {report['targets']:,} targets; "
        f"quarantined {sum(q.values()):,} ({reasons}); duplicates {report['duplicates']:,}; "
        f"history p50 {h.get('p50', 0):,.0f} p99 {h.get('p99', 0):,.0f} max {h.get('max', 0):,.0f}; "
        f"{sum(report['bytes_written'].values()) / 2**20:,.1f} MB in {report['seconds']:.1f} s"
    )


def build(engine: Engine, config: BuildConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Build every day of the config in order; return the reports."""
    storage = engine.storage
    config = dataclasses.replace(config, raw=absolute(config.raw), out=absolute(config.out))
    layout = BuildLayout(config.out.rstrip("/"))
    if config.max_len < 1:
        raise LongseqError(f"--max-len must be at least 1, got {config.max_len}")
    days = plan_days(storage, layout, config, log)
    _check_max_len(storage, layout, days[0] - dt.timedelta(days=1), config.max_len)
    check_raw_partitions(storage, config.raw.rstrip("/"), days)  # all of them before the first day runs
    reports = []
    for day in days:
        t0 = time.perf_counter()
        prev = day - dt.timedelta(days=1)
        prev_state = layout.dir("state", prev) if layout.is_built(storage, prev) else None
        token = new_token()
        temps = {kind: layout.temp(kind, day, token) for kind in KINDS}
        try:
            counts = engine.build_day(partition_path(config.raw, day), prev_state, day, config.max_len, temps)
            counts.check_balance()
            report = {
                "ds": day.isoformat(),
                "run_id": token,  # each build of a day is a new run: validation and publishing name it
                "engine": engine.name,
                "max_len": config.max_len,
                "raw_partition": partition_path(config.raw, day),
                "previous_state": prev_state,
                **dataclasses.asdict(counts),
                "bytes_written": {kind: storage.size(temps[kind]) for kind in KINDS},
                "seconds": round(time.perf_counter() - t0, 3),
            }
            commit_day(storage, layout, day, temps, json.dumps(report, indent=2, sort_keys=True))
        finally:
            for path in temps.values():
                storage.delete(path)
        later = [d for d in layout.built_days(storage) if d > day and d not in days]
        if later:
            log(f"note: {len(later)} later day(s) from {later[0]} were built on the previous state of {day}; "
                f"rebuild them (--end {later[-1]}) if its input changed")
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
    return "\n".join([
        f"build: {rows:,} rows -> {sum(r['requests'] for r in reports):,} request records, "
        f"{sum(r['targets'] for r in reports):,} targets",
        f"  quarantined {sum(quarantined.values()):,}: " + ", ".join(f"{k} {v}" for k, v in sorted(quarantined.items()) if v),
        f"  duplicates removed {sum(r['duplicates'] for r in reports):,}; requests with no valid impression "
        f"{sum(r['requests_without_valid_impressions'] for r in reports):,}",
        f"  history length on the last day: p50 {last['p50']:,.0f}  p90 {last['p90']:,.0f}  p99 {last['p99']:,.0f}  "
        f"max {last['max']:,.0f}",
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
