"""Baseline tables for docs/results.md: caching policies and prefetchers on the
meta2021/meta2022 presets (scaled 1/64) and on the Criteo and Avazu logs, at fast tiers
of 5%, 10% and 20% of distinct vectors, in access and batch mode.  Prints Markdown.

    python bench/sim_results.py [--batches 20] [--shared ../shared]

Criteo and Avazu are read from ../shared/real_traces when present (never committed).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from recmg.sim import matrix
from recmg.trace import format as tf

import extra_logs

SIZES = [0.05, 0.1, 0.2]
POLICIES = ["lru", "lfu", "s3fifo", "belady"]
PREFETCHERS = ["nextn", "stride", "bestoffset", "sms", "bingo", "stms", "domino", "isb",
               "oracle"]


def table(rows, title):
    out = [f"**{title}**: on-demand fetches (ratio to LRU)", "",
           "| policy | " + " | ".join(f"{s:.0%}" for s in SIZES) + " |",
           "|---|" + "---|" * len(SIZES)]
    keys = []
    for r in rows:
        k = r.policy if r.prefetcher == "none" else f"{r.policy}+{r.prefetcher}"
        if k not in keys:
            keys.append(k)
    for k in keys:
        cells = []
        for s in SIZES:
            r = next(r for r in rows if r.size == s and
                     (r.policy if r.prefetcher == "none" else f"{r.policy}+{r.prefetcher}") == k)
            cells.append(f"{r.metrics.ondemand} ({r.vs_lru:.2f})")
        out.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--trace", action="append", default=[], metavar="FILE",
                    help="another trace (.rtrace or preset:NAME[:SCALE:SEED]; repeatable)")
    a = ap.parse_args()
    traces = ["preset:meta2021-small", "preset:meta2022-small"]
    tmp = tempfile.mkdtemp(prefix="recmg-results-")
    for name, load in extra_logs.loaders(a.shared, []):  # extra .rtrace files: as given
        p = Path(tmp) / f"{name}.rtrace"
        tf.write(p, load())
        traces.append(str(p))
    traces += a.trace
    caching = matrix.run_matrix(traces, ["access", "batch"], SIZES, POLICIES, ["none"],
                                batches=a.batches)
    pref = matrix.run_matrix(traces, ["access", "batch"], SIZES, ["lru"], PREFETCHERS,
                             batches=a.batches)
    for tr in dict.fromkeys(r.trace for r in caching):
        for mode in ("access", "batch"):
            sel = [r for r in caching if (r.trace, r.mode) == (tr, mode)]
            sel += [r for r in pref if (r.trace, r.mode) == (tr, mode)
                    and (r.policy, r.prefetcher) != ("belady", "oracle")]
            print(table(sel, f"{tr}, {mode} mode"))


if __name__ == "__main__":
    main()
