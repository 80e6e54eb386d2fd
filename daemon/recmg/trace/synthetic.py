"""Synthetic DLRM lookup batches: power-law row popularity with shuffled row ids.

Each table t has ``rows[t]`` rows and every sample looks up ``pooling[t]`` of them.
Row popularity follows a bounded Zipf law over ranks (exponent ``alpha``); ranks map
to row ids through a bijective affine hash (rank * a + b mod rows, a coprime with
rows), so hot rows are scattered across the table as post-hash ids are in
production, with O(1) memory for any table size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SyntheticSpec:
    rows: tuple[int, ...]
    pooling: tuple[int, ...]
    batch_size: int = 256
    alpha: float = 1.05
    seed: int = 0

    def __post_init__(self):
        if len(self.rows) != len(self.pooling) or not self.rows:
            raise ValueError("rows and pooling need one entry per table")
        if self.alpha <= 0 or any(r < 1 for r in self.rows) or self.batch_size < 1:
            raise ValueError("alpha, rows and batch_size must be positive")


def zipf_ranks(rng: np.random.Generator, n_rows: int, alpha: float, size: int) -> np.ndarray:
    """Ranks in [0, n_rows) with P(rank k) ~ (k+1)^-alpha (continuous inverse CDF)."""
    u = rng.random(size)
    if abs(alpha - 1.0) < 1e-9:
        x = np.exp(u * math.log(n_rows + 1))
    else:
        e = 1.0 - alpha
        x = ((n_rows + 1) ** e - 1.0) * u + 1.0
        x = x ** (1.0 / e)
    return np.minimum(x.astype(np.int64) - 1, n_rows - 1).clip(0)


def _affine(n_rows: int, rng: np.random.Generator) -> tuple[int, int]:
    a = int(rng.integers(1, max(n_rows, 2))) | 1
    while math.gcd(a, n_rows) != 1:
        a += 2
    return a % max(n_rows, 1) or 1, int(rng.integers(0, n_rows))


def batches(spec: SyntheticSpec, n_batches: int
            ) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Yield (indices, offsets) per batch: indices[t] int64 rows of table t, offsets[t]
    the bag starts (batch_size bags of pooling[t] rows each)."""
    rng = np.random.default_rng(spec.seed)
    maps = [_affine(r, rng) for r in spec.rows]
    offsets = [np.arange(spec.batch_size, dtype=np.int64) * p for p in spec.pooling]
    for _ in range(n_batches):
        idx = []
        for (a, b), r, p in zip(maps, spec.rows, spec.pooling):
            ranks = zipf_ranks(rng, r, spec.alpha, spec.batch_size * p)
            idx.append((ranks * a + b) % r)
        yield idx, offsets
