"""The training-length sampler: most-recent-suffix lengths from a U-shaped Beta.

L = min_len + s * (max_len - min_len), s ~ Beta(alpha, beta) with alpha, beta < 1, rounded
to a multiple of `multiple`. Mostly short windows (cheap) with a fat tail of long ones,
so the model learns to use long histories and extrapolates to full length at scoring.

With `long_share` > 0 a request's window is instead `long_len` with that probability: a
two-part mixture of short windows and full-length ones (bench extrapolation's short+long).
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
    long_share: float = 0.0  # the share of windows of long_len instead of the Beta's draw
    long_len: int = DEFAULT_MAX_LEN

    def __post_init__(self) -> None:
        if self.multiple < 1:
            raise ValueError(f"multiple must be >= 1, got {self.multiple}")
        if not 0 < self.min_len <= self.max_len:
            raise ValueError(f"need 0 < min_len <= max_len, got {self.min_len}, {self.max_len}")
        if self._lo > self._hi:
            raise ValueError(f"no multiple of {self.multiple} in [{self.min_len}, {self.max_len}]")
        if not (self.alpha > 0 and self.beta > 0):
            raise ValueError(f"alpha and beta must be positive, got {self.alpha}, {self.beta}")
        if not 0 <= self.long_share <= 1:
            raise ValueError(f"long_share must be within [0, 1], got {self.long_share}")
        if self.long_len < 1:
            raise ValueError(f"long_len must be >= 1, got {self.long_len}")

    @property
    def _lo(self) -> int:  # smallest multiple of `multiple` >= min_len
        return -(-self.min_len // self.multiple) * self.multiple

    @property
    def _hi(self) -> int:  # largest multiple of `multiple` <= max_len
        return self.max_len // self.multiple * self.multiple

    @property
    def mean(self) -> float:
        """Expected length before rounding."""
        beta_mean = self.min_len + self.alpha / (self.alpha + self.beta) * (self.max_len - self.min_len)
        return (1 - self.long_share) * beta_mean + self.long_share * self.long_len

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n lengths (int64), each a multiple of `multiple` within [min_len, max_len]."""
        s = rng.beta(self.alpha, self.beta, size=n)
        raw = self.min_len + s * (self.max_len - self.min_len)
        rounded = np.clip(np.rint(raw / self.multiple).astype(np.int64) * self.multiple, self._lo, self._hi)
        if self.long_share > 0:  # drawn after the Beta, so that samplers without it draw as before
            rounded[rng.random(n) < self.long_share] = self.long_len
        return rounded
