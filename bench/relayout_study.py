"""Re-layout on drifting traces: what a static layout loses as the hot set moves, and
what re-laying rows while serving would win back (docs/results.md, "Row layouts:
re-layout study").  Prints Markdown.

    python bench/relayout_study.py [--batches 80] [--half-life 8]
                                   [--budgets 64,256,1024] [--every 10]

Each trace's first quarter makes the initial layout (decayed access counts, as
``recmg layout``); the rest is replayed in page mode with S3-FIFO and LRU at 5% and 10%
of its distinct pages (the original layout's), under:
- no layout;
- the static layout;
- a full re-layout every ``--every`` batches from the decayed counts so far (what the
  client's relayout would do), each costing as many row copies as rows that move;
- incremental swaps: after each batch, at most B row swaps per table budget (split over
  the tables by their band size) between the band's coldest rows and the hottest rows
  outside it, where the outside row's decayed count is higher (2 row copies a swap).
The keys a client would record under each layout schedule are replayed, so pages
mean what they would on the host; the table reports page reads and row copies per
batch (what a re-layout costs in memory traffic).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from recmg.rowlayout import permute
from recmg.sim import modes
from recmg.trace import format as tf
from recmg.trace import synthetic

SHIFT = np.uint64(tf.TABLE_SHIFT)


def _split(trace: tf.Trace):
    """Per batch: (table positions, rows) of its keys."""
    offs = np.asarray(trace.batch_offsets, np.int64)
    ids = [t.id for t in trace.tables]
    lut = np.zeros(max(ids) + 1, np.int64)
    lut[ids] = np.arange(len(ids))
    keys = np.asarray(trace.keys, np.uint64)
    t = lut[(keys >> SHIFT).astype(np.intp)]
    r = (keys & np.uint64(tf.ROW_MASK)).astype(np.int64)
    return [(t[offs[b]:offs[b + 1]], r[offs[b]:offs[b + 1]]) for b in range(len(offs) - 1)]


class Schedule:
    """Per table: position of each row (inv) and row at each position (perm), the
    band size, and decayed counts."""

    def __init__(self, rows: list[int], counts: list[np.ndarray], decay: float):
        self.decay = decay
        self.counts = [c.copy() for c in counts]
        self.hot = [int((c > 0).sum()) for c in counts]
        self.perm = [permute.positions(n, np.argsort(-c, kind="stable")[:h])
                     for n, c, h in zip(rows, counts, self.hot)]
        self.inv = [permute.inverse(p) for p in self.perm]
        self.copies = 0

    def observe(self, t: np.ndarray, r: np.ndarray) -> None:
        for i in range(len(self.counts)):
            self.counts[i] *= self.decay
            mine = r[t == i]
            if len(mine):
                self.counts[i] += np.bincount(mine, minlength=len(self.counts[i]))

    def relayout(self) -> None:
        for i, c in enumerate(self.counts):
            order = np.argsort(-c, kind="stable")[:self.hot[i]]
            perm = permute.positions(len(c), order)
            self.copies += int(np.count_nonzero(perm != self.perm[i]))
            self.perm[i], self.inv[i] = perm, permute.inverse(perm)

    def swap(self, budget: int) -> None:
        total = sum(self.hot) or 1
        for i, c in enumerate(self.counts):
            h, n = self.hot[i], len(c)
            b = min(int(round(budget * h / total)), h, n - h)
            if b <= 0:
                continue
            perm = self.perm[i]
            band, rest = perm[:h], perm[h:]
            cold = np.argpartition(c[band], b - 1)[:b]  # band positions, coldest first
            cold = cold[np.argsort(c[band][cold], kind="stable")]
            warm = np.argpartition(-c[rest], b - 1)[:b]  # outside positions, hottest
            warm = warm[np.argsort(-c[rest][warm], kind="stable")]
            go = c[rest][warm] > c[band][cold]
            pa, pb = cold[go], h + warm[go]  # positions to swap
            if not len(pa):
                continue
            perm[pa], perm[pb] = perm[pb].copy(), perm[pa].copy()
            self.inv[i][perm[pa]] = pa
            self.inv[i][perm[pb]] = pb
            self.copies += 2 * len(pa)

    def keys(self, t: np.ndarray, r: np.ndarray) -> np.ndarray:
        pos = np.empty(len(r), np.int64)
        for i in np.unique(t):
            m = t == i
            pos[m] = self.inv[i][r[m]]
        return (t.astype(np.uint64) << SHIFT) | pos.astype(np.uint64)


def replay(trace: tf.Trace, parts, warm: int, plan: str, budget: int, every: int,
           decay: float) -> tuple[tf.Trace, int]:
    """The evaluated batches' keys as recorded under the plan, and its row copies."""
    rows = [t.rows for t in trace.tables]
    counts = [np.zeros(n) for n in rows]
    for t, r in parts[:warm]:
        for i in range(len(rows)):
            counts[i] *= decay
            counts[i] += np.bincount(r[t == i], minlength=rows[i])
    sch = Schedule(rows, counts, decay)
    out = []
    for k, (t, r) in enumerate(parts[warm:]):
        if plan == "none":
            out.append((t.astype(np.uint64) << SHIFT) | r.astype(np.uint64))
            continue
        out.append(sch.keys(t, r))
        if plan == "static":
            continue
        sch.observe(t, r)
        if plan == "full" and (k + 1) % every == 0:
            sch.relayout()
        elif plan == "swaps":
            sch.swap(budget)
    offs = np.concatenate(([0], np.cumsum([len(x) for x in out]))).astype(np.uint64)
    tables = [dataclasses.replace(t, id=i) for i, t in enumerate(trace.tables)]
    return tf.Trace(tables=tables, keys=np.concatenate(out), batch_offsets=offs), sch.copies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=80)
    ap.add_argument("--half-life", type=float, default=8.0, help="batches")
    ap.add_argument("--budgets", default="64,256,1024", help="row swaps per batch")
    ap.add_argument("--every", type=int, default=10, help="batches between full re-layouts")
    a = ap.parse_args()
    decay = 2 ** (-1 / a.half_life)
    budgets = [int(x) for x in a.budgets.split(",")]
    plans = [("none", "no layout", 0), ("static", "static", 0),
             ("full", f"full every {a.every}", 0)] + [
        ("swaps", f"{b} swaps/batch", b) for b in budgets]
    print("| trace | policy | size | " + " | ".join(p[1] for p in plans) + " |")
    print("|---|---|---|" + "---|" * len(plans))
    copies_row = {}
    for preset in ("meta2021-small", "meta2022-small"):
        spec = synthetic.preset(preset, seed=7)
        for drift in (spec.drift_period, max(spec.drift_period // 5, 1)):
            tr = synthetic.trace(dataclasses.replace(spec, drift_period=drift), a.batches)
            name = f"{preset}, drift period {drift}"
            parts = _split(tr)
            warm = len(parts) // 4
            runs = {p: replay(tr, parts, warm, p[0], p[2], a.every, decay) for p in plans}
            base = runs[plans[0]][0]
            pages = modes.distinct_units(base, "page")
            nb = base.n_batches
            for pol in ("lru", "s3fifo"):
                for size in (0.05, 0.1):
                    cap = max(1, round(pages * size))
                    got = {p: modes.simulate(runs[p][0], "page", pol, cap).ondemand
                           for p in plans}
                    none = got[plans[0]]
                    print(f"| {name} | {pol} | {size:.0%} | " + " | ".join(
                        f"{got[p]} ({none / max(got[p], 1):.2f}x)" for p in plans) + " |",
                        flush=True)
            copies_row[name] = [runs[p][1] / nb for p in plans]
    print("\nRow copies per batch (each is one row's bytes of memory traffic):\n")
    print("| trace | " + " | ".join(p[1] for p in plans) + " |")
    print("|---|" + "---|" * len(plans))
    for name, c in copies_row.items():
        print(f"| {name} | " + " | ".join(f"{x:.0f}" for x in c) + " |")


if __name__ == "__main__":
    main()
