"""The learning loop end to end in a live recmgd, on the trace that shifts midway
(issue 22, item 2; docs/results.md, "Learning from the host's traffic").  Prints
Markdown.

    python bench/learning_daemon.py [--shared ../shared] [--size 0.1] [--rate 2]
                                    [--interval 5]

The trace of bench/learning_results.py (meta2021-small at seed 11, then the Criteo
excerpt where ../shared has it) is published by a client (recmg.client.Client, the
trace's tables allocated, ``--rate`` batches a second) to a recmgd (simulated
backend, 100 ms ticks, the fast tier ``--size`` of the trace's distinct pages), once
per contender: S3-FIFO without prefetching, the learned profile with the shipped
model (static), and the learned profile with [learning] on (a round every
``--interval`` s on the newest 20 batches' worth of accesses, 4 epochs; the trainer
as nobody where nobody can run this interpreter, else root).  recmgd's status is
read every 100 ms: its on-demand fetches and batches, so fetches are counted before
and after the shift and per 10 batches after it; its rounds and which model serves.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from recmg.client import Client
from recmg.service import control
from recmg.sim import modes
from recmg.trace import format as tf

import learning_results as lr
import learning_tick_cost as ltc
import sampling_cost as sc

PY = sys.executable
S3FIFO = 'schema = 1\ndescription = "S3-FIFO, no prefetching"\ncaching = "s3fifo"\n' \
    'prefetcher = "none"\nprefetch_budget_pages = 0\nadmission_half_life_accesses = 131072\n'
DAEMON = ("import sys; from pathlib import Path; from recmg import config as c; "
          "from recmg.service.daemon import Daemon; "
          "d = Daemon(c.load(sys.argv[1]), sys.argv[1], policy_dirs=[Path(sys.argv[2]), "
          "Path(sys.argv[3])]); sys.exit(d.serve())")


def publish(trace: tf.Trace, name: str, rate: float, shm: Path, stop_at: float) -> None:
    """The client: every batch of the trace, ``rate`` a second."""
    tables = [(f"t{t.id}", t.rows, max(1, t.row_bytes // 4)) for t in trace.tables]
    with Client(name, tables, shm_dir=str(shm)) as cl:
        t0 = time.monotonic()
        for b in range(trace.n_batches):
            keys = np.asarray(trace.batch(b), np.uint64)
            tab = tf.key_table(keys)
            rows = tf.key_row(keys).astype(np.int64)
            cl.record([rows[tab == t.id] for t in trace.tables], batch_id=b)
            time.sleep(max(0.0, t0 + (b + 1) / rate - time.monotonic()))
        while time.monotonic() < stop_at:  # recmgd reads the last batches
            time.sleep(0.1)


def run(trace, tmp: Path, profile: str, learning: bool, mib: int, a, user: str) -> dict:
    shm, sock = tmp / "shm", tmp / "ctl.sock"
    shm.mkdir(parents=True)
    (tmp / "policies").mkdir()
    (tmp / "policies" / "s3fifo-only.toml").write_text(S3FIFO)
    per_batch = len(trace.keys) / trace.n_batches
    cfg = tmp / "recmgd.toml"
    cfg.write_text("\n".join([
        "tick_ms = 100", f'shm_dir = "{shm}"', "[target]", 'segments = ["*"]',
        "max_accesses_per_s = 0", "[migration]", 'backend = "simulated"', "[budget]",
        f"fast_mib_per_target = {mib}", "[control]", f'socket = "{sock}"', "[policy]",
        f'profile = "{profile}"', "[learning]", f"enabled = {'true' if learning else 'false'}",
        f'state_dir = "{tmp / "state"}"', f'user = "{user}"', f"interval_s = {a.interval}",
        f"window_accesses = {int(20 * per_batch)}",
        f"min_window_accesses = {max(1024, int(10 * per_batch))}", "epochs = 4"]) + "\n")
    d = subprocess.Popen([PY, "-c", DAEMON, str(cfg), str(tmp / "policies"),
                          str(sc.ROOT / "policies")], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    marks, rounds = [], []
    try:
        while not sock.exists():
            time.sleep(0.1)
        duration = trace.n_batches / a.rate
        client = threading.Thread(target=publish, args=(trace, "shift", a.rate, shm,
                                                        time.monotonic() + duration + 3))
        client.start()
        while client.is_alive():
            time.sleep(0.1)
            try:
                st = control.request(str(sock), {"cmd": "status"})["result"]
            except (OSError, ValueError, KeyError):
                continue
            if st["targets"]:
                t = st["targets"][0]
                marks.append((t["batches"], t["ondemand"]))
                ln = t.get("learning") or {}
                last = ln.get("last_round")
                if last and (not rounds or rounds[-1]["at"] != last.get("at")):
                    rounds.append({**last, "batch": t["batches"], "serving": ln["serving"]})
        client.join()
    finally:
        d.terminate()
        d.wait(timeout=30)
    return {"marks": marks, "rounds": rounds}


def fetches_between(marks, lo: int, hi: int) -> int:
    """On-demand fetches while recmgd read batches lo..hi (from its status marks)."""
    def at(b):
        return max((f for n, f in marks if n <= b), default=0)
    return at(hi) - at(lo)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(sc.ROOT.parent / "shared"))
    ap.add_argument("--size", type=float, default=0.1)
    ap.add_argument("--rate", type=float, default=2.0, help="batches a second")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between rounds")
    a = ap.parse_args()
    name, tr, shift = lr.shift_trace(a.shared)
    mib = max(1, round(modes.distinct_units(tr, "page") * a.size * sc.PAGE / 2**20))
    user = ltc.trainer_user()
    n = tr.n_batches
    print(f"Trace: {name}; {n} batches, {len(tr.keys):,} accesses, {a.rate:g} batches/s; "
          f"the shift at batch {shift}; fast tier {mib} MiB ({100 * a.size:g}% of the "
          f"distinct pages); rounds every {a.interval:g} s; trainer user {user}.\n")
    edges = list(range(shift, n, 10)) + [n]
    heads = ["before the shift"] + [f"batches {lo}-{hi - 1}" for lo, hi in
                                    zip(edges, edges[1:])] + ["after the shift"]
    print("| contender | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(heads))
    rounds = []
    for who, profile, learning in (("S3-FIFO", "s3fifo-only", False),
                                   ("static (learned profile)", "learned", False),
                                   ("learning (learned profile)", "learned", True)):
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o711)
            r = run(tr, Path(tmp) / "run", profile, learning, mib, a, user)
        m = r["marks"]
        cells = [fetches_between(m, 0, shift)] + [fetches_between(m, lo, hi) for lo, hi in
                                                  zip(edges, edges[1:])] \
            + [fetches_between(m, shift, n)]
        print(f"| {who} | " + " | ".join(f"{v:,}" for v in cells) + " |", flush=True)
        rounds = r["rounds"] or rounds
    print("\nRounds of the learning run (batches read when it ended; verdict; fetches "
          "candidate/serving/S3-FIFO on the held-out part; serving after it):\n")
    for r in rounds:
        f = r.get("fetches") or {}
        print(f"- batch {r['batch']}{' (after the shift)' if r['batch'] > shift else ''}: "
              f"{r['verdict']}; " + (f"{f['candidate']:,}/{f['serving']:,}/{f['s3fifo']:,}"
                                     if f else r.get("reason", "")) + f"; {r['serving']}")


if __name__ == "__main__":
    main()
