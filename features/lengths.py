"""The training-length sampler: most-recent-suffix lengths from a U-shaped Beta.

L = min_len + s * (max_len - min_len), s ~ Beta(alpha, beta) with alpha, beta < 1, rounded
to a multiple of `multiple`. Mostly short windows (cheap) with a fat tail of long ones,
so the model learns to use long histories and extrapolates to full length at scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from longseq.schemas.contracts import DEFAULT_MAX_LEN


@dataclass(frozen=True)
class LengthSampler:
    min_len: int = 256
    max_len: int = DEFAULT_MAX_LEN  # the longest history a request record holds
    alpha: float = 0.1
    beta: float = 0.45  # mean = min + alpha/(alpha+beta) * (max-min), about 2k with these defaults
    multiple: int = 8

    def __post_init__(self) -> None:
        if self.multiple < 1:
            raise ValueError(f"multiple must be >= 1, got {self.multiple}")
        if not 0 < self.min_len <= self.max_len:
            raise ValueError(f"need 0 < min_len <= max_len, got {self.min_len}, {self.max_len}")
        if self._lo > self._hi:
            raise ValueError(f"no multiple of {self.multiple} in [{self.min_len}, {self.max_len}]")
        if not (self.alpha > 0 and self.beta > 0):
            raise ValueError(f"alpha and beta must be positive, got {self.alpha}, {self.beta}")

    @property
    def _lo(self) -> int:  # smallest multiple of `multiple` >= min_len
        return -(-self.min_len // self.multiple) * self.multiple

    @property
    def _hi(self) -> int:  # largest multiple of `multiple` <= max_len
        return self.max_len // self.multiple * self.multiple

    @property
    def mean(self) -> float:
        """Expected length before rounding."""
        return self.min_len + self.alpha / (self.alpha + self.beta) * (self.max_len - self.min_len)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n lengths (int64), each a multiple of `multiple` within [min_len, max_len]."""
        s = rng.beta(self.alpha, self.beta, size=n)
        raw = self.min_len + s * (self.max_len - self.min_len)
        rounded = np.rint(raw / self.multiple).astype(np.int64) * self.multiple
        return np.clip(rounded, self._lo, self._hi)
