"""Does a longer history predict better on generated data? A model-free check.

    longseq bench signal [--profile default] [--users N] [--days D] [--seed 0]
                         [--lengths 50,500,2000,10000] [--min-events 10000] [--raw DIR] [--spec FILE]

For each impression of a heavy user (more than --min-events events) in the last days, the score is
the smoothed rate of the first task (finish, in the default spec) on the user's earlier
impressions of the same author among the last L history events (events logged before the
request, as the ETL defines history). The AUC of that score, overall and on niche-topic
targets, is printed for each L. If the generator's long-term interests work, AUC rises
from 500 to 2k to 10k.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from longseq.dataset.raw import read_raw_partition
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, build_catalogue, generate
from longseq.bench import bench_parser
from longseq.cli.arguments import add_raw, add_spec, comma_separated, dataset_spec, positive_int
from longseq.schemas.spec import resolve_spec

START = SAMPLE_START
COLUMNS = ["user_id", "event_id", "author_id", "item_id", "request_ts", "event_ts"]  # and the first task


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Rank-based ROC AUC (ties get their average rank)."""
    ranks = pd.Series(score).rank(method="average").to_numpy()
    pos = label == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def same_author_scores(df: pd.DataFrame, lengths: list[int], prior_weight: float = 1.0) -> dict[int, tuple]:
    """Per row: (score, number of same-author events) within the last L history events, per L.

    df must be sorted by (user, event_ts, event_id); its order is the history order; its
    `label` column is the task scored (0/1).
    """
    n = len(df)
    user = pd.factorize(df.user_id)[0].astype(np.int64)
    ts = df.event_ts.to_numpy() - df.event_ts.min()
    key = user * (1 << 42) + ts
    # history of row i = the user's rows with event_ts < request_ts(i): [user_start, h)
    req = df.request_ts.to_numpy() - df.event_ts.min()
    h = np.searchsorted(key, user * (1 << 42) + req, side="left")
    user_start = np.searchsorted(user, user, side="left")

    group = df.groupby(["user_id", "author_id"], sort=False).ngroup().to_numpy().astype(np.int64)
    order = np.lexsort((np.arange(n), group))
    gkey = group[order] * (1 << 32) + np.arange(n)[order]
    fin_cum = np.concatenate([[0], np.cumsum(df.label.to_numpy()[order])])
    prior = df.label.mean()
    out = {}
    for L in lengths:
        lo = np.maximum(user_start, h - L)
        a = np.searchsorted(gkey, group * (1 << 32) + lo)
        b = np.searchsorted(gkey, group * (1 << 32) + np.maximum(h, lo))
        count = b - a
        score = (fin_cum[b] - fin_cum[a] + prior_weight * prior) / (count + prior_weight)
        out[L] = (score, count)
    return out


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench signal --help`)."""

    ap.add_argument("--profile", default="default", choices=sorted(PROFILES), help="generator profile (default default)")
    ap.add_argument("--users", type=positive_int, help="users to generate (default: the profile's)")
    ap.add_argument("--days", type=positive_int, help="days to generate (default: the profile's)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the generated logs (default 0)")
    ap.add_argument("--lengths", type=comma_separated(positive_int), default="50,500,2000,10000", metavar="EVENTS,...",
                    help="history lengths to measure at (default 50,500,2000,10000)")
    ap.add_argument("--min-events", type=positive_int, default=10_000, metavar="N",
                    help="score the impressions of users with more than N events (default 10000)")
    ap.add_argument("--eval-days", type=positive_int, default=3, help="score impressions of the last N days (default 3)")
    add_raw(ap, "use logs generated with the same profile and seed (default: generate them)", required=False)
    add_spec(ap, "dataset spec of the logs (default: the default spec); the score is the rate of its first task")


def main(argv: list[str]) -> int:
    ap = bench_parser('signal', __doc__, arguments)
    args = ap.parse_args(argv)
    profile = PROFILES[args.profile].with_sizes(args.users, args.days)
    lengths = args.lengths
    spec = resolve_spec(dataset_spec(args))
    task = spec.tasks[0]

    work = None
    raw = args.raw
    if raw is None:
        work = Path(tempfile.mkdtemp(prefix="longseq-signal-"))
        raw = work / "raw"
        generate(raw, profile, args.seed, START, spec=spec)
    try:
        df = pd.concat(
            [read_raw_partition(raw, START + dt.timedelta(days=d), [*COLUMNS, task], spec).to_pandas()
             for d in range(profile.days)],
            ignore_index=True,
        ).rename(columns={task: "label"})
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
    df = df.sort_values(["user_id", "event_ts", "event_id"], ignore_index=True)
    scores = same_author_scores(df, lengths)

    cat = build_catalogue(profile, args.seed)
    niche_items = set(cat.item_id[cat.topic >= profile.main_topics].tolist())
    eval_from = int(dt.datetime.combine(START + dt.timedelta(days=profile.days - args.eval_days), dt.time(),
                                        tzinfo=dt.timezone.utc).timestamp() * 1000)
    heavy = df.groupby("user_id").user_id.transform("size") > args.min_events
    mask = (heavy & (df.request_ts >= eval_from)).to_numpy()
    niche = df.item_id.isin(niche_items).to_numpy()
    label = df.label.to_numpy()
    print(f"{mask.sum():,} impressions of {df.user_id[heavy].nunique()} users with more than {args.min_events:,} events, "
          f"last {args.eval_days} days; {(mask & niche).sum():,} on niche topics", file=sys.stderr)
    print("| history length L | AUC, all targets | AUC, niche-topic targets | niche targets with same-author evidence |")
    print("|---:|---:|---:|---:|")
    for L in lengths:
        score, count = scores[L]
        print(f"| {L:,} | {auc(score[mask], label[mask]):.4f} | {auc(score[mask & niche], label[mask & niche]):.4f} "
              f"| {(count[mask & niche] > 0).mean():.1%} |")
    return 0
