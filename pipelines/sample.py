"""The recipe from raw logs to published days, defined once for the demo, the benchmarks
and the tests:

    generate (or adapt) -> build -> validate (or record an override) -> publish

    sample = prepare_generated(root, PROFILES["tiny"], seed=3, max_len=64)
    open_published(str(sample.data), sample.start, sample.end, ...)

A sample lives in ROOT/raw (contract-1 logs) and ROOT/data (the build's output directory).
The polars engine builds unless another engine is passed. With `validate`, each built day
must pass the Great Expectations gate (Spark engine only: it needs a Spark session);
otherwise publishing records `override_reason`, as an operator would.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from longseq.dataset.layout import BuildLayout, day_range
from longseq.schemas.contracts import DEFAULT_MAX_LEN
from longseq.sources import SAMPLE_START


def quiet(message: str) -> None:
    """A log that drops everything (benchmarks and tests)."""


@dataclass(frozen=True)
class Sample:
    raw: Path  # contract-1 raw logs
    data: Path  # the build's output directory, its days published
    start: dt.date
    end: dt.date

    @property
    def days(self) -> list[dt.date]:
        return day_range(self.start, self.end)


def is_published(data: Path, day: dt.date) -> bool:
    return Path(BuildLayout(str(data)).manifest(day)).exists()


def build_and_publish(raw: Path, data: Path, start: dt.date, end: dt.date, *, engine=None,
                      max_len: int = DEFAULT_MAX_LEN, validate: bool = False, spec=None, layout: str | None = None,
                      override_reason: str = "generated sample: not validated",
                      log: Callable[[str], None] = quiet, show: Callable[[str], None] = quiet) -> list[dict]:
    """Build [start, end] from raw into data, gate each day, publish them; return the build
    reports. log gets progress, show the results of each stage; spec: the logs' dataset spec
    (a DatasetSpec, or None for the default); layout: the records' (None: the build's default)."""
    from longseq.dataset.output_lock import output_lock
    from longseq.etl.batch.build import BuildConfig, build, summarize_build
    from longseq.etl.gates.publish import publish

    if engine is None:
        from longseq.etl.batch.polars_engine import PolarsEngine

        engine = PolarsEngine()
    with output_lock(str(data), "pipeline", log=log):  # one holder from build to publish
        reports = build(engine, BuildConfig(str(raw), str(data), start, end, max_len, spec=spec, layout=layout), log=log)
        show(summarize_build(reports))
        if validate:
            validate_days(engine, data, day_range(start, end), show)
        publish(str(data), start, end, override_reason=None if validate else override_reason, log=show)
    return reports


def validate_days(engine, data: Path, days: list[dt.date], show: Callable[[str], None]) -> None:
    """The requests suite on each day, with GX on the build engine's Spark session, or on
    pandas after a build without one; raises ValidationFailed naming the days that failed."""
    from longseq.etl.gates.validation import ValidationFailed, validate_days as validate_each

    spark = getattr(engine, "spark", None)
    outcomes = validate_each(lambda: spark, str(data), days, "requests", show=show, describe=_one_line,
                             engine="pandas" if spark is None else "spark")
    failed = [str(day) for day, outcome in zip(days, outcomes) if not outcome["passed"]]
    if failed:
        raise ValidationFailed(f"validation failed for ds={', '.join(failed)}: nothing was published")


def _one_line(outcome: dict) -> str:
    warnings = sum(1 for r in outcome["checks"] if not r["success"] and not r["critical"])
    return (f"validate ds={outcome['ds']}: {'PASSED' if outcome['passed'] else 'FAILED'} "
            f"({len(outcome['checks'])} expectations, {warnings} warnings); Data Docs: {outcome['docs']}")


def prepare_generated(root: Path, profile, seed: int, *, start: dt.date = SAMPLE_START, dirty: float = 0.0,
                      reuse: bool = False, **publishing) -> Sample:
    """Generated logs (sources/generate.py), built and published. reuse: keep a sample whose
    last day is already published (benchmarks that resume)."""
    from longseq.sources.generate import generate

    sample = Sample(root / "raw", root / "data", start, start + dt.timedelta(days=profile.days - 1))
    if reuse and is_published(sample.data, sample.end):
        return sample
    generate(sample.raw, profile, seed, start, dirty=dirty, progress=publishing.get("log"), spec=publishing.get("spec"))
    build_and_publish(sample.raw, sample.data, sample.start, sample.end, **publishing)
    return sample


def prepare_movielens(root: Path, ratings: Path, mapping=None, *, reuse: bool = False, **publishing) -> Sample:
    """MovieLens ratings adapted (sources/movielens.py), built and published."""
    from longseq.schemas.spec import resolve_spec
    from longseq.sources.movielens import MovieLensMapping, adapt_movielens

    mapping = mapping or MovieLensMapping()
    sample = Sample(root / "raw", root / "data", mapping.start, mapping.start + dt.timedelta(days=mapping.days - 1))
    if reuse and is_published(sample.data, sample.end):
        return sample
    adapt_movielens(ratings, sample.raw, mapping=mapping, progress=publishing.get("log", quiet),
                    spec=resolve_spec(publishing.get("spec")))
    build_and_publish(sample.raw, sample.data, sample.start, sample.end, **publishing)
    return sample
