"""One learning round (recmgd's ``[learning]``): train on a target's recorded window,
judge on fetches, write the candidate.  recmgd runs it as a separate process
(``python -m recmg.training.learn JOB_DIR``), never in its tick: under SCHED_IDLE and
nice, in the idle I/O class, under RLIMIT_CPU and RLIMIT_AS, as an unprivileged user
(recmg.service.confine starts it so).  The bench runs ``run_round`` in process.

A job directory holds ``job.json`` (written by recmgd: the config and profile the
target runs, the serving models' file names, the training settings), the window
(``window.rtrace``) and copies of the serving models; the round writes into
``out/``: ``caching.onnx`` (and ``prefetch.onnx`` where the profile's prefetcher is
learned) with their cards, and ``result.json``.

The round: the window's batches before ``validate_frac`` train (OPT labels for the
target's own budget: the fast-tier share is its budget over the distinct pages of the
training part).  The whole window is then replayed (recmg.sim.replay, the daemon's
engine) three times: the candidate models alone, the serving models alone (no fetch
judge in either), and S3-FIFO without prefetching (what serves when models fail); the
training batches only warm the fast tier up, and the fetches (on-demand slow-tier
reads) of the held-out batches alone go to ``result.json``.  recmgd decides.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from recmg import config as cfgmod
from recmg.service.learning import JOB, RESULT, WINDOW
from recmg.trace import format as tf

MAX_JOB_BYTES = 1 << 20


def split(trace: tf.Trace, lo: int, hi: int) -> tf.Trace:
    """Batches lo..hi-1 of a trace; the replay ticks on their timestamps (the window's
    tick starts would not fit the part)."""
    part = trace.batches(lo, hi)
    part.meta.pop("tick_starts", None)
    return part


def alone(profile: cfgmod.Profile) -> cfgmod.Profile:
    """The profile's models judged by themselves: no fetch judge, no accuracy floor."""
    return replace(profile, model_fetch_margin=-1.0, model_accuracy_floor=0.0)


def fetches(trace: tf.Trace, cfg: cfgmod.Config, profile: cfgmod.Profile,
            first_batch: int) -> int:
    """On-demand fetches from batch ``first_batch`` on, replaying the whole window: the
    earlier batches warm the fast tier up (a replay of the held-out part alone would
    measure mostly its cold start), the held-out ones alone are counted."""
    from recmg.sim.replay import replay

    marks = [(0, 0)]  # (batches stepped, fetches) after each tick

    def mark(tick, eng):
        marks.append((int(eng.stats.batches), int(eng.stats.ondemand)))

    # unsampled: the window holds what the client recorded already
    stats, _ = replay(trace, replace(cfg, target=replace(cfg.target, max_accesses_per_s=0)),
                      replace(profile, max_accesses_per_s=-1.0), on_tick=mark)
    return int(stats.ondemand) - max(f for b, f in marks if b <= first_batch)


def run_round(trace: tf.Trace, cfg: cfgmod.Config, profile: cfgmod.Profile, out: Path, *,
              validate_frac: float = 0.3, epochs: int = 4, hidden: int = 32,
              seed: int = 0) -> dict:
    """Train the profile's learned models on the window's earlier part, replay the
    later part; returns result.json's content (files in ``out``)."""
    from recmg.engine.layout import Layout
    from recmg.runner import build
    from recmg.sim import modes
    from recmg.training import train, train_prefetch

    tf.validate(trace, "window")
    n = trace.n_batches
    cut = int(round(n * (1 - validate_frac)))
    if cut < 2 or n - cut < 2:
        raise ValueError(f"the window holds {n} batches: too few to train and validate "
                         "(at least 2 each)")
    fit = split(trace, 0, cut)
    layout = Layout.virtual(trace.tables)
    budget = build.budget_pages(cfg, layout)
    distinct = modes.distinct_units(fit, "page")
    size = min(0.5, max(0.01, budget / max(distinct, 1)))
    out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.monotonic(), time.process_time()
    command = (f"recmgd learning round: {len(fit.keys)} accesses, fast tier {size:.4f} of "
               f"{distinct} pages, {epochs} epochs, seed {seed}")
    card = train.train_cache([("window", fit, None)], str(out), "caching", size, 0.8,
                             epochs, hidden, seed, granularity="page", show_progress=False,
                             command=command, observe=profile.observe)
    candidate = replace(profile, model=str(out / card["onnx"]))
    if profile.prefetcher == "learned":
        pcard = train_prefetch.train_prefetch(
            [("window", fit, None)], str(out), "prefetch", size, 0.8, 20, 32, seed,
            granularity="page", k=max(1, profile.prefetch_budget_pages),
            show_progress=False, command=command)
        candidate = replace(candidate, prefetch_model=str(out / pcard["onnx"]))
    train_s, train_cpu_s = time.monotonic() - t0, time.process_time() - c0
    result = {
        "batches": {"train": cut, "validate": n - cut},
        "accesses": {"train": int(len(fit.keys)),
                     "validate": int(trace.batch_offsets[n] - trace.batch_offsets[cut])},
        "budget_pages": budget, "size": round(size, 6), "train_s": round(train_s, 2),
        "train_cpu_s": round(train_cpu_s, 2),
        "caching": card["onnx"],
        "prefetch": Path(candidate.prefetch_model).name if profile.prefetcher == "learned"
        else None,
        "held_out": card["held_out"],
        "fetches": {"candidate": fetches(trace, cfg, alone(candidate), cut),
                    "serving": fetches(trace, cfg, alone(profile), cut),
                    "s3fifo": fetches(trace, cfg, build.without_models(profile), cut)},
    }
    return result


def confined_main(job_dir: Path) -> int:
    """The process recmgd starts: read the job, run the round, write result.json.  Any
    error goes to stderr (recmgd keeps the log's tail) and the exit status."""
    from recmg.safefile import atomic_output, read_regular

    job = json.loads(read_regular(job_dir / JOB, MAX_JOB_BYTES, "learning job"))
    cfg = cfgmod.from_dict(job["config"], "learning job")
    profile = cfgmod.Profile(**job["profile"])
    serving = job.get("serving") or {}
    if serving.get("caching"):  # the copies recmgd put beside the window
        profile = replace(profile, model=str(job_dir / serving["caching"]))
    if serving.get("prefetch"):
        profile = replace(profile, prefetch_model=str(job_dir / serving["prefetch"]))
    trace = tf.read(job_dir / WINDOW, mmap=False)
    t = job["train"]
    result = run_round(trace, cfg, profile, job_dir / "out", validate_frac=t["validate_frac"],
                       epochs=t["epochs"], seed=t.get("seed", 0))
    with atomic_output(job_dir / "out" / RESULT, 0o644) as f:
        f.write(json.dumps(result).encode())
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m recmg.training.learn JOB_DIR", file=sys.stderr)
        sys.exit(64)
    os.umask(0o077)
    try:  # the first the kernel's OOM killer takes: never recmgd, never the server
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    sys.exit(confined_main(Path(sys.argv[1])))
