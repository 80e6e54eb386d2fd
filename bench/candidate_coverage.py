"""What limits the prefetch model's candidates (issue 22, item 4; docs/results.md, "The
prefetch model's candidates: what they miss").  Prints Markdown.

    python bench/candidate_coverage.py [--shared ../shared] [--batches 20]

The prefetch model ranks candidates (recmg.engine.models.candidates: the distinct
keys of the ring of recent misses, not resident, at most 32,768); its targets are the
next step's OPT misses at a fast tier of 10% of the distinct units.  Per trace and
granularity, over every step, as recmg.training.train_prefetch builds its examples:

- targets: the next step's OPT misses; compulsory: those never read before (no
  history-based candidate can name them);
- of the others, the share among the candidates: the ring as shipped (ring 65,536 or
  4 x the fast tier, 32,768 candidates); with STMS-style successors added (each of
  this step's misses names the miss that followed its last miss:
  recmg.engine.models.candidates.Successors, a table of 2^20 slots), and their
  successors too; and the ring with ring and cap raised to 2^18.

Traces: the presets at seed 11 (--batches each) and the Criteo and Avazu excerpts in
../shared/real_traces when present (read there, never committed).
"""

from __future__ import annotations

import argparse

import numpy as np

from recmg.engine.models.candidates import Candidates, Successors, ring_size
from recmg.engine.policy.cache import Cache, next_use, unique_ordered
from recmg.sim import matrix
from recmg.training import labels as lab
from recmg.training import train

import extra_logs
import sampling_cost as sc

TABLE_BITS = 20


def coverage(trace, gran: str, size: float = 0.1) -> dict:
    labels = lab.label(trace, size, gran)
    units = train.units(trace, gran)
    miss = ~np.asarray(labels.hit, bool)
    offs = np.asarray(trace.batch_offsets, np.int64)
    cap = labels.meta["capacity"]
    shipped = Candidates(ring_size(1 << 16, cap), 1 << 15)
    wide = Candidates(ring_size(1 << 18, cap), 1 << 18)
    opt, nu = Cache("belady", cap), next_use(units)
    succ = Successors(TABLE_BITS)
    seen = np.zeros(0, np.uint64)  # every unit read so far (sorted)
    n = {"targets": 0, "compulsory": 0, "ring": 0, "s1": 0, "s2": 0, "wide": 0}
    for b in range(len(offs) - 2):
        lo, mid, hi = offs[b], offs[b + 1], offs[b + 2]
        opt.access(units[lo:mid], nu[lo:mid])
        seen = np.union1d(seen, units[lo:mid])
        m = units[lo:mid][miss[lo:mid]]
        cand, _ = shipped.step(units[lo:mid], m, opt.contains)
        cw, _ = wide.step(units[lo:mid], m, opt.contains)
        # what followed these keys' previous misses (looked up before this step's own
        # misses overwrite them: those successors are in the ring already)
        s1 = succ.of(unique_ordered(m))
        s2 = succ.of(unique_ordered(s1)) if len(s1) else s1
        succ.observe(m)
        target = unique_ordered(units[mid:hi][miss[mid:hi]])
        old = target[np.isin(target, seen, assume_unique=True)]
        n["targets"] += len(target)
        n["compulsory"] += len(target) - len(old)
        c1 = np.union1d(cand, s1[~opt.contains(s1)]) if len(s1) else cand
        c2 = np.union1d(c1, s2[~opt.contains(s2)]) if len(s2) else c1
        for k, c in (("ring", cand), ("s1", c1), ("s2", c2), ("wide", cw)):
            n[k] += int(np.isin(old, c).sum())
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(sc.ROOT.parent / "shared"))
    ap.add_argument("--batches", type=int, default=20)
    a = ap.parse_args()
    print("| trace | granularity | targets | compulsory | ring (shipped) | + successors | "
          "+ their successors | ring and cap 2^18 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    traces = [matrix.load_trace(f"preset:{p}:1:11", a.batches)
              for p in ("meta2021-small", "meta2022-small")]
    traces += [(name, load()) for name, load in extra_logs.loaders(a.shared, [])]
    for name, tr in traces:
        for gran in ("vector", "page"):
            n = coverage(tr, gran)
            old = max(n["targets"] - n["compulsory"], 1)
            print(f"| {name} | {gran} | {n['targets']:,} | "
                  f"{n['compulsory'] / max(n['targets'], 1):.1%} | "
                  + " | ".join(f"{n[k] / old:.1%}" for k in ("ring", "s1", "s2", "wide"))
                  + " |", flush=True)


if __name__ == "__main__":
    main()
