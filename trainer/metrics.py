"""Ranking metrics per task: AUC, GAUC (per user, impression-weighted) and logloss, and
bootstrap intervals for AUC.

Pure numpy over whole evaluation sets, one column per task of the dataset spec (the
default spec's tasks unless told). AUC is the Mann-Whitney statistic with tied scores
counted half, so it equals the fraction of (positive, negative) pairs ranked right.
Intervals resample users, not targets: a user's impressions are correlated, so resampling
them one by one would make the interval too narrow.
"""

from __future__ import annotations

import numpy as np

from longseq.schemas.contracts import TASKS


def _check_columns(labels: np.ndarray, logits: np.ndarray, tasks: tuple[str, ...]) -> None:
    # a column per task: scores of one spec read against another's tasks would be misnamed
    if np.shape(labels)[1:] != (len(tasks),) or np.shape(logits)[1:] != (len(tasks),):
        raise ValueError(f"labels {np.shape(labels)} and logits {np.shape(logits)} need one column per task of {tasks}")


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def gauc(labels: np.ndarray, scores: np.ndarray, users: np.ndarray) -> float:
    """AUC per user, averaged with each user's impression count as weight, over users who
    have both classes (a user with one class has no pairs to rank)."""
    labels, scores, users = np.asarray(labels), np.asarray(scores, dtype=np.float64), np.asarray(users)
    order = np.argsort(users, kind="mergesort")
    bounds = np.flatnonzero(np.r_[True, users[order][1:] != users[order][:-1], True])
    total = weight = 0.0
    for s, e in zip(bounds[:-1], bounds[1:]):
        idx = order[s:e]
        value = auc(labels[idx], scores[idx])
        if not np.isnan(value):
            total += value * (e - s)
            weight += e - s
    return total / weight if weight else float("nan")


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else float("nan")


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) in the logits' dtype, as exp(-log(1 + e^-x)): a diverged model's logits of
    -1000 (or -100 in float32) give 0 without numpy's overflow warning."""
    return np.exp(-np.logaddexp(0.0, -logits))


def task_metrics(labels: np.ndarray, logits: np.ndarray, users: np.ndarray,
                 tasks: tuple[str, ...] = TASKS) -> dict[str, dict[str, float]]:
    """labels, logits: [T, len(tasks)], in the spec's task order; users: [T] -> {task: {auc,
    gauc, logloss, positive_rate}}."""
    _check_columns(labels, logits, tasks)
    probs = sigmoid(np.asarray(logits, dtype=np.float64))
    out = {}
    for i, task in enumerate(tasks):
        y = labels[:, i]
        out[task] = {"auc": auc(y, logits[:, i]), "gauc": gauc(y, logits[:, i], users),
                     "logloss": logloss(y, probs[:, i]), "positive_rate": float(np.mean(y)) if len(y) else float("nan")}
    return out


class _SortedTask:
    """One task's targets sorted by score once, so that AUC under many weightings (the
    bootstrap's) costs O(n) each: a group of tied scores counts its pairs half."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray):
        self.order = np.argsort(np.asarray(scores, dtype=np.float64), kind="mergesort")
        sorted_scores = np.asarray(scores, dtype=np.float64)[self.order]
        self.starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        self.positive = np.asarray(labels).astype(bool)[self.order]

    def auc(self, weights: np.ndarray) -> float:
        w = np.asarray(weights, dtype=np.float64)[self.order]
        pos = np.add.reduceat(np.where(self.positive, w, 0.0), self.starts)  # per group of tied scores
        neg = np.add.reduceat(np.where(self.positive, 0.0, w), self.starts)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return float("nan")
        below = np.cumsum(neg) - neg  # negative weight strictly below each group
        return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """AUC where target i counts weights[i] times (integer weights: as if repeated)."""
    return _SortedTask(labels, scores).auc(weights)


def bootstrap_auc(labels: np.ndarray, logits: np.ndarray, users: np.ndarray, replicates: int = 200,
                  level: float = 0.95, seed: int = 0, tasks: tuple[str, ...] = TASKS) -> dict[str, tuple[float, float]]:
    """Percentile intervals of each task's AUC and of their mean ("mean"), resampling users
    with replacement. labels, logits: [T, len(tasks)]; users: [T]."""
    _check_columns(labels, logits, tasks)
    _, user_index = np.unique(np.asarray(users), return_inverse=True)
    sorted_tasks = [_SortedTask(labels[:, i], logits[:, i]) for i in range(len(tasks))]
    rng = np.random.default_rng(seed)
    n_users = int(user_index.max()) + 1 if len(user_index) else 0
    draws = np.empty((replicates, len(tasks)))
    for r in range(replicates):
        per_user = np.bincount(rng.integers(0, n_users, n_users), minlength=n_users)
        weights = per_user[user_index]  # a user drawn k times counts k times
        draws[r] = [t.auc(weights) for t in sorted_tasks]
    tail = (1 - level) / 2 * 100
    out = {task: tuple(float(v) for v in np.nanpercentile(draws[:, i], [tail, 100 - tail]))
           for i, task in enumerate(tasks)}
    out["mean"] = tuple(float(v) for v in np.nanpercentile(np.nanmean(draws, axis=1), [tail, 100 - tail]))
    return out

