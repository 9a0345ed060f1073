"""Id hashing into a fixed vocabulary, and the 64-bit mixer it is built on."""

from __future__ import annotations

import numpy as np

_MASK64 = (1 << 64) - 1
# splitmix64 finalizer constants (Steele, Lea, Flood 2014): a bijection on uint64.
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = 0x9E3779B97F4A7C15


def mix64(x: np.ndarray | int, salt: int = 0) -> np.ndarray:
    """splitmix64 of (x + salt * golden), elementwise, as uint64.

    A bijection for a fixed salt, so distinct inputs give distinct outputs: the generator
    uses it for unique ids, hash_ids for vocabularies.
    """
    z = np.asarray(x).astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += np.uint64((salt * _GOLDEN) & _MASK64)
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def hash_ids(ids: np.ndarray, vocab_size: int, salt: int = 0) -> np.ndarray:
    """Map int64 ids to [1, vocab_size) as int64; row 0 of an embedding table stays for padding."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    h = mix64(np.asarray(ids, dtype=np.int64).view(np.uint64), salt)
    return (h % np.uint64(vocab_size - 1)).astype(np.int64) + 1
