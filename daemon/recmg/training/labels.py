"""Belady (OPT) labels for the caching and prefetch models: ``recmg label``.

For a trace and a fast-tier capacity, OPT (Belady's MIN with bypass: the C core's
``belady`` policy, tested against a brute-force optimum) is run over every access in
order, and each access gets two labels:

- ``keep``: OPT keeps this vector (or page) in fast memory until its next use: the
  Hawkeye-style label, and the caching model's target.  Under MIN with bypass, the
  next access of a key is a hit exactly when the key stayed resident since this one,
  so keep[i] = hit[next_use(i)] (False for a last use).
- ``hit``: this access is an OPT hit: the RecMG artifact's label (mostly "seen
  before"; docs/models.md says why it is the wrong target).

and the accesses OPT misses are written as a trace of their own: the stream the
prefetch model learns from.

Everything streams in chunks of ``chunk`` accesses.  Memory: the chunk, the OPT
cache, and one (key, first later position) pair per distinct key for the reverse
next-use pass; next uses and hits go through temporary files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recmg import progress
from recmg.safefile import atomic_output
from recmg.engine.layout import Layout
from recmg.engine.policy.cache import NEVER, Cache, next_use
from recmg.sim.source import id_to_position, positional
from recmg.trace import format as tf

LABEL_VERSION = 1
DEFINITIONS = {
    "keep": "OPT (Belady MIN with bypass, at the file's capacity) keeps this unit in fast "
            "memory until its next use; false for a last use",
    "hit": "this access is an OPT hit (the RecMG artifact's label)",
}


@dataclass(frozen=True)
class Labels:
    keep: np.ndarray  # bool per access
    hit: np.ndarray  # bool per access
    meta: dict

    @property
    def n(self) -> int:
        return len(self.hit)


def _units(trace: tf.Trace, granularity: str):
    """keys[lo:hi] -> the units OPT caches: vector keys, or per-table page keys in
    recmgd's layout."""
    lut = id_to_position(trace)
    layout = Layout.virtual(trace.tables) if granularity == "page" else None
    if granularity not in ("vector", "page"):
        raise ValueError(f"granularity must be vector or page, not {granularity!r}")

    def units(lo: int, hi: int) -> np.ndarray:
        k = positional(trace.keys[lo:hi], lut)
        return k if layout is None else layout.table_page_keys(k)

    return units


def _next_uses(units, n: int, chunk: int, out: np.ndarray, bar) -> int:
    """out[i] = position of the next access of unit i (NEVER if none), by a reverse
    pass over chunks.  The carry holds, per distinct unit seen in later chunks, its
    first position there.  Returns the number of distinct units."""
    carry_k = np.zeros(0, np.uint64)
    carry_p = np.zeros(0, np.uint64)
    for hi in range(n, 0, -chunk):
        lo = max(0, hi - chunk)
        k = units(lo, hi)
        nu = next_use(k)
        last = nu == NEVER
        nu[~last] += np.uint64(lo)
        at = np.searchsorted(carry_k, k[last])
        found = at < len(carry_k)
        found[found] = carry_k[at[found]] == k[last][found]
        tail = np.full(int(last.sum()), NEVER, np.uint64)
        tail[found] = carry_p[at[found]]
        nu[last] = tail
        out[lo:hi] = nu
        u, first = np.unique(k, return_index=True)
        allk = np.concatenate((u, carry_k))
        allp = np.concatenate((first.astype(np.uint64) + np.uint64(lo), carry_p))
        carry_k, pick = np.unique(allk, return_index=True)  # the chunk's entry wins
        carry_p = allp[pick]
        bar.update(hi - lo)
    return len(carry_k)


def capacity_of(size: float, distinct: int) -> int:
    """Below 1: a share of the distinct units (rounded as ``recmg sim`` does); from 1
    up: a count of units."""
    if not size > 0:
        raise ValueError(f"--size must be a share in (0, 1) or a count >= 1, got {size}")
    return max(1, int(round(size * distinct))) if size < 1 else int(size)


def label(trace: tf.Trace, size: float, granularity: str = "vector", chunk: int = 1 << 23,
          workdir: str | None = None, show_progress: bool = False) -> Labels:
    """OPT labels of every access (module docstring).  ``keep`` and ``hit`` are
    returned as arrays of one byte per access (memory-mapped temporary files for
    traces larger than a chunk)."""
    n = len(trace.keys)
    units = _units(trace, granularity)
    chunk = max(1, int(chunk))
    big = n > chunk
    tmp = tempfile.TemporaryDirectory(prefix="recmg-label-", dir=workdir) if big else None

    def array(name: str, dtype) -> np.ndarray:
        if not big:
            return np.zeros(n, dtype)
        return np.lib.format.open_memmap(os.path.join(tmp.name, name), "w+", dtype, (n,))

    t0 = time.perf_counter()
    nu = array("next_use.npy", np.uint64)
    with progress.bar(3 * n, "label", "access", show_progress) as bar:
        distinct = _next_uses(units, n, chunk, nu, bar)
        cap = capacity_of(size, distinct)
        opt = Cache("belady", cap)
        hit = array("hit.npy", bool)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            hit[lo:hi] = opt.access(units(lo, hi), nu[lo:hi])
            bar.update(hi - lo)
        keep = array("keep.npy", bool)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            nxt = nu[lo:hi]
            later = nxt != NEVER
            k = np.zeros(hi - lo, bool)
            k[later] = hit[nxt[later].astype(np.int64)]
            keep[lo:hi] = k
            bar.update(hi - lo)
    meta = {"label_version": LABEL_VERSION, "definitions": DEFINITIONS,
            "granularity": granularity, "size": size, "capacity": cap,
            "distinct_units": distinct, "accesses": n,
            "opt_hits": int(np.count_nonzero(hit)), "keep_positive": int(np.count_nonzero(keep)),
            "seconds": round(time.perf_counter() - t0, 3)}
    labels = Labels(keep=keep, hit=hit, meta=meta)
    if tmp is not None:  # the temporary files live as long as the arrays
        object.__setattr__(labels, "_tmp", tmp)
    return labels


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write(path: str | os.PathLike, labels: Labels, meta: dict | None = None) -> None:
    """An .npz with ``keep`` and ``hit`` packed 8 per byte (np.packbits), the access
    count and a JSON ``meta`` (label version, definitions, capacity, trace and its
    sha256, command).  Written atomically."""
    path = Path(path)
    m = {**labels.meta, **(meta or {})}
    with atomic_output(path) as f:
        np.savez_compressed(f, keep=np.packbits(labels.keep), hit=np.packbits(labels.hit),
                            n=np.array([labels.n], np.uint64),
                            meta=np.array(json.dumps(m, sort_keys=True)))


def read(path: str | os.PathLike) -> Labels:
    """Labels written by ``write``; a file of another label version is refused."""
    with np.load(path, allow_pickle=False) as z:
        try:
            meta = json.loads(str(z["meta"]))
            n = int(z["n"][0])
            keep = np.unpackbits(z["keep"], count=n).astype(bool)
            hit = np.unpackbits(z["hit"], count=n).astype(bool)
        except (KeyError, ValueError) as e:
            raise ValueError(f"{path}: not a recmg labels file ({e})") from None
    if meta.get("label_version") != LABEL_VERSION:
        raise ValueError(f"{path}: label version {meta.get('label_version')}, this recmg "
                         f"reads {LABEL_VERSION}")
    return Labels(keep=keep, hit=hit, meta=meta)


def write_misses(path: str | os.PathLike, trace: tf.Trace, hit: np.ndarray) -> int:
    """The accesses OPT missed, as a trace with the same tables and batches (each batch
    keeps its misses in order).  Returns how many."""
    offs = np.asarray(trace.batch_offsets, np.int64)
    # per batch (offline: a batch at a time keeps the temporaries to one batch)
    missed_per_batch = np.array([len(hit[lo:hi]) - int(np.count_nonzero(hit[lo:hi]))
                                 for lo, hi in zip(offs[:-1], offs[1:])], np.int64)
    shell = tf.Trace(tables=trace.tables, keys=np.zeros(0, np.uint64),
                     batch_offsets=np.concatenate(([0], np.cumsum(missed_per_batch))).astype(
                         np.uint64),
                     batch_ids=np.asarray(trace.batch_ids, np.uint64),
                     timestamps_ns=np.asarray(trace.timestamps_ns, np.uint64),
                     meta={**trace.meta, "opt_misses_of": trace.meta.get("source", "")})

    def batches():
        for b in range(len(offs) - 1):
            lo, hi = int(offs[b]), int(offs[b + 1])
            yield np.asarray(trace.keys[lo:hi], np.uint64)[~np.asarray(hit[lo:hi], bool)]

    tf.write_batches(path, shell, batches())
    return int(missed_per_batch.sum())
