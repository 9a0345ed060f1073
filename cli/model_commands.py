"""The model stages: train, evaluate, score. The work is in trainer/."""

from __future__ import annotations

import argparse
import os

from longseq.cli.arguments import (
    Command, add_config, add_data, add_days, add_device, add_output, add_spec, dataset_spec, duration, hour_of_day, local_path,
    positive_int, progress,
)
from longseq.schemas.errors import LongseqError

# ---------------------------------------------------------------- train


def train_arguments(p: argparse.ArgumentParser) -> None:
    from longseq.trainer.model_config import ARCHS, DEFAULT_PRESET, PRESETS  # no torch

    add_data(p, "the build's output directory, with published days")
    add_days(p, "train on")
    p.add_argument("--run-dir", type=local_path, required=True, metavar="DIR", help="checkpoints, logs and metrics go here")
    add_config(p, "train", "YAML/JSON training settings (TrainConfig, docs/TRAINER.md)")
    p.add_argument("--preset", choices=list(PRESETS), help=f"model size (default {DEFAULT_PRESET})")
    p.add_argument("--arch", choices=ARCHS, help=f"model (default {ARCHS[0]})")
    p.add_argument("--epochs", type=positive_int,
                   help="passes over the days (default 1; with --max-steps, the first limit reached stops)")
    p.add_argument("--max-steps", type=positive_int,
                   help="train this many steps, on into further epochs as needed; the lr schedule is sized to them")
    p.add_argument("--seed", type=int, help="random seed of the weights, the batches and the length draws (default 0)")
    p.add_argument("--bucket-pool", type=int, metavar="N",
                   help="batch requests of similar sampled history length from pools of N (0: off; default: 512 "
                        "when training on sampled windows, else off; docs/READER.md)")
    p.add_argument("--group-user-days", action="store_true", default=None,
                   help="keep each user-day's requests together, in request_ts order, in consecutive batches (the "
                        "order of user-days is still shuffled; default: requests shuffled across user-days)")
    p.add_argument("--allow-other-data", action="store_true",
                   help="resume a run on other data or days than it was started on (recorded in RUN/data.json)")
    add_spec(p, "dataset spec to train with: it must build the records DATA holds, and its model-side settings "
                "(buckets, transform, mean, std, boundaries) are the model's (default: the one DATA records, docs/SPEC.md)")
    add_device(p)
    online = p.add_argument_group("online training on the stream's published hours (docs/STREAMING.md)")
    online.add_argument("--follow", action="store_true",
                        help="train one pass over each hour `longseq stream --publish-hours` publishes, from the first "
                             "of --start (or --hour), waiting for the next; stops on SIGTERM/Ctrl-C with a checkpoint, "
                             "and after the last hour of --end when given")
    online.add_argument("--hour", type=hour_of_day, metavar="HH", help="with --follow: the first hour of --start")
    online.add_argument("--progressive", action="store_true",
                        help="with --follow: score each hour with the model trained before it, then train on it "
                             "(RUN/progressive/)")
    online.add_argument("--poll", type=duration, default=30_000, metavar="DURATION",
                        help="with --follow: how often to look for a new hour (default 30s)")
    online.add_argument("--exit-when-idle", type=duration, metavar="DURATION",
                        help="with --follow: stop when no new hour came for this long (default: wait forever)")


def train_config(args: argparse.Namespace):  # -> trainer.train.TrainConfig
    """The settings file (if any), then the flags given on top of it."""
    from longseq.trainer.train_config import TrainConfig

    flags = {k: v for k, v in {"preset": args.preset, "epochs": args.epochs, "seed": args.seed,
                               "max_steps": args.max_steps, "device": args.device,
                               "group_user_days": args.group_user_days, "bucket_pool": args.bucket_pool}.items()
             if v is not None}
    cfg = TrainConfig.from_file(args.config, **flags) if args.config else TrainConfig(**flags)
    if args.arch:
        cfg.model = {**cfg.model, "arch": args.arch}
    if args.spec:
        dataset_spec(args)  # a bad spec file fails here, in one line, before anything runs
        cfg.spec = str(args.spec)
    return cfg


def run_train(args: argparse.Namespace) -> int:
    from longseq.trainer.train import train

    if args.follow:
        return _run_follow(args)
    if args.hour is not None or args.progressive or args.exit_when_idle is not None:
        raise LongseqError("--hour, --progressive and --exit-when-idle go with --follow")

    summary = train(args.data, args.start, args.end, args.run_dir, train_config(args), log=progress,
                    allow_other_data=args.allow_other_data)
    if os.environ.get("RANK", "0") == "0":
        print(f"trained {summary['steps']} steps; checkpoint {summary['checkpoint']}")
    return 0


def _run_follow(args: argparse.Namespace) -> int:
    from longseq.trainer.follow import follow

    if args.allow_other_data or args.epochs or args.max_steps:
        raise LongseqError("--follow trains one pass over each hour as it comes: no --epochs, --max-steps or "
                           "--allow-other-data")
    summary = follow(args.data, args.run_dir, train_config(args), log=progress, poll_s=args.poll / 1000,
                     exit_when_idle_s=None if args.exit_when_idle is None else args.exit_when_idle / 1000,
                     progressive=args.progressive, first_hour=(args.start, args.hour or 0), last_day=args.end)
    print(f"trained on {summary['hours_trained']} hour(s), {summary['steps']} steps; checkpoint {summary['checkpoint']}")
    return 0


# ---------------------------------------------------------------- evaluate and score


def _scoring_arguments(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--run-dir", type=local_path, required=True, metavar="DIR", help="a `longseq train` run directory")
    add_data(p, "the build's output directory, with published days")
    add_days(p, what)
    p.add_argument("--score-len", type=positive_int, metavar="EVENTS",
                   help="read the most recent N events of each history (default: all the records hold)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="requests per batch (default 64)")
    p.add_argument("--attention", choices=("padded", "flex"), default="padded",
                   help="target attention kernel: padded (default) or flex (jagged FlexAttention; the same scores)")
    add_spec(p, "refuse unless DATA holds this dataset spec (default: the one the model was trained on)")
    add_device(p)


def _device(args: argparse.Namespace) -> dict:
    return {"device": args.device} if args.device else {}  # unset: the functions' default, auto


def evaluate_arguments(p: argparse.ArgumentParser) -> None:
    _scoring_arguments(p, "evaluate on")
    p.add_argument("--bootstrap", type=int, default=200, metavar="N",
                   help="resamples of users behind the 95%% AUC intervals; 0: none (default 200)")
    p.add_argument("--hour", type=hour_of_day, metavar="HH",
                   help="evaluate on this published hour of --start (the stream's, docs/STREAMING.md): after "
                        "`train --follow` trained up to the hour before, a progressive validation")


def run_evaluate(args: argparse.Namespace) -> int:
    from longseq.trainer.evaluate import evaluate

    if args.bootstrap < 0:
        raise LongseqError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    evaluate(args.run_dir, args.data, args.start, args.end, max_len=args.score_len, batch_size=args.batch_size,
             log=print, bootstrap=args.bootstrap, attention=args.attention, spec=dataset_spec(args), hour=args.hour,
             **_device(args))
    return 0


def score_arguments(p: argparse.ArgumentParser) -> None:
    _scoring_arguments(p, "score")
    add_output(p, "the Parquet file of scores to write (written beside it, then renamed into place)", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists (default: refuse)")
    p.add_argument("--log-names", action="store_true",
                   help="name the id and time columns as the raw logs do (the dataset spec's `columns`), to join "
                        "the scores to the logs (default: longseq's names)")


def run_score(args: argparse.Namespace) -> int:
    from longseq.trainer.evaluate import score

    rows = score(args.run_dir, args.data, args.start, args.end, args.output, max_len=args.score_len,
                 batch_size=args.batch_size, attention=args.attention, spec=dataset_spec(args),
                 overwrite=args.overwrite, log_names=args.log_names, **_device(args))
    print(f"wrote {rows:,} target scores to {args.output}")
    return 0


COMMANDS = [
    Command("train", "Train STCA (or a baseline) on published days; resumes a run directory. torchrun for several processes.",
            train_arguments, run_train),
    Command("evaluate", "Per-task AUC, GAUC and logloss of a trained run on published days, at full length.",
            evaluate_arguments, run_evaluate),
    Command("score", "Write per-target scores of a trained run on published days to Parquet.", score_arguments, run_score),
]
