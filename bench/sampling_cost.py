"""What ingest sampling costs: recmgd's hit ratio with its sampling against the same
replay unsampled (docs/results.md, "What sampling costs").  Prints Markdown.

    python bench/sampling_cost.py [--batches 400] [--shared ../shared]
                                  [--profiles default,frequency,learned,recmg]
                                  [--factors 2,5,10] [--batches-per-tick 10]

Each trace gets batch timestamps for a steady offered rate R (accesses per second) at
which a 500 ms tick reads about 10 batches (--batches-per-tick); `recmg sim --config`'s
replay (recmg.sim.replay, the engine and the tick driver recmgd runs, sampling as the
client records, with its floor of two batches a tick) is run unsampled (no limit),
then with the profile's sampling limit at R / 2, R / 5 and
R / 10 (or R / each of --factors), so the client records 1 batch in about 2, 5 and 10.  The hit ratio is over
every access of the trace, those sampling left out included (the replay measures each
whole read against the placement before the step sees the sampled part), so batch and
key sampling compare; it is given over the second half of the ticks (the steady state:
with fewer accesses a tick, a sampled run also fills its budget later) and over all.  Traces: meta2021-small and meta2022-small (seed 7) with and without
their hot-set drift, and the Criteo and Avazu excerpts in ../shared/real_traces when
present (read there, never committed).  Budget: fast_mib_per_target sized to 10% of
each trace's distinct pages.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from recmg import config as cfgmod
from recmg.sim import modes
from recmg.sim.replay import replay
from recmg.trace import format as tf
from recmg.trace import synthetic

import extra_logs

ROOT = Path(__file__).resolve().parents[1]
FACTORS = (1, 2, 5, 10)
TICK_MS = 500
PAGE = 4096


def timed(trace: tf.Trace, batches_per_tick: int = 10) -> tuple[tf.Trace, float]:
    """The trace with timestamps for a steady rate at which a tick holds about
    ``batches_per_tick`` batches; and that rate (accesses/s)."""
    counts = np.diff(np.asarray(trace.batch_offsets, np.int64))
    rate = float(counts.mean()) * batches_per_tick / (TICK_MS / 1000)
    ts = (np.cumsum(counts) / rate * 1e9).astype(np.uint64) + np.uint64(10**9)
    return dataclasses.replace(trace, timestamps_ns=ts,
                               batch_ids=np.arange(len(counts), dtype=np.uint64)), rate


def second_half(ticks: list[dict]) -> float:
    """The share of every access (sampled or not) whose page was fast, over the ticks
    after the first half."""
    mid, end = ticks[len(ticks) // 2 - 1], ticks[-1]
    return (end["whole_hits"] - mid["whole_hits"]) / max(
        end["whole_accesses"] - mid["whole_accesses"], 1)


def traces(shared: str, batches: int, seed: int = 7):
    for preset in ("meta2021-small", "meta2022-small"):
        spec = synthetic.preset(preset, seed=seed)
        yield f"{preset} (drift)", synthetic.trace(spec, batches)
        yield f"{preset} (no drift)", synthetic.trace(
            dataclasses.replace(spec, drift_period=0), batches)
    for name, load in extra_logs.loaders(shared, []):
        yield name, load()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--profiles", default="default,frequency,learned,recmg")
    ap.add_argument("--modes", default="batch",
                    help="batch (what the client does), key (every access of 1 key in N: "
                    "simulated only), or both: batch,key")
    ap.add_argument("--factors", default=",".join(map(str, FACTORS[1:])),
                    help="limits R / k for each k (the first column is always unsampled)")
    ap.add_argument("--batches-per-tick", type=int, default=10,
                    help="batches offered in a 500 ms tick at the rate R")
    a = ap.parse_args()
    factors = (1, *(int(k) for k in a.factors.split(",")))
    profiles = [cfgmod.load_profile(p, [ROOT / "policies"]) for p in a.profiles.split(",")]
    print("Hit ratio in the second half of the ticks (over all ticks in brackets); lost: "
          "points below the unsampled run.\n")
    print("| trace | profile, sampling | unsampled hit% | " + " | ".join(
        f"limit R/{k}: sampling, hit% (lost)" for k in factors[1:]) + " |")
    print("|---|---|---|" + "---|" * (len(factors) - 1))
    for name, tr in traces(a.shared, a.batches):
        tr, rate = timed(tr, a.batches_per_tick)
        if len(tr.batch_offsets) - 1 < 8 * a.batches_per_tick:
            print(f"| {name} | (under 8 ticks: left out) | | |")
            continue
        pages = modes.distinct_units(tr, "page")
        mib = max(1, round(pages * 0.10 * PAGE / 2**20))
        cfg = cfgmod.parse(f"tick_ms = {TICK_MS}\n[budget]\nfast_mib_per_target = {mib}\n"
                           '[migration]\nbackend = "simulated"\n')
        for prof, mode in [(p, m) for p in profiles for m in a.modes.split(",")]:
            cells = []
            for k in factors:  # (at R itself a tick above the mean rate was sampled)
                p = dataclasses.replace(prof, max_accesses_per_s=rate / k * 1.01 if k > 1
                                        else 0.0)
                st, ticks = replay(tr, cfg, p, sampling_mode=mode)
                n = max((t["sampling"] for t in ticks), default=1)
                late, end = second_half(ticks), ticks[-1]
                cells.append((n, 100 * late, 100 * end["whole_hits"] /
                              max(end["whole_accesses"], 1)))
            base, whole = cells[0][1], cells[0][2]
            print(f"| {name} | {prof.name}, {mode} | {base:.1f} ({whole:.1f}) | " + " | ".join(
                f"1 in {n}, {h:.1f} (lost {base - h:.1f}; all: {whole - w:.1f})"
                for n, h, w in cells[1:]) + " |", flush=True)
    print(f"\nR: the offered rate at which a {TICK_MS} ms tick reads {a.batches_per_tick} "
          "batches; budget: "
          "10% of each trace's distinct pages.")


if __name__ == "__main__":
    main()
