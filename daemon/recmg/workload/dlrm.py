"""A DLRM-shaped inference model on numpy, its tables in registered memory.

Shape (Naumov et al., "Deep Learning Recommendation Model", 2019): a bottom MLP over
dense features; one embedding bag (sum pooling) per sparse feature; a dot
interaction of all pairs of [bottom output, pooled embeddings]; a top MLP and a
sigmoid.  Tables are allocated by recmg.client so recmgd can migrate their pages,
and every batch's lookups are recorded into the capture ring.

Sizes are free: a few MB for tests, tens of GB for a host run (rows x dim x 4 bytes
per table).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from recmg import native
from recmg.client import Client, alloc_table


FILL_BLOCK = 4096  # rows


@dataclass(frozen=True)
class ModelSpec:
    rows: tuple[int, ...]  # rows per table
    dim: int = 32
    dense_features: int = 13
    bottom: tuple[int, ...] = (64, 32)  # last must equal dim
    top: tuple[int, ...] = (64, 1)

    @property
    def table_bytes(self) -> int:
        return sum(self.rows) * self.dim * 4


def _mlp(rng, sizes):
    return [(rng.standard_normal((a, b), dtype=np.float32) * np.float32(1 / np.sqrt(a)),
             np.zeros(b, np.float32)) for a, b in zip(sizes[:-1], sizes[1:])]


def _forward_mlp(x, layers, last_sigmoid=False):
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            np.maximum(x, 0, out=x)
    return 1 / (1 + np.exp(-x)) if last_sigmoid else x


class DLRM:
    """Inference only.  ``client`` (a recmg.client.Client) is created when
    ``segment_name`` is given; otherwise tables are plain registered-layout memory
    with no recording (the uninstrumented baseline).  ``before_fill`` is called once the
    tables are mapped (and registered) but before any of their pages is touched:
    `recmg bench tiering` stops the process there to set the fast-memory budget
    before first touch places the pages."""

    def __init__(self, spec: ModelSpec, segment_name: str | None = None, seed: int = 0,
                 key_capacity: int = 1 << 22, prefer_node: int | None = None,
                 before_fill=None, layout: str | None = None):
        if spec.bottom[-1] != spec.dim:
            raise ValueError("the bottom MLP must end in the embedding dim")
        if layout is not None and not segment_name:
            raise ValueError("a row layout is applied by the client: not with an "
                             "uninstrumented run")
        self.spec = spec
        rng = np.random.default_rng(seed)
        names = [f"t{i}" for i in range(len(spec.rows))]
        if segment_name:
            # with a layout the fill below writes each row at its position: no row moves
            # after, and no page is touched before the fill
            self.client = Client(segment_name, [(n, r, spec.dim) for n, r in zip(names, spec.rows)],
                                 key_capacity=key_capacity, layout=layout,
                                 rows_in_layout=True)
            self.tables = [self.client.tables[n] for n in names]
        else:
            self.client = None
            self._maps = []
            self.tables = []
            for r in spec.rows:
                arr, m = alloc_table(r, spec.dim)
                self.tables.append(arr)
                self._maps.append(m)
        if prefer_node is not None:  # place the tables' pages there on first touch
            for t in self.tables:
                native.mbind(t.ctypes.data, t.nbytes + (-t.nbytes) % 4096,
                             native.MPOL_PREFERRED, [prefer_node])
        if before_fill is not None:
            before_fill()
        # Deterministic contents, every row distinct: a random block of 4096 rows, shifted
        # per block (drawing every value took most of a minute under TCG for 200 MiB).
        block = rng.standard_normal((FILL_BLOCK, spec.dim), dtype=np.float32) * np.float32(0.01)
        laid = self.client is not None and self.client.layout is not None
        for i, t in enumerate(self.tables):
            for lo in range(0, len(t), FILL_BLOCK):
                n = min(FILL_BLOCK, len(t) - lo)
                if not laid:
                    np.add(block[:n], np.float32(lo / len(t)), out=t[lo:lo + n])
                    continue
                # position p holds row perm[p]: row r's contents are block[r % FILL_BLOCK]
                # plus its block's start / rows, as without a layout
                rows = self.client.rows_at(i, lo, lo + n)
                start = (rows - rows % FILL_BLOCK) / len(t)
                np.add(block[rows % FILL_BLOCK], start.astype(np.float32)[:, None],
                       out=t[lo:lo + n])
        if prefer_node is not None:
            # Placed: drop the range's policy again. Automatic NUMA balancing skips a VMA
            # that has a policy of its own without MPOL_F_MOF (vma_policy_mof(),
            # kernel/sched/fair.c), so a leftover MPOL_PREFERRED would hide the tables
            # from the kernel's tiering (numa_balancing=2).
            for t in self.tables:
                native.mbind(t.ctypes.data, t.nbytes + (-t.nbytes) % 4096,
                             native.MPOL_DEFAULT, [])
        self.bottom = _mlp(rng, (spec.dense_features, *spec.bottom))
        n = len(spec.rows) + 1
        self._tri = np.triu_indices(n, k=1)
        self.top = _mlp(rng, (spec.dim + len(self._tri[0]), *spec.top))
        self.embedding_seconds = 0.0

    def embed(self, indices: list[np.ndarray], offsets: list[np.ndarray]) -> np.ndarray:
        """Pooled embeddings (batch, tables, dim): sum over each bag."""
        t0 = time.perf_counter()
        if self.client is not None:
            if self.client.layout is not None:  # rows -> where they are now
                indices = [self.client.positions(t, ix) for t, ix in enumerate(indices)]
            self.client.record(indices)
        batch = len(offsets[0])
        out = np.empty((batch, len(self.tables), self.spec.dim), np.float32)
        for t, (table, ix, off) in enumerate(zip(self.tables, indices, offsets)):
            if not len(ix):
                out[:, t, :] = 0
                continue
            out[:, t, :] = np.add.reduceat(table[ix], off, axis=0)
            empty = np.diff(off, append=len(ix)) == 0  # reduceat copies a row for these
            if empty.any():
                out[empty, t, :] = 0
        self.embedding_seconds += time.perf_counter() - t0
        return out

    def forward(self, dense: np.ndarray, indices: list[np.ndarray],
                offsets: list[np.ndarray]) -> np.ndarray:
        """Click probabilities (batch,).  offsets[t] are the bag starts into indices[t]
        (non-decreasing; an empty bag pools to zero)."""
        x = _forward_mlp(dense, self.bottom)
        emb = self.embed(indices, offsets)
        feats = np.concatenate([x[:, None, :], emb], axis=1)
        inter = np.einsum("bid,bjd->bij", feats, feats)[:, self._tri[0], self._tri[1]]
        return _forward_mlp(np.concatenate([x, inter], axis=1), self.top, True)[:, 0]

    def checksum(self) -> str:
        """sha256 over every table's bytes (contents must survive page moves)."""
        import hashlib

        h = hashlib.sha256()
        for t in self.tables:
            h.update(memoryview(t).cast("B"))
        return h.hexdigest()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
