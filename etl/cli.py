"""The `longseq` command line: one subcommand per stage.

Each subcommand parses its arguments and calls one function of the packages; the work
lives there. Errors a user can fix (LongseqError) print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from schemas.errors import LongseqError

if TYPE_CHECKING:  # pragma: no cover
    from etl.spark_session import SparkConfig
    from trainer.train import TrainConfig


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus a hint), not the whole usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date in YYYY-MM-DD form: {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 0.5:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 0.5], got {value}")
    return value


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- subcommands


def cmd_generate(args: argparse.Namespace) -> int:
    from etl.generate import PROFILES, generate

    profile = PROFILES[args.profile].with_sizes(args.users, args.days)
    report = generate(args.out, profile, args.seed, args.start, args.dirty, progress=_progress)
    dirty = ", ".join(f"{k} {v:,}" for k, v in report.dirty.items()) if args.dirty else "none"
    print(
        f"wrote {report.rows:,} rows ({report.requests:,} requests, {profile.users:,} users, "
        f"{profile.days} days) to {args.out} in {report.seconds:.1f} s; dirty rows: {dirty}"
    )
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from etl.movielens import MovieLensMapping, adapt_movielens

    mapping = MovieLensMapping(days=args.days, start=args.start, session_gap_minutes=args.session_gap_minutes,
                               max_targets=args.max_targets)
    adapt_movielens(args.ratings, args.out, movies=args.movies, mapping=mapping, progress=print)
    return 0


def _spark_config(args: argparse.Namespace) -> "SparkConfig":
    from etl.spark_session import SparkConfig

    config = SparkConfig.from_file(args.spark_config) if args.spark_config else SparkConfig()
    if args.from_spark_submit:
        config.master = None
    elif args.master:
        config.master = args.master
    if args.shuffle_partitions:
        config.shuffle_partitions = args.shuffle_partitions
    if args.driver_memory:
        config.driver_memory = args.driver_memory
    for item in args.conf or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LongseqError(f"--conf expects KEY=VALUE, got {item!r}")
        config.conf[key] = value
    return config


def cmd_build(args: argparse.Namespace) -> int:
    from etl.build import BuildConfig, build
    from etl.engines import make_engine

    spark_args = [args.master, args.conf, args.spark_config, args.from_spark_submit, args.shuffle_partitions, args.driver_memory]
    if args.engine == "polars" and any(spark_args):
        raise LongseqError("Spark settings (--master, --conf, --spark-config, ...) apply to --engine spark only")
    config = BuildConfig(
        raw=str(args.raw), out=str(args.out), start=args.start, end=args.end, max_len=args.max_len,
        catch_up=args.catch_up,
    )
    engine = make_engine(args.engine, _spark_config(args) if args.engine == "spark" else None)
    build(engine, config, log=_progress)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from etl.spark_session import spark_session
    from etl.validation import ValidationConfig, ValidationFailed, summary_table, validate

    overrides = {"max_len": args.max_len} if args.max_len else {}
    cfg = ValidationConfig.from_file(args.config, **overrides) if args.config else ValidationConfig(**overrides)
    cfg.warn_only = (*cfg.warn_only, *args.warn)
    cfg.critical_only = (*cfg.critical_only, *args.critical)
    spark = spark_session(_spark_config(args))
    outcome = validate(spark, str(args.data), args.ds, args.suite, raw=args.raw, cfg=cfg, sample=args.sample)
    print(summary_table(outcome))
    if not outcome["passed"]:
        failed = [r["check"] for r in outcome["checks"] if r["critical"] and not r["success"]]
        raise ValidationFailed(f"critical expectations failed: {', '.join(failed)}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from etl.publish import publish

    publish(str(args.data), args.start, args.end, override_reason=args.override_validation, log=print)
    return 0


def _train_config(args: argparse.Namespace) -> "TrainConfig":
    from trainer.train import TrainConfig

    overrides = {k: v for k, v in {"preset": args.preset, "epochs": args.epochs, "seed": args.seed,
                                   "max_steps": args.max_steps, "device": args.device}.items() if v is not None}
    if args.arch:
        overrides["model"] = {"arch": args.arch}
    if args.config:
        cfg = TrainConfig.from_file(args.config, **{k: v for k, v in overrides.items() if k != "model"})
        if args.arch:
            cfg.model = {**cfg.model, "arch": args.arch}
        return cfg
    return TrainConfig(**overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from trainer.train import train

    summary = train(str(args.data), args.start, args.end, args.run_dir, _train_config(args), log=_progress)
    if os.environ.get("RANK", "0") == "0":
        print(f"trained {summary['steps']} steps; checkpoint {summary['checkpoint']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from trainer.evaluate import evaluate

    evaluate(args.run_dir, str(args.data), args.start, args.end, max_len=args.max_len, batch_size=args.batch_size,
             device=args.device or "cpu")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from trainer.evaluate import score

    rows = score(args.run_dir, str(args.data), args.start, args.end, args.out, max_len=args.max_len,
                 batch_size=args.batch_size, device=args.device or "cpu")
    print(f"wrote {rows:,} target scores to {args.out}")
    return 0


def _add_spark_arguments(p: argparse.ArgumentParser, title: str) -> None:
    spark = p.add_argument_group(title)
    spark.add_argument("--master", help="Spark master (default local[*])")
    spark.add_argument("--shuffle-partitions", type=_positive_int, help="spark.sql.shuffle.partitions (default 8)")
    spark.add_argument("--driver-memory", help="spark.driver.memory (default 4g)")
    spark.add_argument("--conf", action="append", metavar="KEY=VALUE", help="any Spark setting; repeatable")
    spark.add_argument("--spark-config", type=Path, metavar="FILE", help="YAML/JSON: master, shuffle_partitions, driver_memory, conf")
    spark.add_argument("--from-spark-submit", action="store_true", help=argparse.SUPPRESS)


def cmd_demo(args: argparse.Namespace) -> int:
    from etl.demo import run_demo

    return run_demo(args.out, seed=args.seed, profile=args.profile, progress=_progress)


def cmd_bench(args: argparse.Namespace) -> int:
    from bench import BENCHMARKS

    return BENCHMARKS[args.name](args.extra)


def build_parser() -> argparse.ArgumentParser:
    from etl.generate import PROFILES  # light: numpy and pyarrow only

    parser = _Parser(
        prog="longseq",
        description="Request-level training data with 10k-event histories, and an STCA ranking model.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("generate", cmd_generate, "Write synthetic contract-1 impression logs (Parquet, one ds per day).")
    p.add_argument("--out", type=Path, required=True, help="output directory (ds=YYYY-MM-DD partitions)")
    p.add_argument("--users", type=_positive_int, help="number of users (default: the profile's)")
    p.add_argument("--days", type=_positive_int, help="number of days (default: the profile's)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same arguments, same bytes (default 0)")
    p.add_argument("--start", type=_date, default=dt.date(2026, 1, 1), help="first ds (default 2026-01-01)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="default", help="size and model preset (default: default)")
    p.add_argument("--dirty", type=_fraction, default=0.0, help="fraction of rows made invalid, for robustness tests (default 0)")

    p = add("adapt", cmd_adapt, "Turn a public dataset into contract-1 impression logs (docs/MOVIELENS.md).")
    p.add_argument("dataset", choices=["movielens"], help="the dataset's format")
    p.add_argument("--ratings", type=Path, required=True, help="MovieLens ratings.csv (userId,movieId,rating,timestamp)")
    p.add_argument("--movies", type=Path, help="movies.csv for genres (default: next to --ratings)")
    p.add_argument("--out", type=Path, required=True, help="output directory (ds=YYYY-MM-DD partitions)")
    p.add_argument("--days", type=_positive_int, default=30, help="days the whole file is mapped onto (default 30)")
    p.add_argument("--start", type=_date, default=dt.date(2026, 1, 1), help="first ds (default 2026-01-01)")
    p.add_argument("--session-gap-minutes", type=float, default=30.0, help="a longer pause starts a new request (default 30)")
    p.add_argument("--max-targets", type=_positive_int, default=20, help="most ratings in one request (default 20)")

    p = add("build", cmd_build, "Build request records (contract 2) from raw logs, day by day from the history state.")
    p.add_argument("--raw", required=True, help="raw log directory (ds=YYYY-MM-DD partitions with _SUCCESS)")
    p.add_argument("--out", required=True, help="output directory: requests/, quarantine/, state/, reports/")
    p.add_argument("--start", type=_date, required=True, help="first ds to build")
    p.add_argument("--end", type=_date, help="last ds to build (default: --start)")
    p.add_argument("--max-len", type=_positive_int, default=10_000, help="history length kept per request (default 10000)")
    p.add_argument("--engine", choices=["spark", "polars"], default="spark", help="spark (default) or polars (local, no JVM)")
    p.add_argument("--catch-up", action="store_true", help="first build the days missing between the last built day and --start")
    _add_spark_arguments(p, "Spark settings (engine spark)")

    p = add("validate", cmd_validate, "Validate built request records (or a raw partition) with Great Expectations.")
    p.add_argument("--data", required=True, help="the build's output directory (OUT of `longseq build`)")
    p.add_argument("--ds", type=_date, required=True, help="the day to validate")
    p.add_argument("--suite", choices=["requests", "raw"], default="requests", help="what to validate (default requests)")
    p.add_argument("--raw", help="raw log directory, for --suite raw")
    p.add_argument("--sample", type=float, help="validate a random fraction of the rows (0 < F <= 1)")
    p.add_argument("--max-len", type=_positive_int, help="the history length the day was built with (default 10000)")
    p.add_argument("--config", help="YAML/JSON validation config: bands, raw_mostly, lateness_ms, warn_only")
    p.add_argument("--warn", action="append", default=[], metavar="CHECK", help="make a check (or glob) only warn; repeatable")
    p.add_argument("--critical", action="append", default=[], metavar="CHECK", help="make a warn-only check critical; repeatable")
    _add_spark_arguments(p, "Spark settings")

    p = add("publish", cmd_publish, "Publish validated days for the trainer's reader (one manifest per day, atomic).")
    p.add_argument("--data", required=True, help="the build's output directory (OUT of `longseq build`)")
    p.add_argument("--start", type=_date, required=True, help="first ds to publish")
    p.add_argument("--end", type=_date, help="last ds to publish (default: --start)")
    p.add_argument("--override-validation", metavar="REASON",
                   help="publish days whose validation failed or is missing; the reason is recorded")

    p = add("train", cmd_train, "Train STCA (or a baseline) on published days; resumes a run directory. torchrun for several processes.")
    p.add_argument("--data", required=True, help="the build's output directory, with published days")
    p.add_argument("--start", type=_date, required=True, help="first training ds")
    p.add_argument("--end", type=_date, help="last training ds (default: --start)")
    p.add_argument("--run-dir", type=Path, required=True, help="checkpoints, logs and metrics go here")
    p.add_argument("--config", type=Path, help="YAML/JSON TrainConfig (see docs/TRAINER.md)")
    p.add_argument("--preset", help="model size: tiny, small or paper (default small)")
    p.add_argument("--arch", choices=["stca", "din", "transformer", "mean", "none"], help="model (default stca)")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--max-steps", type=_positive_int, help="stop after this many steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if present)")

    for name, func, what in (("evaluate", cmd_evaluate, "Per-task AUC, GAUC and logloss of a trained run on published days, at full length."),
                             ("score", cmd_score, "Write per-target scores of a trained run on published days to Parquet.")):
        p = add(name, func, what)
        p.add_argument("--run-dir", type=Path, required=True, help="a `longseq train` run directory")
        p.add_argument("--data", required=True, help="the build's output directory, with published days")
        p.add_argument("--start", type=_date, required=True)
        p.add_argument("--end", type=_date, help="default: --start")
        p.add_argument("--max-len", type=_positive_int, help="serve the most recent N events (default: the full history)")
        p.add_argument("--batch-size", type=_positive_int, default=64, help="requests per batch (default 64)")
        p.add_argument("--device", help="cpu (default) or cuda")
        if name == "score":
            p.add_argument("--out", type=Path, required=True, help="Parquet file to write")

    p = add("demo", cmd_demo, "Run the pipeline on a generated sample and print what each stage did.")
    p.add_argument("--out", type=Path, default=Path("demo-run"), help="working directory (default ./demo-run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", choices=sorted(PROFILES), default="small", help="sample size (default: small)")

    from bench import BENCHMARKS

    p = add("bench", cmd_bench, "Run a benchmark from bench/ and print its results.")
    p.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="arguments passed to the benchmark (see `longseq bench NAME --help`)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LongseqError as e:
        print(f"longseq {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # bad paths: not there, not writable, a file where a directory should be
        where = f": {e.filename}" if e.filename else ""
        print(f"longseq {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"longseq {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
