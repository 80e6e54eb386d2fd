"""`recmg demo` (what `make run` shows): the bundled DLRM workload, instrumented,
managed by recmgd on an embedded config with each of three shipped profiles (RecMG's
two learned models; the learned caching model alone; S3-FIFO with STMS), beside the
same run with tiering off.

Both runs start with the tables on the slow tier: on a host with two tiers the
workload places its pages on the slow node at first touch, and with the simulated
backend placement starts slow by construction. "Tiering off" is the same recmgd,
paused from its first tick: it measures, and moves nothing. Real migration is used
where `recmgctl check` says it is possible; otherwise the simulated tier, said
plainly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recmg import registry
from recmg.service import control
from recmg.host import topology

WORKLOAD = ["--tables", "4", "--rows", "200000", "--dim", "64", "--pooling", "8",
            "--batch-size", "256", "--report-every", "1000", "--checksum"]


PROFILES = (("recmg", "RecMG: learned caching + learned prefetch"),
            ("learned", "learned caching model"),
            ("default", "S3-FIFO + STMS"))


def config(tmp: Path, backend: str, budget_mib: int, profile: str, *, segment: str = "demo",
           free_floor_mib: int = 64) -> Path:
    """recmgd.toml in tmp for one managed segment (also `recmg bench tiering`'s)."""
    p = tmp / "recmgd.toml"
    p.write_text(f"""# embedded demo config
tick_ms = 250
[target]
segments = ["{segment}"]
[migration]
backend = "{backend}"
rate_mib_s = 64.0
min_residency_ticks = 4
[budget]
fast_mib_per_target = {budget_mib}
[safety]
free_floor_mib = {free_floor_mib}
[control]
socket = "{tmp / 'control.sock'}"
[policy]
profile = "{profile}"
""")
    return p


def _one_run(tmp: Path, cfg: Path, seconds: float, slow: int | None, paused: bool,
             say) -> dict:
    sock = tmp / "control.sock"
    bindir = Path(sys.executable).parent
    daemon = start_recmgd(cfg, sock)
    try:
        t0 = time.monotonic()
        if paused:
            control.request(str(sock), {"cmd": "pause"})
        wl_args = [str(bindir / "recmg"), "workload", *WORKLOAD, "--name", "demo",
                   "--duration", str(seconds)]
        if slow is not None:
            wl_args += ["--prefer-node", str(slow)]
        wl = subprocess.Popen(wl_args, stdout=subprocess.PIPE, text=True)
        status = None
        while wl.poll() is None:
            time.sleep(2.0)
            try:
                status = control.request(str(sock), {"cmd": "status"})["result"]
            except OSError:
                continue
            t = status["totals"]
            fast = sum(x["fast_pages"] for x in status["targets"]) * 4 / 1024
            say(f"  [{'off' if paused else 'on '}] {time.monotonic() - t0:5.1f}s  "
                f"hit {100 * t['hit_ratio']:5.1f}%  on-demand {t['ondemand']:>9}  "
                f"promoted {t['promoted']:>6}  demoted {t['demoted']:>6}  "
                f"fast {fast:6.1f} MiB")
        out = wl.communicate()[0]
        status = control.request(str(sock), {"cmd": "status"})["result"]
        summary = next((ln for ln in out.splitlines() if ln.startswith("workload summary")), "")
        intact = "tables_intact=True" in summary
        p50 = summary.split("p50_ms=")[1].split()[0] if "p50_ms=" in summary else "?"
        return {"totals": status["totals"], "intact": intact, "p50_ms": p50,
                "backend": status["backend"], "real": status["real_migration"]}
    finally:
        stop_recmgd(daemon)


def start_recmgd(cfg: Path, sock: Path, start_timeout_s: float = 120.0) -> subprocess.Popen:
    """recmgd on cfg, returned once its control socket listens (the socket appears
    only then).  Under TCG its imports alone take tens of seconds."""
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "recmgd"), "-c", str(cfg),
                               "--log-level", "warning"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    while not sock.exists():
        if daemon.poll() is not None or time.monotonic() - t0 > start_timeout_s:
            raise RuntimeError("recmgd did not start: " + stop_recmgd(daemon))
        time.sleep(0.05)
    return daemon


def stop_recmgd(daemon: subprocess.Popen) -> str:
    """SIGTERM, then SIGKILL after 30 s; returns what it printed."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
    try:
        return daemon.communicate(timeout=30)[0] or ""
    except subprocess.TimeoutExpired:
        daemon.kill()
        return daemon.communicate()[0] or ""


def run(seconds: float = 20.0, backend: str = "auto", budget_mib: int = 8, out=print,
        profiles: list[str] | None = None) -> int:
    def say(msg):
        out(msg)
        sys.stdout.flush()

    topo = topology.probe()
    if backend == "auto":
        backend = "move_pages" if topo.can_migrate else "simulated"
    slow = topo.slow_nodes[0] if registry.moves_pages(backend) else None
    if registry.moves_pages(backend):
        say(f"recmg demo: REAL migration with move_pages: fast nodes {topo.fast_nodes}, "
            f"slow nodes {topo.slow_nodes}")
    else:
        say("recmg demo: this host has no slow memory tier, so recmgd runs with the "
            "SIMULATED tier:\n  placement and moves are modelled, no page really moves")
    say(f"workload: 4 tables x 200000 rows x 64 float32 (200 MiB), tables start on the slow "
        f"tier; DRAM budget {budget_mib} MiB; {seconds:.0f} s per run")
    tmp = Path(tempfile.mkdtemp(prefix="recmg-demo-"))
    runs = {}
    try:
        chosen = [(p, w) for p, w in PROFILES if profiles is None or p in profiles]
        for i, (profile, what) in enumerate(chosen, 1):
            say(f"run {i}: recmgd managing the workload, profile '{profile}' ({what})")
            runs[profile] = _one_run(tmp, config(tmp, backend, budget_mib, profile), seconds,
                                     slow, False, say)
        say(f"run {len(chosen) + 1}: the same, tiering off (recmgd paused: measures, "
            "moves nothing)")
        runs["off"] = _one_run(tmp, config(tmp, backend, budget_mib, "default"), seconds,
                               slow, True, say)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def per_access(t):
        return t["ondemand"] / t["accesses"] if t["accesses"] else 0.0

    off = per_access(runs["off"]["totals"])
    say("\nsummary" + ("" if runs["off"]["real"] else " (simulated tier)") + ":")
    say(f"  {'':<22}{'on-demand/access':>18}{'vs off':>8}{'hit ratio':>11}{'pages moved':>13}"
        f"{'p50 batch':>11}{'tables intact':>15}")
    for label, r in runs.items():
        t = r["totals"]
        fewer = f"{off / per_access(t):.2f}x" if per_access(t) else "-"
        say(f"  {'tiering off' if label == 'off' else 'profile ' + label:<22}"
            f"{per_access(t):>18.4f}{fewer:>8}{100 * t['hit_ratio']:>10.1f}%"
            f"{t['promoted'] + t['demoted']:>13}{r['p50_ms']:>9} ms{str(r['intact']):>15}")
    say("  (vs off: how many times fewer on-demand fetches per access than tiering off)")
    say(json.dumps({label: r["totals"] for label, r in runs.items()}))
    ok = all(r["intact"] for r in runs.values()) and all(r["totals"]["accesses"] > 0
                                                        for r in runs.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run(float(os.environ.get("SECONDS_PER_RUN", "20"))))
