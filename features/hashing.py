"""Id hashing into a fixed vocabulary, and the 64-bit mixer it is built on."""

from __future__ import annotations

import hashlib
from typing import Any

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


def name_salt(name: str) -> int:
    """A stable 32-bit salt from a name (Python's hash() of a str changes between runs)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def hash_ids(ids: Any, vocab_size: int, salt: int = 0) -> Any:
    """Map int64 ids to [1, vocab_size) as int64; row 0 of an embedding table stays for padding.

    Accepts numpy arrays and torch tensors (same values), so the model can hash on its device."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    if not isinstance(ids, (np.ndarray, int, np.integer)):
        return _hash_ids_torch(ids, vocab_size, salt)
    h = mix64(np.asarray(ids, dtype=np.int64).view(np.uint64), salt)
    return (h % np.uint64(vocab_size - 1)).astype(np.int64) + 1


def _signed(u: int) -> int:  # a uint64 constant as the int64 with the same bits
    return u - (1 << 64) if u >= 1 << 63 else u


def _hash_ids_torch(ids: Any, vocab_size: int, salt: int) -> Any:
    """splitmix64 on int64 tensors: multiplication wraps alike; right shifts are made logical.
    Left out of torch.compile graphs: inductor's range analysis overflows on the wrapping
    arithmetic (it runs eagerly, a few elementwise ops)."""
    import torch

    return torch.compiler.disable(_splitmix_remainder)(ids, vocab_size, salt)


def _splitmix_remainder(ids: Any, vocab_size: int, salt: int) -> Any:
    import torch

    def shr(z: torch.Tensor, s: int) -> torch.Tensor:
        return (z >> s) & ((1 << (64 - s)) - 1)

    z = ids.to(torch.int64) + _signed((salt * _GOLDEN) & _MASK64)
    z = (z ^ shr(z, 30)) * _signed(int(_M1))
    z = (z ^ shr(z, 27)) * _signed(int(_M2))
    z = z ^ shr(z, 31)
    m = vocab_size - 1
    # z holds a uint64's bits: for negative z the unsigned value is z + 2**64
    r = torch.remainder(z, m)
    r = torch.where(z < 0, torch.remainder(r + (1 << 64) % m, m), r)
    return r + 1
