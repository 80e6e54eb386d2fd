"""The learning loop on a trace whose statistics shift midway (issue 22, item 2;
docs/results.md, "Learning from the host's traffic").  Prints Markdown.

    python bench/learning_results.py [--shared ../shared] [--sizes 0.05,0.1]
                                     [--round-every 5] [--window 20] [--delay-ticks 0]
                                     [--check-window N]

The trace: a synthetic preset (meta2021-small at seed 11, samples cut so a batch
holds about as many accesses as the second phase's), then, from the shift on, the
Criteo excerpt in ../shared/real_traces (its tables added beside the preset's; read
there, never committed), or the meta2022-small preset at seed 12 where the excerpt
is absent.  Each contender is `recmg sim --config`'s replay (recmg.sim.replay: the
daemon's engine, 2 batches a 500 ms tick, the fast tier a share of the trace's
distinct pages):

- S3-FIFO: what the learned profile serves when its models fail;
- static: the shipped model as policies/learned.toml serves it (fetch judge on), and
  the same model alone (no judge);
- learning: the learned profile whose model the loop retrains every
  ``--round-every`` ticks on the newest ``--window`` batches, with recmgd's own round
  (recmg.training.learn.run_round: train on the window's first 70%, replay the last
  30% for candidate, serving model and S3-FIFO) and rules (recmg.service.learning.wins
  and falls_back, margin 0): a winner is swapped in ``--delay-ticks`` ticks later the
  way recmgd swaps it (recmg.runner.build.reconfigure); where S3-FIFO beat the serving
  model instead, the learned cache's S3-FIFO fallback decides at once
  (``Learned.fall_back``), as in recmgd.  The training runs in this process: its cost is
  reported, not charged to the trace's time (recmgd runs it in another process).

Per contender: on-demand fetches before the shift, and after it per segment between
rounds; the rounds with their verdicts; recovery: the rounds after the shift until a
retrained model serves, and whether the loop then has fewer fetches than S3-FIFO.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from recmg import config as cfgmod
from recmg.runner import build
from recmg.sim import modes
from recmg.sim.replay import replay
from recmg.trace import format as tf
from recmg.trace import synthetic
from recmg.service import learning
from recmg.training import learn

import extra_logs
import sampling_cost as sc

BATCHES_PER_TICK = 2


def side_by_side(a: tf.Trace, b: tf.Trace) -> tf.Trace:
    """``a``'s batches, then ``b``'s, ``b``'s tables renumbered after ``a``'s."""
    shift = max(t.id for t in a.tables) + 1
    tables = list(a.tables) + [dataclasses.replace(t, id=t.id + shift) for t in b.tables]
    bkeys = tf.make_keys(0, tf.key_row(np.asarray(b.keys))) | (
        (tf.key_table(np.asarray(b.keys)).astype(np.uint64) + np.uint64(shift))
        << np.uint64(tf.TABLE_SHIFT))
    keys = np.concatenate([np.asarray(a.keys, np.uint64), bkeys])
    offs = np.concatenate([np.asarray(a.batch_offsets, np.uint64),
                           np.asarray(b.batch_offsets[1:], np.uint64) + np.uint64(len(a.keys))])
    n = len(offs) - 1
    return tf.Trace(tables=tables, keys=keys, batch_offsets=offs,
                    batch_ids=np.arange(n, dtype=np.uint64),
                    timestamps_ns=np.zeros(n, np.uint64), meta={})


def shift_trace(shared: str) -> tuple[str, tf.Trace, int]:
    """(what shifts to what, the trace, the first batch after the shift)."""
    found = [(n, load) for n, load in extra_logs.loaders(shared, []) if n == "criteo"]
    if found:
        name, after = "criteo", found[0][1]()
    else:
        name, after = "meta2022-small (seed 12)", synthetic.trace(
            synthetic.preset("meta2022-small", seed=12), 40)
    per_batch = len(after.keys) / after.n_batches
    spec = synthetic.preset("meta2021-small", seed=11)
    samples = max(1, round(spec.batch_size * per_batch / (spec.batch_size *
                                                          sum(spec.pooling))))
    before = synthetic.trace(dataclasses.replace(spec, batch_size=samples), after.n_batches)
    tr, _ = sc.timed(side_by_side(before, after), BATCHES_PER_TICK)
    return f"meta2021-small (seed 11) -> {name}", tr, before.n_batches


class Loop:
    """The learning contender's rounds, run from the replay's tick hook."""

    def __init__(self, trace, cfg, profile, every, window, delay, out: Path, epochs: int):
        self.trace, self.cfg, self.profile = trace, cfg, profile
        self.every, self.window, self.delay, self.out = every, window, delay, out
        self.epochs = epochs
        self.rounds: list[dict] = []
        self.pending: tuple[int, cfgmod.Profile] | None = None
        self.fetches: list[int] = []

    def __call__(self, tick: int, eng) -> None:
        self.fetches.append(int(eng.stats.ondemand))
        if self.pending and tick >= self.pending[0]:
            build.reconfigure(eng, self.profile, self.cfg, self.pending[1])
            self.profile, self.pending = self.pending[1], None
        if tick % self.every or self.pending:
            return
        hi = int(eng.stats.batches)
        lo = max(0, hi - self.window)
        if hi - lo < self.window // 2:
            return
        out = self.out / f"round-{tick}"
        c0 = time.process_time()
        r = learn.run_round(self.trace.batches(lo, hi), self.cfg, self.profile, out,
                            epochs=self.epochs)
        won = learning.wins(r["fetches"], 0.0)
        self.rounds.append({"tick": tick, "batches": (lo, hi), "won": won,
                            "fetches": r["fetches"], "cpu_s": time.process_time() - c0})
        if won:
            self.pending = (tick + self.delay, dataclasses.replace(
                self.profile, model=str(out / r["caching"])))
        elif learning.falls_back(r["fetches"], 0.0):  # recmgd's other rule
            f = r["fetches"]
            if eng.cache.fall_back(f"round at tick {tick}: {f['serving']} held-out fetches "
                                   f"against S3-FIFO's {f['s3fifo']}"):
                self.rounds[-1]["fell_back"] = True


def per_tick(trace, cfg, profile, hook=None) -> list[int]:
    """Cumulative fetches after each tick."""
    got: list[int] = []

    def record(tick, eng):
        got.append(int(eng.stats.ondemand))

    replay(trace, cfg, profile, batches_per_tick=BATCHES_PER_TICK, on_tick=hook or record)
    return hook.fetches if hook is not None else got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(sc.ROOT.parent / "shared"))
    ap.add_argument("--sizes", default="0.05,0.1")
    ap.add_argument("--round-every", type=int, default=5, help="ticks between rounds")
    ap.add_argument("--window", type=int, default=20, help="batches a round learns from")
    ap.add_argument("--delay-ticks", type=int, default=0,
                    help="ticks between a round and its swap")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--check-window", type=int, default=0,
                    help="accesses per window of the fetch judge (0: the learned "
                    "profile's, 65,536: 5 ticks of this trace)")
    a = ap.parse_args()
    name, tr, shift_batch = shift_trace(a.shared)
    shift_tick = shift_batch // BATCHES_PER_TICK
    learned = cfgmod.load_profile("learned", [sc.ROOT / "policies"])
    if a.check_window:
        learned = dataclasses.replace(learned, model_check_window=a.check_window)
    print(f"Trace: {name}; {tr.n_batches} batches, {len(tr.keys):,} accesses; the shift "
          f"after tick {shift_tick}; a round every {a.round_every} ticks on the newest "
          f"{a.window} batches; swap {a.delay_ticks} ticks after its round; the fetch "
          f"judge's windows {learned.model_check_window:,} accesses.\n")
    for size in (float(s) for s in a.sizes.split(",")):
        mib = max(1, round(modes.distinct_units(tr, "page") * size * sc.PAGE / 2**20))
        cfg = cfgmod.parse(f"tick_ms = {sc.TICK_MS}\n[budget]\nfast_mib_per_target = {mib}\n"
                           '[migration]\nbackend = "simulated"\n[target]\n'
                           "max_accesses_per_s = 0\n")
        with tempfile.TemporaryDirectory() as tmp:
            loop = Loop(tr, cfg, learned, a.round_every, a.window, a.delay_ticks, Path(tmp),
                        a.epochs)
            runs = {"S3-FIFO": per_tick(tr, cfg, build.without_models(learned)),
                    "static (judged)": per_tick(tr, cfg, learned),
                    "static (alone)": per_tick(tr, cfg, learn.alone(learned)),
                    "learning": per_tick(tr, cfg, learned, loop)}
        edges = [shift_tick] + list(range(shift_tick + a.round_every, len(runs["S3-FIFO"]),
                                          a.round_every)) + [len(runs["S3-FIFO"])]
        edges = sorted(set(edges))
        print(f"### Fast tier {100 * size:g}% of the distinct pages ({mib} MiB)\n")
        heads = ["before the shift"] + [f"ticks {lo + 1}-{hi}" for lo, hi in
                                        zip(edges, edges[1:])] + ["after the shift"]
        print("| contender | " + " | ".join(heads) + " |")
        print("|---|" + "---:|" * len(heads))
        for who, cum in runs.items():
            c = [0] + cum
            cells = [c[shift_tick]] + [c[hi] - c[lo] for lo, hi in zip(edges, edges[1:])] \
                + [c[-1] - c[shift_tick]]
            print(f"| {who} | " + " | ".join(f"{v:,}" for v in cells) + " |")
        print("\nRounds (tick: window batches; held-out fetches candidate/serving/S3-FIFO; "
              "verdict; training CPU s):\n")
        for r in loop.rounds:
            f = r["fetches"]
            print(f"- tick {r['tick']}{' (after the shift)' if r['tick'] > shift_tick else ''}"
                  f": batches {r['batches'][0]}-{r['batches'][1] - 1}; {f['candidate']:,}/"
                  f"{f['serving']:,}/{f['s3fifo']:,}; {'swapped in' if r['won'] else 'kept out'}"
                  f"{'; S3-FIFO decides' if r.get('fell_back') else ''}"
                  f"; {r['cpu_s']:.1f} s")
        after = [r for r in loop.rounds if r["tick"] > shift_tick]
        first = next((i for i, r in enumerate(after) if r["won"]), None)
        s3 = runs["S3-FIFO"][-1] - runs["S3-FIFO"][shift_tick - 1]
        ln = runs["learning"][-1] - runs["learning"][shift_tick - 1]
        print(f"\nRecovery: {'no retrained model served after the shift' if first is None else f'the retrained model of round {first + 1} after the shift serves'}"
              f"; after the shift the loop made {ln:,} fetches against S3-FIFO's {s3:,} "
              f"({ln / max(s3, 1):.3f}x) and the static judged model's "
              f"{runs['static (judged)'][-1] - runs['static (judged)'][shift_tick - 1]:,}.\n",
              flush=True)


if __name__ == "__main__":
    main()
