"""Does training add to recmgd's tick?  (issue 22, item 2's goal; docs/results.md,
"Learning from the host's traffic").  Prints Markdown.

    python bench/learning_tick_cost.py [--seconds 90] [--user nobody]

A live recmgd (learned profile, simulated backend, 100 ms ticks) manages a
`recmg workload` client, twice: with [learning] off, then on with rounds back to
back (interval 1 s, a window of 262,144 accesses, 4 epochs).  Its status is read
every 50 ms; per tick the target's wall and CPU time of its share of the tick (status
work.tick_wall_ms, tick_cpu_ms) is kept with the learning state at that moment
(training: a round's trainer process is running).  Where the wall time goes that is
not CPU time: between polls, the time recmgd's threads waited runnable for a CPU
(run_delay in /proc/PID/task/TID/schedstat, kernel 2.6.23+ with schedstats) and the
time the hypervisor took from the guest (steal, /proc/stat), per learning state.  The trainer runs as --user
(default: nobody where that user can run this interpreter, else root) through nice
19, the idle I/O class and prlimit, as recmgd starts it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recmg.service import control

PY = sys.executable


def trainer_user() -> str:
    if os.geteuid() != 0:
        return "root"
    try:
        r = subprocess.run([PY, "-c", "import recmg"], user="nobody", capture_output=True)
    except PermissionError:  # the interpreter lives where nobody cannot reach it
        return "root"
    return "nobody" if r.returncode == 0 else "root"


def waits(pid: int) -> tuple[float, float]:
    """(seconds recmgd's threads have waited runnable for a CPU, seconds of steal on
    all CPUs) so far."""
    delay = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            delay += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):  # a thread that just ended
            pass
    cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return delay / 1e9, int(cpu[8]) / os.sysconf("SC_CLK_TCK")


def run(tmp: Path, learning: bool, seconds: float, user: str) -> dict:
    shm = tmp / "shm"
    shm.mkdir(parents=True)
    sock = tmp / "ctl.sock"
    cfg = tmp / "recmgd.toml"
    cfg.write_text("\n".join([
        "tick_ms = 100", "[target]", 'segments = ["*"]', "[migration]",
        'backend = "simulated"', "[budget]", "fast_mib_per_target = 4", "[control]",
        f'socket = "{sock}"', "[policy]", 'profile = "learned"', "[learning]",
        f"enabled = {'true' if learning else 'false'}", f'state_dir = "{tmp / "state"}"',
        f'user = "{user}"', "interval_s = 1", "window_accesses = 262144",
        "min_window_accesses = 131072", "epochs = 4"]) + "\n")
    env = {**os.environ, "RECMG_SHM_DIR": str(shm)}
    d = subprocess.Popen([PY, "-m", "recmg.cli.recmgd", "-c", str(cfg)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    w = subprocess.Popen([PY, "-m", "recmg.cli.recmg", "workload", "--tables", "4", "--rows",
                          "200000", "--dim", "16", "--batch-size", "256", "--pooling", "8",
                          "--duration", str(seconds + 60), "--name", "bench"], env=env,
                         stdout=subprocess.DEVNULL)
    samples: dict[int, tuple] = {}
    waited: dict[str, list[float]] = {}  # state -> [seconds, run-queue wait s, steal s]
    rounds = None
    last = None
    try:
        t_end = None
        while t_end is None or time.monotonic() < t_end:
            time.sleep(0.05)
            try:
                st = control.request(str(sock), {"cmd": "status"})["result"]
            except (OSError, ValueError, KeyError):
                continue
            if not st["targets"]:
                continue
            if t_end is None:
                t_end = time.monotonic() + seconds
            t = st["targets"][0]
            state = (t.get("learning") or {}).get("state", "off")
            now = (time.monotonic(), *waits(d.pid))
            if last is not None:
                acc = waited.setdefault("training" if state == "training" else "other",
                                        [0.0, 0.0, 0.0])
                for i in range(3):
                    acc[i] += now[i] - last[i]
            last = now
            samples[st["tick"]] = (t["work"]["tick_wall_ms"], t["work"]["tick_cpu_ms"], state,
                                   st["last_tick_ms"])
            rounds = (t.get("learning") or {}).get("rounds")
        models = control.request(str(sock), {"cmd": "models"})["result"]["models"]
    finally:
        w.kill()
        d.terminate()
        d.wait(timeout=30)
    return {"samples": samples, "rounds": rounds, "models": models, "waited": waited}


def row(name: str, vals: list[tuple]) -> str:
    if not vals:
        return f"| {name} | 0 | | | | |"
    wall = np.array([v[0] for v in vals])
    cpu = np.array([v[1] for v in vals])
    tick = np.array([v[3] for v in vals])
    return (f"| {name} | {len(vals)} | {np.median(wall):.1f} / {np.percentile(wall, 99):.1f} | "
            f"{np.median(cpu):.1f} / {np.percentile(cpu, 99):.1f} | "
            f"{np.median(tick):.1f} / {np.percentile(tick, 99):.1f} | {tick.max():.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--user", default=None)
    a = ap.parse_args()
    user = a.user or trainer_user()
    print(f"recmgd, learned profile, 100 ms ticks, {a.seconds:g} s each; trainer user "
          f"{user}; {os.cpu_count()} CPUs\n")
    print("| run | ticks sampled | target wall ms p50 / p99 | target CPU ms p50 / p99 | "
          "whole tick ms p50 / p99 | whole tick max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o711)
        off = run(Path(tmp) / "off", False, a.seconds, user)
        print(row("learning off", list(off["samples"].values())))
        on = run(Path(tmp) / "on", True, a.seconds, user)
        vals = list(on["samples"].values())
        print(row("learning on, a trainer running", [v for v in vals if v[2] == "training"]))
        print(row("learning on, no trainer running", [v for v in vals if v[2] != "training"]))
    print(f"\nRounds finished with learning on: {on['rounds']}; candidates kept: "
          + json.dumps([(m["id"], m["accepted"], m["fetches"]) for m in on["models"]]))
    print("\n| run | seconds | recmgd's threads waiting for a CPU, ms per s | steal, ms per s "
          "(all CPUs) |")
    print("|---|---:|---:|---:|")
    for name, w in (("learning off", off["waited"].get("other")),
                    ("learning on, a trainer running", on["waited"].get("training")),
                    ("learning on, no trainer running", on["waited"].get("other"))):
        if w and w[0] > 0:
            print(f"| {name} | {w[0]:.0f} | {1e3 * w[1] / w[0]:.1f} | "
                  f"{1e3 * w[2] / w[0]:.1f} |")


if __name__ == "__main__":
    main()
