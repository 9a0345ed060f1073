"""Log-scale buckets of the time between a history event and the request."""

from __future__ import annotations

from typing import Any

import numpy as np

BUCKETS_PER_OCTAVE = 2  # two buckets per doubling of the delay: 0.4 s, 1 s, 1.8 s, 3 s, ...
NUM_TIME_BUCKETS = 64  # the last bucket holds everything from about 68 years on


def time_delta_bucket(delta_ms: Any) -> Any:
    """floor(2 * log2(1 + delta_seconds)), clipped to [0, NUM_TIME_BUCKETS).

    delta_ms = request_ts - event_ts (> 0 for history). Accepts numpy arrays (-> int64)
    and torch tensors (-> int64 on the same device), so the reader and the model share it.
    """
    if isinstance(delta_ms, np.ndarray) or np.isscalar(delta_ms):
        s = np.maximum(np.asarray(delta_ms, dtype=np.float64), 0.0) / 1000.0
        return np.clip(np.floor(BUCKETS_PER_OCTAVE * np.log2(1.0 + s)), 0, NUM_TIME_BUCKETS - 1).astype(np.int64)
    import torch

    s = delta_ms.to(torch.float64).clamp_min(0.0) / 1000.0
    return torch.floor(BUCKETS_PER_OCTAVE * torch.log2(1.0 + s)).clamp(0, NUM_TIME_BUCKETS - 1).to(torch.int64)
