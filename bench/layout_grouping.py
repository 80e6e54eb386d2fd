"""Grouping rows by time inside the hot band (``recmg layout --group time``) against
the plain ranking (docs/results.md, "Row layouts: grouping").  Prints Markdown.

    python bench/layout_grouping.py [--shared ../shared] [--trace FILE.rtrace ...]
                                    [--batches N]

The traces and the split of bench/layout_results.py: each layout is made from the first
half of a trace's batches and replayed on the second half, the fast tier the same number
of pages of the original layout.  Cells: the reduction of slow-tier page reads against
no layout, plain ranking / grouped by time, for LRU and S3-FIFO in page and daemon mode.
"""

from __future__ import annotations

import argparse

from recmg.sim import modes
from recmg.sim.source import with_layout
from recmg.training import rowlayout

from extra_logs import half
from layout_results import ROOT, SIZES, reads, traces

POLICIES = (("LRU", "lru"), ("S3-FIFO", "s3fifo"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--trace", action="append", default=[], metavar="FILE.rtrace")
    ap.add_argument("--batches", type=int, default=40, help="preset batches (both halves)")
    a = ap.parse_args()
    print("Reduction of slow-tier page reads against no layout: plain ranking / grouped "
          "by time (layouts from the first half, replayed on the second):\n")
    print("| trace | mode | size | " + " | ".join(p[0] for p in POLICIES) + " |")
    print("|---|---|---|" + "---|" * len(POLICIES))
    worst = {}
    for name, tr in traces(a.shared, a.trace, a.batches):
        first, second = half(tr, False), half(tr, True)
        laid = {g: with_layout(second, rowlayout.build([first], [], group=g))
                for g in rowlayout.GROUPS}
        for mode in ("page", "daemon"):
            pages = modes.distinct_units(second, mode)
            for size in SIZES:
                cap = max(1, round(pages * size))
                cells = []
                for _, pol in POLICIES:
                    base = reads(second, mode, pol, "none", cap)
                    plain, grouped = (base / max(reads(laid[g], mode, pol, "none", cap), 1)
                                      for g in rowlayout.GROUPS)
                    cells.append(f"{plain:.3f}x / {grouped:.3f}x")
                    gain = grouped / plain
                    lo, hi = worst.get(name, (gain, gain))
                    worst[name] = (min(lo, gain), max(hi, gain))
                print(f"| {name} | {mode} | {size:.0%} | " + " | ".join(cells) + " |",
                      flush=True)
    print("\n| trace | grouped / plain, range over cells |")
    print("|---|---|")
    for name, (lo, hi) in worst.items():
        print(f"| {name} | {lo:.3f} to {hi:.3f} |")


if __name__ == "__main__":
    main()
