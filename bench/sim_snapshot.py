"""Snapshot a matrix of simulator runs, or compare one with an earlier snapshot: the
check that a refactor moved no number it should not (docs/results.md, "One decision
engine: what moved").

    python bench/sim_snapshot.py OUT.json [--compare BEFORE.json]

588 runs: meta2021 at 1/50 and meta2022 at 1/100, 12 batches; modes access, batch,
page, daemon; sizes 5% and 20%; LRU, LFU, S3-FIFO, Belady; no prefetcher and all nine
prefetchers; budget 256.  Per run: accesses, on-demand fetches, prefetches issued,
useful and late, capacity.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from recmg.sim import matrix

PREFETCHERS = ["none", "nextn", "stride", "bestoffset", "sms", "bingo", "stms", "domino",
               "isb", "oracle"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--compare", help="an earlier snapshot: print what moved")
    a = ap.parse_args()
    rows = matrix.run_matrix(["preset:meta2021:0.02", "preset:meta2022:0.01"],
                             ["access", "batch", "page", "daemon"], [0.05, 0.2],
                             ["lru", "lfu", "s3fifo", "belady"], PREFETCHERS, budget=256,
                             lead=1, batches=12)
    out = {f"{r.trace}|{r.mode}|{r.size}|{r.policy}|{r.prefetcher}": dict(
        accesses=r.metrics.accesses, ondemand=r.metrics.ondemand,
        pi=r.metrics.prefetch_issued, pu=r.metrics.prefetch_useful,
        pl=r.metrics.prefetch_late, cap=r.capacity) for r in rows}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=0, sort_keys=True)
    print(f"{len(out)} runs -> {a.out}")
    if a.compare:
        with open(a.compare) as f:
            before = json.load(f)
        moved = [k for k in before if before[k] != out.get(k)]
        print(f"{len(moved)} of {len(before)} moved, by mode: "
              f"{dict(Counter(k.split('|')[1] for k in moved))}")
        for k in moved[:20]:
            print(" ", k, before[k], "->", out.get(k))


if __name__ == "__main__":
    main()
