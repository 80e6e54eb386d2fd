"""`recmg bench tiering`'s parts on this host: the workload's hooks (batch times, stop
before first touch), the read-only segment peek, the join of sampled placement with the
replayed access stream, the watermark parser and damo's reading of our arguments. The
whole bench needs a slow node: tests/vm/test_harness.py runs it in the guest."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recmg.capture.reader import SegmentError, SegmentReader, peek_tables
from recmg.client import Client
from recmg.experiments import headtohead as hh
from recmg.movers import placement

PY = sys.executable
RECMG = str(Path(PY).parent / "recmg")

ZONEINFO = """Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 5
  pages free     3840
        min      128
        low      160
        high     192
        promo    224
  pagesets
    cpu: 0
              count: 0
              high:  0
Node 0, zone    DMA32
        min      8138
        low      10172
        high     12206
              high:  5086
Node 1, zone    DMA32
        min      8628
        low      10785
        high     12942
"""


def test_high_watermark_sums_a_nodes_zones_not_the_per_cpu_lines():
    assert hh.high_watermark_bytes(0, ZONEINFO) == (192 + 12206) * 4096
    assert hh.high_watermark_bytes(1, ZONEINFO) == 12942 * 4096
    assert hh.high_watermark_bytes(2, ZONEINFO) == 0


def test_workload_writes_batch_times_and_stops_before_first_touch(tmp_path):
    times = tmp_path / "t.npy"
    wl = subprocess.Popen([RECMG, "workload", "--tables", "2", "--rows", "5000", "--dim", "16",
                           "--batch-size", "32", "--batches", "12", "--drift-period", "4",
                           "--name", "tbstop", "--batch-times", str(times),
                           "--stop-before-fill"], stdout=subprocess.PIPE, text=True)
    try:
        hh.wait_stopped(wl.pid, 60)
        seg = next(Path("/dev/shm").glob(f"recmg.tbstop.{wl.pid}"))
        pid, tables = peek_tables(seg)
        assert pid == wl.pid and [t.info.rows for t in tables] == [5000, 5000]
        # stopped before first touch: not one table page is present yet
        addrs, _ = hh.table_pages(tables)
        assert (placement.query_nodes(wl.pid, addrs) == -errno.ENOENT).all()
        os.kill(wl.pid, signal.SIGCONT)
        out = wl.communicate(timeout=120)[0]
    finally:
        if wl.poll() is None:
            wl.kill()
    assert wl.returncode == 0, out
    t = np.load(times)
    assert len(t) == 12 and (np.diff(t) > 0).all()
    assert abs(t[-1] - time.monotonic_ns()) < 120e9  # CLOCK_MONOTONIC, like the sampler's


def test_peek_reads_the_registry_while_the_ring_has_its_consumer():
    with Client("peek", [("a", 1000, 8), ("b", 300, 4)]) as c, SegmentReader(c.path) as r:
        pid, tables = peek_tables(c.path)
        assert pid == os.getpid() and tables == r.tables
        c.record([np.array([1, 2]), np.array([3])])
        assert r.read().n_batches == 1  # the peek took nothing from the ring


def test_peek_rejects_what_is_not_a_segment(tmp_path):
    junk = tmp_path / "recmg.junk.1"
    junk.write_bytes(b"x" * 4096)
    with pytest.raises(SegmentError, match="not a version"):
        peek_tables(junk)
    with pytest.raises(SegmentError, match="cannot open"):
        peek_tables(tmp_path / "missing")
    with Client("stale", [("a", 100, 4)]) as c:
        stale = tmp_path / "recmg.stale.1"
        stale.write_bytes(Path(c.path).read_bytes())
    child = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True)  # a pid that has just exited
    raw = bytearray(stale.read_bytes())
    raw[16:20] = int(child.stdout).to_bytes(4, "little")
    stale.write_bytes(bytes(raw))
    with pytest.raises(SegmentError, match="not running"):
        peek_tables(stale)


def test_page_stream_is_the_workload_lookups_on_the_registered_pages():
    wl = hh.Workload(tables=2, rows=4000, dim=16, batch_size=8, batches=3)
    with Client("pages", [("t0", 4000, 16), ("t1", 4000, 16)]) as c:
        _, tables = peek_tables(c.path)
    addrs, starts = hh.table_pages(tables)
    assert len(addrs) == starts[-1] == sum((t.length + 4095) // 4096 for t in tables)
    index = {int(a): i for i, a in enumerate(addrs)}
    for pages, rows in zip(hh.page_stream(wl, tables, starts), wl.batches_of_rows()):
        want = [index[int(p) << 12] for t, r in zip(tables, rows) for p in t.page_of_rows(r, 12)]
        assert pages.tolist() == want


def test_join_counts_each_batch_by_the_last_sample_before_it():
    bits = np.packbits(np.array([[1, 0, 0, 0], [0, 0, 1, 1]], bool), axis=1)
    times = np.array([100, 200])
    batch_times = np.array([50, 150, 250])  # before any sample -> the first one
    stream = [np.array([0, 1]), np.array([0, 0, 2]), np.array([2, 3, 0])]
    got = hh.join(batch_times, times, bits, iter(stream))
    assert got["accesses"] == 8
    assert got["fast_share"] == pytest.approx((1 + 2 + 2) / 8)
    assert got["fast_share_2nd_half"] == pytest.approx((2 + 2) / 6)  # batches 1 and 2


def test_the_runs_layout_packs_its_hot_rows_and_the_stream_reads_positions(tmp_path):
    wl = hh.Workload(tables=2, rows=20_000, dim=16, batch_size=64, batches=40)
    hh.make_layout(wl, tmp_path / "run.rlayout")
    pos = hh.layout_positions(tmp_path / "run.rlayout")
    with Client("lay", [("t0", 20_000, 16), ("t1", 20_000, 16)]) as c:
        _, tables = peek_tables(c.path)
    _, starts = hh.table_pages(tables)
    plain = list(hh.page_stream(wl, tables, starts))[20:]
    laid = list(hh.page_stream(wl, tables, starts, pos))[20:]
    assert [len(a) for a in plain] == [len(b) for b in laid]
    def pages_for_half(stream):  # how many pages serve half of the lookups
        counts = np.sort(np.bincount(np.concatenate(stream)))[::-1]
        return int(np.searchsorted(np.cumsum(counts), counts.sum() / 2)) + 1

    # the second half's lookups concentrate on fewer pages under the first half's layout
    assert pages_for_half(laid) < 0.5 * pages_for_half(plain)
    # and the bound under the layout is Belady on the laid-out stream: higher, same budget
    plain_opt, laid_opt = (hh.opt_bound(wl, tables, starts, 64, p) for p in (None, pos))
    assert laid_opt > plain_opt
    every = np.concatenate(list(hh.page_stream(wl, tables, starts, pos))).astype(np.uint64)
    from recmg.engine.policy.cache import opt_keep
    assert laid_opt == pytest.approx(float(opt_keep(every, 64)[1].mean()))


def test_the_workload_with_a_layout_computes_the_same_outputs(tmp_path):
    from recmg.rowlayout import format as lf
    from recmg.workload.dlrm import DLRM, ModelSpec

    spec = ModelSpec(rows=(3000, 2000), dim=16, bottom=(64, 16))
    rng = np.random.default_rng(0)
    lay = lf.make([lf.TableLayout(i, f"t{i}", r, 64, rng.choice(r, r // 4, replace=False))
                   for i, r in enumerate(spec.rows)], [], {})
    lf.write(tmp_path / "w.rlayout", lay)
    plain = DLRM(spec, "wplain", seed=3)
    laid = DLRM(spec, "wlaid", seed=3, layout=str(tmp_path / "w.rlayout"))
    try:
        assert laid.client.layout.id == lay.id
        with SegmentReader(laid.client.path) as r:
            sent = []
            for _ in range(3):
                idx = [rng.integers(0, n, 64) for n in spec.rows]
                offs = [np.arange(0, 64, 8)] * 2
                dense = rng.standard_normal((8, spec.dense_features)).astype(np.float32)
                assert np.array_equal(plain.forward(dense, idx, offs),
                                      laid.forward(dense, idx, offs))
                sent.append(idx)
            first = r.read().keys[:128]  # batch 0: table 0's then table 1's positions
        want = np.concatenate([(np.uint64(t) << np.uint64(40))
                               | laid.client.positions(t, sent[0][t]).astype(np.uint64)
                               for t in range(2)])
        assert first.tolist() == want.tolist()
    finally:
        plain.close()
        laid.close()
    with pytest.raises(ValueError, match="applied by the client"):
        DLRM(spec, None, layout=str(tmp_path / "w.rlayout"))


def test_opt_bound_is_belady_on_the_page_stream():
    wl = hh.Workload(tables=1, rows=2000, dim=16, batch_size=16, batches=20)
    with Client("opt", [("t0", 2000, 16)]) as c:
        _, tables = peek_tables(c.path)
    _, starts = hh.table_pages(tables)
    small, big = (hh.opt_bound(wl, tables, starts, n) for n in (4, 1000))
    pages = np.concatenate(list(hh.page_stream(wl, tables, starts)))
    assert 0 < small < big
    assert big == pytest.approx(1 - len(np.unique(pages)) / len(pages))  # only cold misses


def test_damo_reads_our_schemes_as_meant():
    damo = Path(PY).parent / "damo"
    res = subprocess.run([str(damo), "args", "damon", *hh.damo_start_args(0, 1, "/wl")[1:]],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    kd = json.loads(res.stdout[res.stdout.index("{"):])["kdamonds"]
    schemes = [(k["contexts"][0]["ops"], s["action"], s["target_nid"], s["filters"])
               for k in kd for s in k["contexts"][0]["schemes"]]
    assert [(o, a, n) for o, a, n, _ in schemes] == [("paddr", "migrate_hot", 0),
                                                     ("paddr", "migrate_cold", 1)]
    for *_, filters in schemes:  # every scheme acts on the workload's cgroup only
        assert [(f["filter_type"], f["memcg_path"], f["matching"], f["allow"])
                for f in filters] == [("memcg", "/wl", False, False)]


def test_bench_refuses_a_host_without_a_slow_node():
    res = subprocess.run([RECMG, "bench", "tiering", "--batches", "2"], capture_output=True,
                         text=True, timeout=120)
    if "no slow memory tier" not in res.stderr:
        pytest.skip("this host has a slow tier")
    assert res.returncode == 69


def test_bench_names_an_unknown_contender():
    with pytest.raises(hh.BenchError, match="unknown contenders.*known: first-touch"):
        hh.check_contenders(["first-touch", "zswap"])


def test_table_says_which_contenders_did_not_run():
    text = hh.table({"budget_mib": 32, "rows": [
        {"contender": "damon", "what": "DAMON", "error": "damo is not installed"},
        {"contender": "OPT (bound)", "what": "Belady", "fast_share": 0.806}]})
    assert "| damon (DAMON) | not run: damo is not installed |" in text
    assert "| OPT (bound) | 80.6% | | 32 |" in text


def test_table_marks_a_row_whose_budget_did_not_hold():
    """A guest run gave the kernel 62.6 MiB of free node 0 against about 34 for the
    others (the huge-page reserve fell short) and the table did not say so."""
    row = {"what": "w", "fast_share": 0.6, "fast_share_2nd_half": 0.7, "table_mib_fast": 39.5,
           "pages_migrated": 1, "manager_cpu_s": 0.1, "workload_user_s": 1,
           "workload_sys_s": 1, "p50_ms": 50}
    text = hh.table({"budget_mib": 32, "rows": [
        {**row, "contender": "kernel", "node0_free_mib": 62.6, "budget_held": False},
        {**row, "contender": "recmgd-default", "node0_free_mib": 34.0, "budget_held": True}]})
    assert "| 39.5 (62.6; budget not held) |" in text and "| 39.5 (34.0) |" in text


def test_a_workload_that_exits_before_its_tables_is_named():
    gone = subprocess.Popen([PY, "-c", "pass"])
    gone.wait()
    with pytest.raises(hh.BenchError, match=f"pid {gone.pid}.*exited before"):
        hh.wait_stopped(gone.pid, 5)


def test_a_host_without_cgroup_v2_is_told_how_to_mount_it(tmp_path, monkeypatch):
    monkeypatch.setattr(hh.Cgroup, "ROOT", tmp_path)
    with pytest.raises(hh.BenchError, match="no cgroup v2 hierarchy.*mount -t cgroup2"):
        hh.Cgroup("wl")
    (tmp_path / "cgroup.controllers").write_text("cpu io\n")
    with pytest.raises(hh.BenchError, match="memory controller"):
        hh.Cgroup("wl")


def test_manager_cpu_counts_the_given_processes():
    t = time.process_time()
    while time.process_time() - t < 0.3:  # some CPU time of our own
        pass
    mine = hh.manager_cpu([os.getpid()]) - hh.manager_cpu([])
    assert mine == pytest.approx(time.process_time(), abs=0.05)  # 10 ms clock ticks


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_unwind_the_bench_through_its_restores(tmp_path, sig):
    """Killed by SIGTERM, the bench restored nothing (sysctls, huge pages, the stopped
    workload).  Now SIGTERM and SIGHUP unwind like SIGINT, through every finally."""
    code = f"""
import sys, time, types
from recmg.experiments import headtohead as hh
from recmg.host import topology
topology.probe = lambda *a: types.SimpleNamespace(fast_nodes=[0], slow_nodes=[1])
hh.os.geteuid = lambda: 0
def fake_run(*a):
    try:
        print("changed the host", flush=True)
        time.sleep(60)
    finally:
        open({str(tmp_path / "restored")!r}, "w").write("yes")
hh._run = fake_run
try:
    hh.run(["slow"], hh.Workload(), 32, None, say=lambda m: None)
except KeyboardInterrupt as e:
    print("interrupted:", e, flush=True)
    sys.exit(130)
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "changed the host"
    p.send_signal(sig)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 130 and f"{signal.Signals(sig).name} received" in out
    assert (tmp_path / "restored").read_text() == "yes"
