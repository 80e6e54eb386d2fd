"""Placement stability (issue 21, item 4): the hit ratio of recmgd's planned placement
on a stationary trace across batches per tick and ingest sampling, and the ping-pong
(docs/results.md, "Placement stability").  Prints Markdown.

    python bench/placement_stability.py [--batches N] [--profiles a,b]

The trace: one table of 20,000 rows of 256 B (16 a page, 1,250 pages), rows drawn
Zipf(1.05) and scattered over the pages by a random permutation (hashed ids), 512 keys
a batch, a batch every 10 ms; a fast tier of 1 MiB (256 pages, 20%).  Each run is
`recmg sim --config`'s replay (recmg.sim.replay) with tick_ms = 10 x batches per tick
and target.max_accesses_per_s set so the client samples 1 batch in 1, 4 or 10.  The
hit ratio is over every access of the second half (sampled out or not), after the
placement has settled; ping-pong counts demotions within 4 hysteresis windows of the
page's promotion.
"""

from __future__ import annotations

import argparse

import numpy as np

from recmg import config as cfgmod
from recmg.sim.replay import replay
from recmg.trace import format as tf

ROWS, PER = 20_000, 512
TICK_BATCHES = (3, 5, 15)
LIMITS = ((1, 0), (4, 12_800), (10, 5_120))  # (1 in N, accesses/s) at 51,200 offered


def trace(batches: int, seed: int = 3) -> tf.Trace:
    rng = np.random.default_rng(seed)
    r = rng.zipf(1.05, batches * PER * 3)
    r = r[r <= ROWS][:batches * PER] - 1
    rows = rng.permutation(ROWS)[r]
    return tf.Trace(tables=[tf.TableInfo(0, "a", ROWS, 256, 64, "<f4")],
                    keys=tf.make_keys(0, rows),
                    batch_offsets=np.arange(0, batches * PER + 1, PER, dtype=np.uint64),
                    timestamps_ns=np.arange(1, batches + 1, dtype=np.uint64) * 10**7)


def second_half_hit_ratio(ticks: list[dict]) -> float:
    h = len(ticks) // 2
    acc = ticks[-1]["whole_accesses"] - ticks[h]["whole_accesses"]
    return (ticks[-1]["whole_hits"] - ticks[h]["whole_hits"]) / max(acc, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=600)
    ap.add_argument("--profiles", default="default,frequency,lru")
    a = ap.parse_args()
    tr = trace(a.batches)
    cols = [f"{tb}/tick, 1 in {n}" for n, _ in LIMITS for tb in TICK_BATCHES]
    print("Hit ratio over the second half (every access), by batches per tick and "
          "sampling; ping-pong / demotions summed over the nine runs:\n")
    print("| profile | " + " | ".join(cols) + " | spread | ping-pong / demoted |")
    print("|---|" + "---:|" * (len(cols) + 2))
    for prof in a.profiles.split(","):
        profile = cfgmod.load_profile(prof)
        ratios, pp, dem = [], 0, 0
        for _, limit in LIMITS:
            for tb in TICK_BATCHES:
                cfg = cfgmod.parse(f"tick_ms = {10 * tb}\n[budget]\nfast_mib_per_target = 1\n"
                                   f"[target]\nmax_accesses_per_s = {limit}\n")
                st, ticks = replay(tr, cfg, profile, tb)
                ratios.append(second_half_hit_ratio(ticks))
                pp, dem = pp + st.pingpong, dem + st.demoted
        print(f"| {prof} | " + " | ".join(f"{100 * x:.1f}%" for x in ratios)
              + f" | {100 * (max(ratios) - min(ratios)):.1f} pts | {pp:,} / {dem:,} |")


if __name__ == "__main__":
    main()
