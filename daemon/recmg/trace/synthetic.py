"""Synthetic DLRM lookup traces calibrated to Meta's published locality statistics.

Model (docs/synthetic.md gives the reasoning and the calibration):

- Table t has ``rows[t]`` rows; every sample looks up ``pooling[t]`` of them.
- Row popularity follows a bounded Zipf law over ranks with exponent ``alpha[t]``.
  A rank maps to a row id through a bijective affine hash,
  ``(rank * a + b + epoch * c) mod rows``, with a coprime to rows. Hot rows are
  therefore scattered across the table, as post-hash ids are in production. This
  needs O(1) memory for any table size.
- Cross-table correlation: a Gaussian copula. Each sample has a latent z; its lookup
  in every table uses u = Phi(rho * z + sqrt(1 - rho^2) * e). A popular user tends to
  hit popular rows in all tables.
- Hot-set drift: ranks fall into 64 groups (rank mod 64). Group g's ``epoch``
  advances every ``drift_period`` batches, staggered by g. About 1/drift_period of the
  hot set moves to new rows each batch. This gives long reuse distances across
  batches, which is what RecMG targets.
- Few-reuse vectors: a share ``cold_frac`` of lookups go to uniformly random rows.

Presets ``meta2021`` and ``meta2022`` use the published table counts, batch sizes and
lookups per batch. Their per-table parameters are drawn deterministically from the
seed, and the access-weighted reuse histogram lands within 10% per bin of the
published one (tests/unit/test_synthetic.py, docs/results.md). ``*-small`` presets
scale tables and batch down for tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from recmg.trace.format import TableInfo, Trace, make_keys

DRIFT_GROUPS = 64


@dataclass(frozen=True)
class SyntheticSpec:
    rows: tuple[int, ...]
    pooling: tuple[int, ...]
    batch_size: int = 256
    alpha: float | tuple[float, ...] = 1.05
    seed: int = 0
    corr: float = 0.0  # copula correlation across a sample's tables, 0..1
    drift_period: int = 0  # batches between remaps of a rank group; 0 = no drift
    cold_frac: float = 0.0  # share of uniformly random lookups
    row_bytes: int = 256
    name: str = "synthetic"

    def __post_init__(self):
        if len(self.rows) != len(self.pooling) or not self.rows:
            raise ValueError("rows and pooling need one entry per table")
        if any(r < 1 for r in self.rows) or any(p < 1 for p in self.pooling):
            raise ValueError("rows and pooling must be at least 1")
        if self.batch_size < 1 or not 0 <= self.corr <= 1 or not 0 <= self.cold_frac <= 1:
            raise ValueError("batch_size >= 1, 0 <= corr <= 1, 0 <= cold_frac <= 1")
        if any(a <= 0 for a in self.alphas):
            raise ValueError("alpha must be positive")

    @property
    def alphas(self) -> tuple[float, ...]:
        a = self.alpha
        return tuple(a) if isinstance(a, tuple) else (float(a),) * len(self.rows)

    @property
    def lookups_per_batch(self) -> int:
        return self.batch_size * sum(self.pooling)


def zipf_ranks(u: np.ndarray, n_rows: int, alpha: float) -> np.ndarray:
    """Ranks in [0, n_rows) from uniforms u, P(rank k) ~ (k+1)^-alpha (inverse CDF of
    the continuous bounded power law)."""
    if abs(alpha - 1.0) < 1e-9:
        x = np.exp(u * math.log(n_rows + 1))
    else:
        e = 1.0 - alpha
        x = (((n_rows + 1) ** e - 1.0) * u + 1.0) ** (1.0 / e)
    return np.minimum(x.astype(np.int64) - 1, n_rows - 1).clip(0)


def _affine(n_rows: int, rng: np.random.Generator) -> tuple[int, int, int]:
    a = int(rng.integers(1, max(n_rows, 2))) | 1
    while math.gcd(a, n_rows) != 1:
        a += 2
    c = int(n_rows * 0.6180339887) | 1
    return a % max(n_rows, 1) or 1, int(rng.integers(0, n_rows)), c


def _phi(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF (logistic approximation, max error 0.01)."""
    return 1.0 / (1.0 + np.exp(-1.702 * z))


class Generator:
    """Batches of a spec, in order; ``batch(b)`` is deterministic for (spec, b)."""

    def __init__(self, spec: SyntheticSpec):
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        self.maps = [_affine(r, rng) for r in spec.rows]
        self.stagger = [int(x) for x in rng.integers(0, 1 << 30, len(spec.rows))]

    def table_rows(self, t: int, b: int, z_sample: np.ndarray | None,
                   rng: np.random.Generator) -> np.ndarray:
        """Rows table t looks up in batch b, sample-major (batch_size x pooling)."""
        s = self.spec
        n_rows, p = s.rows[t], s.pooling[t]
        n = s.batch_size * p
        if z_sample is not None and s.corr > 0:
            z = s.corr * np.repeat(z_sample, p) + math.sqrt(1 - s.corr ** 2) * \
                rng.standard_normal(n)
            u = _phi(z)
        else:
            u = rng.random(n)
        ranks = zipf_ranks(u, n_rows, s.alphas[t])
        a, off, c = self.maps[t]
        rows = ranks * a + off
        if s.drift_period > 0:
            group = ranks % DRIFT_GROUPS
            stagger = (group * s.drift_period) // DRIFT_GROUPS + self.stagger[t]
            epoch = (b + stagger) // s.drift_period
            rows += epoch * c
        rows %= n_rows
        if s.cold_frac > 0:
            cold = rng.random(n) < s.cold_frac
            rows[cold] = rng.integers(0, n_rows, int(cold.sum()))
        return rows

    def batch_tables(self, b: int) -> Iterator[np.ndarray]:
        """Per-table row arrays of batch b (each batch_size * pooling[t] long), one
        table at a time: only one table's rows and temporaries are alive at once."""
        rng = np.random.default_rng((self.spec.seed, b))
        z = rng.standard_normal(self.spec.batch_size) if self.spec.corr > 0 else None
        for t in range(len(self.spec.rows)):
            yield self.table_rows(t, b, z, rng)

    def batch(self, b: int) -> list[np.ndarray]:
        """Per-table row arrays of batch b (each batch_size * pooling[t] long)."""
        return list(self.batch_tables(b))


def batches(spec: SyntheticSpec, n_batches: int, start: int = 0
            ) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Yield (indices, offsets) per batch: indices[t] int64 rows of table t, offsets[t]
    the bag starts (batch_size bags of pooling[t] rows each)."""
    gen = Generator(spec)
    offsets = [np.arange(spec.batch_size, dtype=np.int64) * p for p in spec.pooling]
    for b in range(start, start + n_batches):
        yield gen.batch(b), offsets


def _batch_keys(gen: Generator, b: int, out: np.ndarray) -> None:
    """Batch b's keys into out (batch_size x sum(pooling)), sample-major."""
    spec = gen.spec
    col = np.cumsum((0,) + spec.pooling)
    block = out.reshape(spec.batch_size, col[-1])
    for t, rows in enumerate(gen.batch_tables(b)):
        block[:, col[t]:col[t + 1]] = make_keys(t, rows).reshape(spec.batch_size, -1)


def _shell(spec: SyntheticSpec, n_batches: int, keys: np.ndarray) -> Trace:
    offsets = np.arange(n_batches + 1, dtype=np.uint64) * np.uint64(spec.lookups_per_batch)
    tables = [TableInfo(t, f"t{t}", r, spec.row_bytes) for t, r in enumerate(spec.rows)]
    return Trace(tables=tables, keys=keys, batch_offsets=offsets,
                 meta={"source": "synthetic", "preset": spec.name, "seed": spec.seed,
                       "batch_size": spec.batch_size})


def trace(spec: SyntheticSpec, n_batches: int) -> Trace:
    """A Trace of n_batches, keys in sample-major order (sample s: table 0's bag,
    table 1's bag, ...), as an inference batch reads them."""
    gen = Generator(spec)
    n = spec.lookups_per_batch
    keys = np.empty(n_batches * n, np.uint64)
    for b in range(n_batches):
        _batch_keys(gen, b, keys[b * n:(b + 1) * n])
    return _shell(spec, n_batches, keys)


def batch_memory_bytes(spec: SyntheticSpec) -> int:
    """Peak memory while write() makes one batch: its keys (8 B each), plus the largest
    table's rows and temporaries (about ten 8-byte arrays of its lookups: normals,
    uniforms, ranks, rows, drift groups, keys), plus a quarter for the allocator."""
    n = spec.lookups_per_batch
    return int(1.25 * (8 * n + 10 * 8 * spec.batch_size * max(spec.pooling)))


def write(path, spec: SyntheticSpec, n_batches: int) -> int:
    """Write n_batches to an .rtrace file one batch at a time (memory: one batch, see
    batch_memory_bytes); returns the key count."""
    from recmg.trace import format as tf

    gen = Generator(spec)
    n = spec.lookups_per_batch
    buf = np.empty(n, np.uint64)

    def fill(b):
        _batch_keys(gen, b, buf)
        return buf

    tf.write_batches(path, _shell(spec, n_batches, np.zeros(0, np.uint64)),
                     (fill(b) for b in range(n_batches)))
    return n_batches * n


# ------------------------------------------------------------------------ presets
@dataclass(frozen=True)
class PresetShape:
    """How a preset draws per-table parameters (all deterministic from seed)."""

    tables: int
    batch_size: int
    mean_pooling: float  # published lookups per batch / (tables * batch_size)
    pooling_sigma: float
    rows_log10: tuple[float, float]  # log-uniform table sizes
    alpha: tuple[float, float]  # uniform Zipf exponents
    corr: float = 0.3
    drift_period: int = 50
    cold_frac: float = 0.0
    seed: int = 2021
    extra: dict = field(default_factory=dict)


PRESETS: dict[str, PresetShape] = {
    # fbgemm_t856_bs65536_{0..15}.pt: 856 tables, 65,536 samples, 468.1 M lookups
    "meta2021": PresetShape(tables=856, batch_size=65536, mean_pooling=468.1e6 / 856 / 65536,
                            pooling_sigma=1.0, rows_log10=(2.5, 7.5), alpha=(0.5, 1.15),
                            cold_frac=0.005, seed=2021),
    # fbgemm_t788_bs131072_{0..15}.pt: 788 tables, 131,072 samples, 1,405 M lookups
    "meta2022": PresetShape(tables=788, batch_size=131072, mean_pooling=1405.2e6 / 788 / 131072,
                            pooling_sigma=1.0, rows_log10=(2.5, 7.5), alpha=(0.5, 1.15),
                            cold_frac=0.005, seed=2022),
}


def preset(name: str, scale: float = 1.0, seed: int | None = None) -> SyntheticSpec:
    """A preset spec.  ``meta2021-small``/``meta2022-small`` (or ``scale`` < 1) shrink
    the number of tables, the batch and the table sizes by the same factor, keeping
    the per-table popularity shape."""
    base, _, suffix = name.partition("-")
    if base not in PRESETS or suffix not in ("", "small"):
        raise ValueError(f"unknown preset {name!r}; known: "
                         + ", ".join(sorted(PRESETS) + [p + "-small" for p in sorted(PRESETS)]))
    shape = PRESETS[base]
    if suffix == "small":
        scale = min(scale, 1 / 64)
    rng = np.random.default_rng(shape.seed if seed is None else seed)
    n = shape.tables
    rows = 10 ** rng.uniform(*shape.rows_log10, n)
    mu = math.log(shape.mean_pooling) - shape.pooling_sigma ** 2 / 2
    pooling = np.maximum(1, np.round(rng.lognormal(mu, shape.pooling_sigma, n))).astype(int)
    # Larger tables get steeper popularity (a few very hot rows among many); small
    # tables are closer to uniform.  70% of alpha's range follows log table size.
    lo, hi = shape.alpha
    where = (np.log10(rows) - shape.rows_log10[0]) / (shape.rows_log10[1] - shape.rows_log10[0])
    alpha = lo + (hi - lo) * (0.7 * where + 0.3 * rng.random(n))
    if scale < 1:
        keep = max(1, int(round(n * scale)))
        idx = rng.choice(n, keep, replace=False)
        rows, pooling, alpha = rows[idx] * scale, pooling[idx], alpha[idx]
    batch = max(1, int(round(shape.batch_size * scale)))
    return SyntheticSpec(rows=tuple(int(max(16, r)) for r in rows),
                         pooling=tuple(int(p) for p in pooling), batch_size=batch,
                         alpha=tuple(float(a) for a in alpha), corr=shape.corr,
                         drift_period=shape.drift_period, cold_frac=shape.cold_frac,
                         seed=shape.seed if seed is None else seed, name=name)


def with_tables(spec: SyntheticSpec, idx) -> SyntheticSpec:
    """The same spec restricted to some tables (for estimating statistics)."""
    return replace(spec, rows=tuple(spec.rows[i] for i in idx),
                   pooling=tuple(spec.pooling[i] for i in idx),
                   alpha=tuple(spec.alphas[i] for i in idx))
