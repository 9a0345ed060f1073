"""Action bit flags: the labels of one event packed into one int (finish 1, skip 2, like 4, comment 8)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from schemas.contracts import TASKS

ACTION_BITS: dict[str, int] = {task: 1 << i for i, task in enumerate(TASKS)}
NUM_ACTIONS = 1 << len(TASKS)  # distinct flag values, for an embedding table


def encode_actions(labels: Mapping[str, Any]) -> Any:
    """Sum of label * bit over the tasks.

    Works on anything with * and +: numpy arrays, torch tensors, polars expressions and
    Spark columns, so the ETL engines and the trainer share this one definition. Labels
    must already be 0/1 (invalid rows are quarantined before this).
    """
    total: Any = 0
    for task, bit in ACTION_BITS.items():
        total = labels[task] * bit + total
    return total


def decode_actions(flags: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse of encode_actions: task -> 0/1 int8 array."""
    flags = np.asarray(flags)
    return {task: ((flags & bit) != 0).astype(np.int8) for task, bit in ACTION_BITS.items()}
