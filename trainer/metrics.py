"""Ranking metrics per task: AUC, GAUC (per user, impression-weighted) and logloss.

Pure numpy over whole evaluation sets. AUC is the Mann-Whitney statistic with tied scores
counted half, so it equals the fraction of (positive, negative) pairs ranked right.
"""

from __future__ import annotations

import numpy as np

from schemas.contracts import TASKS


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


def task_metrics(labels: np.ndarray, logits: np.ndarray, users: np.ndarray) -> dict[str, dict[str, float]]:
    """labels, logits: [T, len(TASKS)]; users: [T] -> {task: {auc, gauc, logloss, positive_rate}}."""
    probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    out = {}
    for i, task in enumerate(TASKS):
        y = labels[:, i]
        out[task] = {"auc": auc(y, logits[:, i]), "gauc": gauc(y, logits[:, i], users),
                     "logloss": logloss(y, probs[:, i]), "positive_rate": float(np.mean(y)) if len(y) else float("nan")}
    return out
