"""The planner's admission test (issue 21, item 4): each profile's replayed hit ratio
and moves with the test off and on, on drifting and stationary traces
(docs/results.md, "Placement stability").  Prints Markdown.

    python bench/admission_results.py [--profiles default,lru] [--half-life 131072]
                                      [--batches 400] [--shared ../shared] [--seed 7]

Traces: the guest head-to-head's workload (recmg.experiments.headtohead.Workload,
400 batches) with its drifting hot set and without; meta2021-small and meta2022-small
(seed 7, or --seed) with and without drift; the Criteo and Avazu excerpts in ../shared/real_traces
when present (read there, never committed).  Each is `recmg sim --config`'s replay
(recmg.sim.replay) at about 10 batches per 500 ms tick, unsampled, with a fast tier of
10% of the trace's distinct pages.  The hit ratio is over the second half of the ticks;
moves are pages promoted plus demoted over the whole run.  "off" runs the profile with
admission_half_life_accesses = 0, "on" with --half-life (default: the profile's own
value, or 131,072 where it sets none).
"""

from __future__ import annotations

import argparse
import dataclasses

from recmg import config as cfgmod
from recmg.experiments.headtohead import Workload
from recmg.sim import modes
from recmg.sim.replay import replay

import sampling_cost as sc


def traces(shared: str, batches: int, seed: int):
    yield "guest workload (drift)", Workload(batches=batches).trace()
    yield "guest workload (no drift)", Workload(batches=batches, drift_period=0).trace()
    yield from sc.traces(shared, batches, seed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", default="default,lru")
    ap.add_argument("--half-life", type=int, help="admission's half-life in accesses "
                    "(default: the profile's own, or 131072 where it sets none)")
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--shared", default=str(sc.ROOT.parent / "shared"))
    ap.add_argument("--seed", type=int, default=7, help="the presets' seed")
    a = ap.parse_args()
    profiles = [cfgmod.load_profile(p, [sc.ROOT / "policies"]) for p in a.profiles.split(",")]
    print("Hit ratio over the second half of the ticks, and pages moved, admission off "
          "and on:\n")
    print("| trace | fast tier | " + " | ".join(f"{p.name} off | {p.name} on"
                                              for p in profiles) + " |")
    print("|---|---:|" + "---:|---:|" * len(profiles))
    for name, tr in traces(a.shared, a.batches, a.seed):
        tr, _ = sc.timed(tr)
        mib = max(1, round(modes.distinct_units(tr, "page") * 0.10 * sc.PAGE / 2**20))
        cfg = cfgmod.parse(f"tick_ms = {sc.TICK_MS}\n[budget]\nfast_mib_per_target = {mib}\n"
                           '[migration]\nbackend = "simulated"\n[target]\n'
                           "max_accesses_per_s = 0\n")
        cells = []
        for prof in profiles:
            for hl in (0, a.half_life or prof.admission_half_life_accesses or 131072):
                p = dataclasses.replace(prof, admission_half_life_accesses=hl,
                                        max_accesses_per_s=-1.0)
                st, ticks = replay(tr, cfg, p)
                late = sc.second_half(ticks)
                cells.append(f"{100 * late:.1f}%, {st.promoted + st.demoted:,}")
        print(f"| {name} | {mib} MiB | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
