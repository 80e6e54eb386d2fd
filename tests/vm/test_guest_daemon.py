"""recmgd with real move_pages against a live workload, inside the two-node guest.

Run by tests/vm/test_harness.py::test_guest_suite; skipped anywhere else.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recmg.capture import segment as seg
from recmg.capture.reader import discover
from recmg.service import control
from recmg.movers import placement
from recmg.trace import synthetic

pytestmark = pytest.mark.guest
BIN = Path(sys.executable).parent
ROWS, DIM, TABLES = 50_000, 64, 2  # 12.8 MB per table
BUDGET_MIB, RATE_MIB_S = 4, 32


def registry(path: Path) -> list[tuple[int, int]]:
    """(base, length) of each table, read from the segment header without attaching
    (recmgd holds the consumer lock)."""
    data = path.read_bytes()[:seg.REGISTRY_OFFSET + TABLES * seg.TABLE_ENTRY_BYTES]
    out = []
    for i in range(TABLES):
        e = seg.TABLE_ENTRY.unpack_from(data, seg.REGISTRY_OFFSET + i * seg.TABLE_ENTRY_BYTES)
        out.append((e[6], e[7]))
    return out


def wait_for(pred, timeout_s: float, what: str):
    """pred()'s first true value, polled every 0.2 s, or fail naming what never came."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def test_daemon_keeps_hot_pages_on_node0_and_demotes_cold_ones(tmp_path):
    cfg = tmp_path / "recmgd.toml"
    sock = tmp_path / "ctl.sock"
    cfg.write_text(f"""tick_ms = 200
[target]
segments = ["guestwl"]
[tiers]
fast_nodes = [0]
slow_nodes = [1]
[migration]
backend = "move_pages"
rate_mib_s = {RATE_MIB_S}
min_residency_ticks = 3
[budget]
fast_mib_per_target = {BUDGET_MIB}
[safety]
free_floor_mib = 16
[control]
socket = "{sock}"
[policy]
profile = "frequency"
""")
    wl = subprocess.Popen([str(BIN / "recmg"), "workload", "--tables", str(TABLES), "--rows",
                           str(ROWS), "--dim", str(DIM), "--pooling", "4", "--batch-size", "64",
                           "--alpha", "1.2", "--duration", "300", "--name", "guestwl",
                           "--checksum", "--report-every", "1000"], stdout=subprocess.PIPE,
                          text=True)
    t0 = time.monotonic()
    while not discover(name="guestwl"):
        assert time.monotonic() - t0 < 60, "the workload did not start"
        time.sleep(0.1)
    path = discover(name="guestwl")[0]
    tables = registry(path)
    d = subprocess.Popen([str(BIN / "recmgd"), "-c", str(cfg)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        while not sock.exists():
            assert d.poll() is None, d.communicate()[0]
            time.sleep(0.1)
        start = time.monotonic()

        def settled():
            # attached, demoting, and 25 ticks (5 s of ticks) of it: conditions, not a
            # fixed sleep (a busy host under TCG may take far longer than the ticks)
            s = control.request(str(sock), {"cmd": "status"})["result"]
            return s if s["targets"] and s["totals"]["demoted"] > 0 and s["tick"] >= 25 \
                else None

        st = wait_for(settled, 240, "recmgd attached the workload and demoted its pages")
        elapsed = time.monotonic() - start
        assert st["real_migration"] and st["backend"] == "move_pages"
        tot = st["totals"]
        assert tot["demoted"] > 0, json.dumps(st)
        # rate cap: pages moved per second within the configured MiB/s (10% slack for
        # the first tick's rounding)
        moved_mib = (tot["promoted"] + tot["demoted"]) * 4096 / 2**20
        assert moved_mib / elapsed <= RATE_MIB_S * 1.1, (moved_mib, elapsed)
        # re-query placement: node 0 holds at most the budget (plus pages the kernel
        # placed since the last tick), node 1 holds the cold rest
        pid = wl.pid
        nodes = np.concatenate([placement.query_nodes(pid, placement.page_addresses(b, n))
                                for b, n in tables])
        on0 = int(np.count_nonzero(nodes == 0))
        on1 = int(np.count_nonzero(nodes == 1))
        assert on1 > 0 and on0 <= BUDGET_MIB * 256 + 64, (on0, on1)
        # the hottest rows (the generator's first ranks) sit on node 0
        spec = synthetic.SyntheticSpec(rows=(ROWS,) * TABLES, pooling=(4,) * TABLES,
                                       batch_size=64, alpha=1.2, seed=0)
        gen = synthetic.Generator(spec)
        hot_addrs = []
        for (base, _), (a, b, _c) in zip(tables, gen.maps):
            rows = (np.arange(20) * a + b) % ROWS
            hot_addrs.append((np.uint64(base) + rows.astype(np.uint64) * np.uint64(DIM * 4))
                             & ~np.uint64(4095))
        hot_addrs = np.concatenate(hot_addrs)
        wait_for(lambda: np.mean(placement.query_nodes(pid, hot_addrs) == 0) >= 0.8, 240,
                 "the hottest rows on node 0")
    finally:
        d.send_signal(signal.SIGTERM)
        dout = d.communicate(timeout=60)[0]
        wl.send_signal(signal.SIGTERM)
        wout = wl.communicate(timeout=60)[0]
    assert d.returncode == 0, dout
    assert "tables_intact=True" in wout, wout  # contents survived every move


def status(d: subprocess.Popen, sock: Path) -> dict:
    """recmgd's status; if it cannot be reached, fail saying whether it exited (its
    output is printed by the caller's cleanup)."""
    try:
        return control.request(str(sock), {"cmd": "status"})["result"]
    except OSError as e:
        raise AssertionError(f"recmgd unreachable ({e}); exit status {d.poll()}") from None


def test_workloads_killed_mid_migration_never_take_recmgd_down(tmp_path):
    """Real move_pages against a target that dies while its pages move: move_pages
    answers ESRCH, or EINVAL once the exiting task dropped its mm.  recmgd detaches the
    target each time and keeps running (it crashed on 5 of 15 kills before)."""
    cfg = tmp_path / "recmgd.toml"
    sock = tmp_path / "ctl.sock"
    cfg.write_text(f"""tick_ms = 100
[target]
segments = ["dying"]
[tiers]
fast_nodes = [0]
slow_nodes = [1]
[migration]
backend = "move_pages"
rate_mib_s = 2000.0
min_residency_ticks = 0
[budget]
fast_mib_per_target = 1
[safety]
free_floor_mib = 16
[control]
socket = "{sock}"
""")
    d = subprocess.Popen([str(BIN / "recmgd"), "-c", str(cfg)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    rng = np.random.default_rng(1)
    try:
        while not sock.exists():
            assert d.poll() is None, d.communicate()[0]
            time.sleep(0.1)
        for i in range(5):
            wl = subprocess.Popen([str(BIN / "recmg"), "workload", "--tables", "2", "--rows",
                                   str(ROWS), "--dim", str(DIM), "--duration", "60",
                                   "--name", "dying", "--report-every", "100000"],
                                  stdout=subprocess.DEVNULL)
            t0 = time.monotonic()
            while not [t for t in status(d, sock)["targets"] if t["pid"] == wl.pid]:
                assert time.monotonic() - t0 < 120, "not attached"
                time.sleep(0.1)
            time.sleep(float(rng.uniform(0.2, 1.5)))  # pages are moving now
            wl.kill()
            wl.wait()
            t0 = time.monotonic()
            while status(d, sock)["targets"]:
                assert time.monotonic() - t0 < 30, "not detached"
                time.sleep(0.1)
            assert d.poll() is None, f"recmgd died after kill {i + 1}"
    finally:
        d.send_signal(signal.SIGTERM)
        out = d.communicate(timeout=60)[0]
        print(out)  # shown with a failure (the guest console carries it)
    assert d.returncode == 0, out
    assert "worker failed" not in out and out.count("detached") >= 5, out
