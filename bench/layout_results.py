"""Row layouts at equal DRAM: slow-tier page reads with and without a layout
(docs/results.md, "Row layouts").  Prints Markdown.

    python bench/layout_results.py [--shared ../shared] [--trace FILE.rtrace ...]
                                   [--batches N] [--half-life B]

Per trace, split by time: the layout is made from the first half of the batches
(``recmg layout``'s ranking, recmg.training.rowlayout) and every run replays the second
half.  The bound: a layout made from the evaluated half itself.  The fast tier is sized
in pages of the original layout (a share of the second half's distinct pages), the same
for all three.  Traces: the Criteo and Avazu excerpts in ../shared/real_traces when
present (read there, never committed), any --trace, and the presets meta2021-small and
meta2022-small (seed 7) with their drifting hot set and without drift.
Policies: LRU, S3-FIFO, the learned caching policy (the shipped page model), RecMG (it
and the learned prefetcher) and Belady (page mode only: it needs the future).
Cells: on-demand page reads without a layout / with one; the ratio is the reduction.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from recmg.sim import modes
from recmg.sim.source import with_layout
from recmg.trace import synthetic
from recmg.training import rowlayout

import extra_logs
from extra_logs import half

ROOT = Path(__file__).resolve().parents[1]
SIZES = [0.02, 0.05, 0.1, 0.2]
CACHE_MODEL = str(ROOT / "policies/caching-page-v1.onnx")
PREFETCH_MODEL = str(ROOT / "policies/prefetch-page-v1.onnx")
POLICIES = (("LRU", "lru", "none"), ("S3-FIFO", "s3fifo", "none"),
            ("learned", "learned", "none"), ("RecMG", "learned", "learned"),
            ("Belady", "belady", "none"))


def traces(shared: str, extra: list[str], batches: int):
    for name, load in extra_logs.loaders(shared, extra):
        yield name, load()
    for preset in ("meta2021-small", "meta2022-small"):
        spec = synthetic.preset(preset, seed=7)
        yield f"{preset} (drift)", synthetic.trace(spec, batches)
        yield f"{preset} (no drift)", synthetic.trace(
            dataclasses.replace(spec, drift_period=0), batches)


def reads(trace, mode: str, policy: str, prefetcher: str, cap: int) -> int:
    return modes.simulate(trace, mode, policy, cap, prefetcher, budget=256,
                          model=CACHE_MODEL if policy == "learned" else None,
                          prefetch_model=PREFETCH_MODEL if prefetcher == "learned" else None
                          ).ondemand


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--trace", action="append", default=[], metavar="FILE.rtrace")
    ap.add_argument("--batches", type=int, default=40, help="preset batches (both halves)")
    ap.add_argument("--half-life", type=float, default=0.0,
                    help="the layout's decay in batches (recmg layout --half-life)")
    a = ap.parse_args()
    raw, cells = [], {}
    for name, tr in traces(a.shared, a.trace, a.batches):
        first, second = half(tr, False), half(tr, True)
        learned = with_layout(second, rowlayout.build([first], [], a.half_life))
        bound = with_layout(second, rowlayout.build([second], [], a.half_life))
        for mode in ("page", "daemon"):
            pages = modes.distinct_units(second, mode)
            for size in SIZES:
                cap = max(1, round(pages * size))
                for label, pol, pre in POLICIES:
                    if mode == "daemon" and pol == "belady":
                        continue
                    base = reads(second, mode, pol, pre, cap)
                    got = reads(learned, mode, pol, pre, cap)
                    best = reads(bound, mode, pol, pre, cap)
                    raw.append(f"| {name} | {mode} | {size:.0%} | {label} | {base} | {got} | "
                               f"{base / max(got, 1):.2f}x | {best} | "
                               f"{base / max(best, 1):.2f}x |")
                    cells[name, mode, size, label] = (base / max(got, 1), base / max(best, 1))
    labels = [p[0] for p in POLICIES]
    print("Reduction of slow-tier page reads by a layout made from the first half, on the "
          "second half (no layout / layout; in brackets the bound, a layout made from the "
          "second half itself):\n")
    print("| trace | mode | size | " + " | ".join(labels) + " |")
    print("|---|---|---|" + "---|" * len(labels))
    for (name, mode, size) in dict.fromkeys(k[:3] for k in cells):
        row = [f"{cells[name, mode, size, x][0]:.2f}x ({cells[name, mode, size, x][1]:.2f}x)"
               if (name, mode, size, x) in cells else "-" for x in labels]
        print(f"| {name} | {mode} | {size:.0%} | " + " | ".join(row) + " |")
    print("\n| trace | S3-FIFO, page mode: 2% / 5% / 10% / 20% | S3-FIFO's worst cell | "
          "worst cell, any policy |")
    print("|---|---|---|---|")
    for name in dict.fromkeys(k[0] for k in cells):
        s3 = [f"{cells[name, 'page', z, 'S3-FIFO'][0]:.2f}x" for z in SIZES]
        mine = {k: v[0] for k, v in cells.items() if k[0] == name}
        w3 = min((k for k in mine if k[3] == "S3-FIFO"), key=mine.get)
        wa = min(mine, key=mine.get)
        print(f"| {name} | {' / '.join(s3)} | {mine[w3]:.2f}x ({w3[1]}, {w3[2]:.0%}) | "
              f"{mine[wa]:.2f}x ({wa[3]}, {wa[1]}, {wa[2]:.0%}) |")
    print("\nPage reads (on-demand page fetches):\n")
    print("| trace | mode | size | policy | no layout | layout (1st half) | ratio | "
          "bound (2nd half) | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(raw))


if __name__ == "__main__":
    main()
