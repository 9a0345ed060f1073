"""Action bit flags: the labels of one event packed into one int (default spec: finish 1, skip 2,
like 4, comment 8; any spec: task i is 1 << i, in the spec's task order)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from longseq.schemas.contracts import TASKS


def action_bits(tasks: Sequence[str] = TASKS) -> dict[str, int]:
    return {task: 1 << i for i, task in enumerate(tasks)}


def num_actions(tasks: Sequence[str] = TASKS) -> int:
    """Distinct flag values, for an embedding table."""
    return 1 << len(tasks)


ACTION_BITS: dict[str, int] = action_bits()
NUM_ACTIONS = num_actions()


def encode_actions(labels: Mapping[str, Any], tasks: Sequence[str] = TASKS) -> Any:
    """Sum of label * bit over the tasks.

    Works on anything with * and +: numpy arrays, torch tensors, polars expressions and
    Spark columns, so the ETL engines and the trainer share this one definition. Labels
    must already be 0/1 (invalid rows are quarantined before this).
    """
    total: Any = 0
    for task, bit in action_bits(tasks).items():
        total = labels[task] * bit + total
    return total


def decode_actions(flags: np.ndarray, tasks: Sequence[str] = TASKS) -> dict[str, np.ndarray]:
    """Inverse of encode_actions: task -> 0/1 int8 array."""
    flags = np.asarray(flags)
    return {task: ((flags & bit) != 0).astype(np.int8) for task, bit in action_bits(tasks).items()}
