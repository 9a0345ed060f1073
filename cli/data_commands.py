"""The data stages: generate or adapt raw logs, build, validate, publish.

Each stage is an arguments function and a run function; the work is in sources/ and etl/.
"""

from __future__ import annotations

import argparse
import os

from longseq.cli.arguments import (
    Command, add_config, add_data, add_days, add_raw, add_spark, add_spec, comma_separated, dataset_spec, date, duration,
    fraction, hour_of_day, local_path, location, positive_int, progress, refuse_spark_options, spark_config,
)
from longseq.dataset.output_lock import output_lock
from longseq.dataset.storage import LocalStorage, absolute
from longseq.schemas.contracts import COMPACT_LAYOUT, DEFAULT_LATENESS_MS, DEFAULT_LAYOUT, DEFAULT_MAX_LEN, LAYOUTS, REQUEST_LAYOUT
from longseq.schemas.durations import format_duration
from longseq.schemas.errors import LongseqError
from longseq.sources import SAMPLE_START

# ---------------------------------------------------------------- generate


def generate_arguments(p: argparse.ArgumentParser) -> None:
    from longseq.sources.generate import PROFILES  # numpy and pyarrow only

    add_raw(p, "raw log directory to write (ds=YYYY-MM-DD partitions)")
    p.add_argument("--users", type=positive_int, help="number of users (default: the profile's)")
    p.add_argument("--days", type=positive_int, help="number of days (default: the profile's)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same arguments, same bytes (default 0)")
    p.add_argument("--start", type=date, default=SAMPLE_START, help=f"first day (default {SAMPLE_START})")
    p.add_argument("--profile", choices=sorted(PROFILES), default="default", help="size and model preset (default: default)")
    p.add_argument("--dirty", type=fraction, default=0.0, help="fraction of rows made invalid, for robustness tests (default 0)")
    add_spec(p, "dataset spec whose shape the logs take: its tasks and inputs (docs/SPEC.md; default: the default spec)")


def run_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from longseq.sources.generate import PROFILES, generate

    profile = PROFILES[args.profile].with_sizes(args.users, args.days)
    spec = dataset_spec(args)
    report = generate(Path(args.raw), profile, args.seed, args.start, args.dirty, progress=progress, spec=spec)
    dirty = ", ".join(f"{k} {v:,}" for k, v in report.dirty.items()) if args.dirty else "none"
    shape = f" in the shape of spec {spec.name!r}" if spec is not None else ""
    print(f"wrote {report.rows:,} rows ({report.requests:,} requests, {profile.users:,} users, "
          f"{profile.days} days){shape} to {args.raw} in {report.seconds:.1f} s; dirty rows: {dirty}")
    return 0


# ---------------------------------------------------------------- adapt


def adapt_arguments(p: argparse.ArgumentParser) -> None:
    from longseq.sources.movielens import MovieLensMapping

    default = MovieLensMapping()
    p.add_argument("dataset", choices=["movielens"], help="the dataset's format")
    p.add_argument("--ratings", type=local_path, required=True, metavar="FILE", help="MovieLens ratings.csv (userId,movieId,rating,timestamp)")
    p.add_argument("--movies", type=local_path, metavar="FILE", help="movies.csv for genres (default: next to --ratings)")
    add_raw(p, "raw log directory to write (ds=YYYY-MM-DD partitions)")
    p.add_argument("--days", type=positive_int, default=default.days,
                   help=f"days the whole file is mapped onto (default {default.days})")
    p.add_argument("--start", type=date, default=default.start, help=f"first day (default {default.start})")
    gap_ms = round(default.session_gap_minutes * 60_000)
    p.add_argument("--session-gap", type=duration, default=gap_ms, metavar="DURATION",
                   help=f"a longer pause between ratings starts a new request (default {format_duration(gap_ms)})")
    p.add_argument("--max-targets", type=positive_int, default=default.max_targets,
                   help=f"most ratings in one request (default {default.max_targets})")
    add_spec(p, "dataset spec to write (default: the default spec's four tasks; schemas/specs/movielens.yaml adds the "
                "genre as a side feature, docs/MOVIELENS.md)")


def run_adapt(args: argparse.Namespace) -> int:
    from pathlib import Path

    from longseq.sources.movielens import MovieLensMapping, adapt_movielens, adaptation_summary

    mapping = MovieLensMapping(days=args.days, start=args.start, session_gap_minutes=args.session_gap / 60_000,
                               max_targets=args.max_targets)
    from longseq.schemas.contracts import DEFAULT_SPEC

    report = adapt_movielens(args.ratings, Path(args.raw), movies=args.movies, mapping=mapping, progress=progress,
                             spec=dataset_spec(args) or DEFAULT_SPEC)
    print(adaptation_summary(report))
    return 0


# ---------------------------------------------------------------- build


def build_arguments(p: argparse.ArgumentParser) -> None:
    from longseq.etl.batch.engines import ENGINES

    add_raw(p, "raw log directory (ds=YYYY-MM-DD partitions with _SUCCESS)")
    add_data(p, "output directory: requests/, quarantine/, state/, reports/")
    add_days(p, "build")
    p.add_argument("--max-len", type=positive_int, default=DEFAULT_MAX_LEN,
                   metavar="EVENTS", help=f"history events kept per request, the most recent (default {DEFAULT_MAX_LEN})")
    p.add_argument("--lateness", type=duration, default=DEFAULT_LATENESS_MS, metavar="DURATION",
                   help=f"an outcome logged later than this after its request is quarantined (late_event); an "
                        f"event_id seen this recently on an earlier day is a duplicate (default "
                        f"{format_duration(DEFAULT_LATENESS_MS)}; e.g. 36h, 2d)")
    p.add_argument("--engine", choices=ENGINES, default=ENGINES[0], help=f"{' or '.join(ENGINES)} (local, no JVM); default {ENGINES[0]}")
    add_spec(p, "dataset spec of the raw logs (docs/SPEC.md); recorded as DATA/spec.yaml by the first build, which "
                "later builds must agree with (default: the recorded one, else the default spec)")
    p.add_argument("--catch-up", action="store_true",
                   help="first build, in order, the days between the last current day and --start that are missing "
                        "or stale (built on the old state of a day rebuilt since)")
    p.add_argument("--empty-days", type=comma_separated(date), default=[], metavar="YYYY-MM-DD[,...]",
                   help="days without logs that have no raw partition: built with no rows, recorded as declared "
                        "empty in their reports (a missing partition is otherwise refused as not landed; one "
                        "holding only _SUCCESS is an observed day without logs and needs no flag)")
    add_layout(p)
    add_spark(p, "Spark settings (engine spark)")


def add_layout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", choices=LAYOUTS, default=None,
                   help=f"how DATA holds the records: {COMPACT_LAYOUT}, one row per user and day with the history "
                        f"stored once and the requests' windows cut out by the readers, or {REQUEST_LAYOUT}, one row "
                        f"per request with its whole history, for plain rows (docs/CONTRACTS.md); default: the "
                        f"layout of the days built before (or the stream's checkpoint), else {DEFAULT_LAYOUT}")


def run_build(args: argparse.Namespace) -> int:
    from longseq.etl.batch.build import BuildConfig, build, summarize_build
    from longseq.etl.batch.engines import make_engine

    refuse_spark_options(args)
    config = BuildConfig(raw=args.raw, out=args.data, start=args.start, end=args.end, max_len=args.max_len,
                         lateness_ms=args.lateness, catch_up=args.catch_up, spec=dataset_spec(args),
                         empty_days=tuple(args.empty_days), layout=args.layout)
    # also taken (re-entrantly) by build(); here so that a busy output fails before Spark starts
    with output_lock(absolute(args.data), "build", log=progress):
        engine = make_engine(args.engine, spark_config(args) if args.engine == "spark" else None)
        reports = build(engine, config, log=progress)
    print(summarize_build(reports))
    return 0


# ---------------------------------------------------------------- validate


def validate_arguments(p: argparse.ArgumentParser) -> None:
    from longseq.etl.gates.validation import ENGINES, SUITES

    add_data(p)
    add_days(p, "validate")
    p.add_argument("--suite", choices=SUITES, default=SUITES[0], help=f"what to validate (default {SUITES[0]})")
    add_raw(p, "raw log directory, for --suite raw", required=False)
    p.add_argument("--sample", type=float, metavar="F", help="validate a random fraction of the rows (0 < F <= 1)")
    add_spec(p, "dataset spec of the raw logs (--suite raw, before a build recorded one); otherwise it must agree "
                "with the one DATA records")
    add_config(p, "validation", "YAML/JSON validation settings: bands, raw_mostly, lateness_ms, warn_only")
    p.add_argument("--warn", action="append", default=[], metavar="CHECK", help="make a check (or glob) only warn; repeatable")
    p.add_argument("--critical", action="append", default=[], metavar="CHECK", help="make a warn-only check critical; repeatable")
    p.add_argument("--engine", choices=ENGINES, default=ENGINES[0],
                   help=f"GX's execution engine: spark, for days of any size and cluster paths, or pandas, for local "
                        f"days that fit in memory, without a JVM (the same suites and results); default {ENGINES[0]}")
    p.add_argument("--jobs", type=positive_int, metavar="N",
                   help="--engine pandas: validate the days in N processes (default: one per core, where there are "
                        "at least 8 days a process; each starts in a few seconds)")
    add_spark(p, "Spark settings (engine spark)")


def run_validate(args: argparse.Namespace) -> int:
    from longseq.dataset.layout import day_range
    from longseq.etl.gates.validation import ValidationConfig, require_passed, validate_days
    from longseq.etl.spark_session import spark_session

    refuse_spark_options(args)
    cfg = ValidationConfig.from_file(args.config) if args.config else ValidationConfig()
    cfg.warn_only = (*cfg.warn_only, *args.warn)
    cfg.critical_only = (*cfg.critical_only, *args.critical)
    spec = dataset_spec(args)  # read before Spark starts: a bad spec fails at once
    days = day_range(args.start, args.end)
    with output_lock(absolute(args.data), "validate", log=progress):  # before Spark starts: a busy output fails at once
        outcomes = validate_days(lambda: spark_session(spark_config(args)), args.data, days, args.suite, raw=args.raw,
                                 cfg=cfg, sample=args.sample, spec=spec, show=lambda s: print(s, flush=True),
                                 engine=args.engine, jobs=args.jobs or default_validation_jobs(args.engine, len(days)))
    require_passed(days, outcomes)
    return 0


def default_validation_jobs(engine: str, days: int) -> int:
    """The pandas engine's default processes: one per core, with at least 8 days each, for a
    process pays a few seconds of imports before its first day."""
    if engine != "pandas":
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), days // 8))


# ---------------------------------------------------------------- publish


def publish_arguments(p: argparse.ArgumentParser) -> None:
    add_data(p)
    add_days(p, "publish")
    p.add_argument("--override-validation", metavar="REASON",
                   help="publish days whose validation failed or is missing; the reason is recorded")
    p.add_argument("--hour", type=hour_of_day, metavar="HH",
                   help="with --override-validation: publish this hour of --start, which blocks the stream's hour "
                        "publishing (docs/STREAMING.md); the stream publishes the hours after it when it runs next")
    add_spec(p, "refuse to publish unless DATA holds this dataset spec (default: the one it records)")
    add_spark(p, "Spark settings (--hour: validating the hours after it)")


def run_publish(args: argparse.Namespace) -> int:
    from longseq.etl.gates.publish import publish

    with output_lock(absolute(args.data), "publish", log=progress):  # etl.gates.validation refuses stale days
        if args.hour is not None:
            return _publish_blocked_hour(args)
        publish(args.data, args.start, args.end, override_reason=args.override_validation, log=print,
                spec=dataset_spec(args))
    return 0


def _publish_blocked_hour(args: argparse.Namespace) -> int:
    from longseq.dataset.spec_record import spec_for
    from longseq.etl.spark_session import spark_session
    from longseq.etl.stream.hours import publish_blocked_hour

    if not args.override_validation or args.end not in (None, args.start):
        raise LongseqError("--hour publishes one hour of --start, and only with --override-validation REASON: the "
                           "stream validates and publishes its hours itself (longseq stream --publish-hours)")
    data = absolute(args.data)
    spec = spec_for(LocalStorage(), data, dataset_spec(args))
    published = publish_blocked_hour(data, args.start, args.hour, args.override_validation, spec,
                                     lambda: spark_session(spark_config(args)), log=progress)
    print(f"published ds={args.start} hour={args.hour:02d} (validation overridden)")
    for day, hour in published[1:]:
        print(f"published ds={day} hour={hour:02d}")
    return 0


# ---------------------------------------------------------------- stream


def stream_arguments(p: argparse.ArgumentParser) -> None:
    from longseq.etl.stream.settings import StreamConfig

    default = StreamConfig(raw="", out="", checkpoint="")
    add_raw(p, "directory the raw log files land in (ds=YYYY-MM-DD partitions; files written under a hidden name, "
               "then renamed)")
    add_data(p, "output directory, as for `longseq build`: each day the stream closes is a built day")
    p.add_argument("--checkpoint", type=location, required=True, metavar="DIR",
                   help="the stream's checkpoint (Spark's offsets and state, the flush marker): on a reliable file "
                        "system; a restart with the same one resumes exactly where the stream stopped")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true",
                      help="process every file present, then end the stream as if no more data will come: every "
                           "request still waiting is written, every day up to the last one read closes, and the "
                           "checkpoint is finished (tests, backfills)")
    mode.add_argument("--available-now", action="store_true",
                      help="process every file present and stop, without ending the stream (resume it later)")
    p.add_argument("--trigger", type=duration, default=60_000, metavar="DURATION",
                   help="micro-batch interval of a continuous stream (default 1m)")
    p.add_argument("--lateness", type=duration, default=DEFAULT_LATENESS_MS, metavar="DURATION",
                   help=f"an outcome logged later than this after its request is quarantined (late_event); a request "
                        f"is written once the watermark passes request_ts + this (default "
                        f"{format_duration(DEFAULT_LATENESS_MS)}; minutes for fresh data, e.g. 10m)")
    p.add_argument("--watermark-delay", type=duration, default=default.watermark_delay_ms, metavar="DURATION",
                   help=f"how far out of event-time order files may land; a row later than that is quarantined as "
                        f"late_arrival (default {format_duration(default.watermark_delay_ms)})")
    p.add_argument("--start", type=date, metavar="YYYY-MM-DD", help="first ds to read (default: every partition)")
    add_layout(p)
    p.add_argument("--max-len", type=positive_int, default=DEFAULT_MAX_LEN,
                   help=f"history length kept per request (default {DEFAULT_MAX_LEN})")
    p.add_argument("--max-files-per-trigger", type=positive_int, default=default.max_files_per_trigger,
                   help=f"files read per micro-batch at most (default {default.max_files_per_trigger})")
    p.add_argument("--publish-hours", action="store_true",
                   help="validate each hour's records as it closes (the requests suite) and publish it for "
                        "`longseq train --follow`; a failed hour blocks the hours after it")
    p.add_argument("--state-partitions", type=positive_int, default=default.state_partitions,
                   help=f"partitions of the state store, fixed by the checkpoint (default {default.state_partitions})")
    add_spec(p, "dataset spec of the raw logs (docs/SPEC.md); default: the one DATA records, else the default spec")
    add_spark(p, "Spark settings")


def run_stream(args: argparse.Namespace) -> int:
    from longseq.etl.spark_session import spark_session
    from longseq.etl.stream.job import run_stream as run
    from longseq.etl.stream.settings import StreamConfig, StreamSettings

    mode = "once" if args.once else "available-now" if args.available_now else "continuous"
    settings = StreamSettings(spec=dataset_spec(args), max_len=args.max_len, lateness_ms=args.lateness,
                              layout=args.layout)
    config = StreamConfig(raw=args.raw, out=args.data, checkpoint=args.checkpoint, settings=settings, start=args.start,
                          watermark_delay_ms=args.watermark_delay,
                          trigger=f"{args.trigger} milliseconds", max_files_per_trigger=args.max_files_per_trigger, mode=mode,
                          state_partitions=args.state_partitions, publish_hours=args.publish_hours)
    # taken (re-entrantly) by run_stream too; here so that a busy output fails before Spark starts
    with output_lock(absolute(args.data), "stream", log=progress):
        summary = run(spark_session(spark_config(args)), config, log=progress)
    days = summary["closed_days"]
    print(f"stream: {summary['batches']} micro-batches committed; days built: "
          f"{(days[0] + '..' + days[-1]) if days else 'none yet'}; {summary['seconds']:.1f} s")
    return 0


COMMANDS = [
    Command("generate", "Write synthetic contract-1 impression logs (Parquet, one ds per day).", generate_arguments, run_generate),
    Command("adapt", "Turn a public dataset into contract-1 impression logs (docs/MOVIELENS.md).", adapt_arguments, run_adapt),
    Command("build", "Build request records (contract 2) from raw logs, day by day from the history state.",
            build_arguments, run_build),
    Command("stream", "Build request records from raw files as they land (Spark Structured Streaming).",
            stream_arguments, run_stream),
    Command("validate", "Validate built request records (or raw partitions) with Great Expectations.",
            validate_arguments, run_validate),
    Command("publish", "Publish validated days for the trainer's reader (one manifest per day, atomic).",
            publish_arguments, run_publish),
]
