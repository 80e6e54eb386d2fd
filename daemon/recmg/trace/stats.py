"""Per-batch reuse statistics in the layout of Meta's dlrm_datasets locality_stats.txt.

For each inference batch: the number of lookups (indices), of distinct vectors
("unique cols"), and the histogram of how often each distinct vector is read within
the batch ("col size"), in doubling bins (0,1], (1,2], (2,4] ... (16384,32768],
32768+.  "Histogram of col sizes" weights each distinct vector once; "Ratio of index
distribution" weights by accesses.  Both are averaged over batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EDGES = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
LABELS = [f"({a}, {b}]" for a, b in zip(EDGES[:-1], EDGES[1:])] + ["(32768+"]


@dataclass
class Locality:
    batches: int
    batch_size: int | None
    indices: float  # average lookups per batch
    unique: float  # average distinct vectors per batch
    unique_hist: np.ndarray  # 17 shares
    access_hist: np.ndarray  # 17 shares

    @property
    def col_size(self) -> float:
        return self.indices / self.unique if self.unique else 0.0


def _bin(counts: np.ndarray) -> np.ndarray:
    """Bin index of each count: (0,1]->0, (1,2]->1, (2,4]->2, ..., >32768 -> 16."""
    return np.minimum(np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64), 16)


def count_hist(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique-weighted, access-weighted) bin totals for per-vector counts."""
    b = _bin(counts)
    return (np.bincount(b, minlength=17).astype(np.float64),
            np.bincount(b, weights=counts, minlength=17))


def batch_counts(keys: np.ndarray) -> np.ndarray:
    """How often each distinct key occurs in keys."""
    return np.unique(keys, return_counts=True)[1]


def locality(batches, batch_size: int | None = None) -> Locality:
    """Statistics over an iterable of batches.  A batch is a key array, or a list of
    arrays whose values never collide across arrays (e.g. one row array per table),
    which is counted part by part to bound memory."""
    u_sum, a_sum = np.zeros(17), np.zeros(17)
    n = idx = uniq = 0
    for batch in batches:
        parts = batch if isinstance(batch, list) else [batch]
        uh, ah = np.zeros(17), np.zeros(17)
        for part in parts:
            counts = batch_counts(np.asarray(part))
            pu, pa = count_hist(counts)
            uh += pu
            ah += pa
            idx += int(counts.sum())
            uniq += len(counts)
        if ah.sum():
            u_sum += uh / uh.sum()
            a_sum += ah / ah.sum()
        n += 1
    n = max(n, 1)
    return Locality(n, batch_size, idx / n, uniq / n, u_sum / n, a_sum / n)


def render(name: str, loc: Locality) -> str:
    """Text in the exact layout of locality_stats.txt (one entry)."""
    def block(title, hist):
        lines = [title] + [f"{lab}: {v:.3f}" for lab, v in zip(LABELS, hist)]
        cum = np.concatenate(([0.0], np.cumsum(hist)))
        lines.append(str(EDGES))
        lines.append(str([f"{min(c, 1.0):.3f}" for c in cum]))
        return lines

    out = [name, f"Locality stats after processing {loc.batches} batches of size "
                 f"{loc.batch_size if loc.batch_size is not None else 'unknown'}",
           f"Avg # of indices: {loc.indices:.0f}", f"Avg # of unique cols: {loc.unique:.0f}",
           f"Avg col size: {loc.col_size:.1f}"]
    out += block("Histogram of col sizes:", loc.unique_hist)
    out += block("Ratio of index distribution at different column sizes:", loc.access_hist)
    return "\n".join(out) + "\n"


def parse_published(text: str) -> dict[str, Locality]:
    """Entries of a published locality_stats.txt, by file name."""
    out: dict[str, Locality] = {}
    for chunk in text.strip().split("\n\n"):
        lines = chunk.strip().splitlines()
        name = lines[0].strip()
        head = lines[1].split()
        vals = {}
        for ln in lines[2:5]:
            k, _, v = ln.partition(":")
            vals[k.strip()] = float(v)
        hists = []
        for i, ln in enumerate(lines):
            if ln.startswith("Histogram of col sizes") or ln.startswith("Ratio of index"):
                hists.append(np.array([float(x.split(":")[1]) for x in lines[i + 1:i + 18]]))
        out[name] = Locality(int(head[4]), int(head[-1]), vals["Avg # of indices"],
                             vals["Avg # of unique cols"], hists[0], hists[1])
    return out
