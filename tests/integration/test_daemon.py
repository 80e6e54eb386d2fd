"""recmgd in-process and as a process, against live workloads: pipeline, control
socket, reload, re-attach, sd_notify, metrics, packaging checks."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recmg.capture.reader import discover
from recmg.cli import recmgctl
from recmg.client import Client
from recmg import config as cfgmod
from recmg.service import control, safety
from recmg.service.daemon import Daemon, StartupError
from recmg.service.pipeline import Pipeline
from recmg.trace import format as tf

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests/data/topology"
PY = sys.executable


def wait(pred, timeout=30.0, step=0.05):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("condition not met in time")


def write_config(tmp_path, **sections) -> Path:
    lines = [f"tick_ms = {sections.pop('tick_ms', 100)}"]
    if "shm_dir" in sections:
        lines.append(f'shm_dir = "{sections.pop("shm_dir")}"')
    base = {"target": {"segments": ["*"]}, "migration": {"backend": "simulated"},
            "budget": {"fast_mib_per_target": 1},
            "control": {"socket": str(tmp_path / "ctl.sock")}}
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    for sec, kv in base.items():
        lines.append(f"[{sec}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in kv.items()]
    p = tmp_path / "recmgd.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def start_workload(name, seconds=60, tables=2, rows=20000, dim=16, env=None):
    return subprocess.Popen([PY, "-m", "recmg.cli.recmg", "workload", "--tables", str(tables),
                             "--rows", str(rows), "--dim", str(dim), "--batch-size", "64",
                             "--pooling", "4", "--duration", str(seconds), "--name", name,
                             "--report-every", "1000"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def start_daemon(cfg_path, env=None, args=()):
    return subprocess.Popen([PY, "-m", "recmg.cli.recmgd", "-c", str(cfg_path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


def stop(d) -> str:
    """SIGTERM a recmgd process and return what it printed."""
    d.send_signal(signal.SIGTERM)
    return d.communicate(timeout=30)[0]


def ctl(sock, req):
    return control.request(str(sock), req)


# ------------------------------------------------------------------- in-process pipeline
def test_pipeline_in_process_promotes_hot_pages_within_budget(tmp_path):
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\n'
                       '[budget]\nfast_mib_per_target = 1\n')
    profile = cfgmod.load_profile("frequency")
    with Client("inproc", [("a", 100_000, 64)], shm_dir=str(tmp_path)) as c:  # 25 MB
        pipe = Pipeline(cfg, profile, [0], [1])
        state = pipe.attach(Path(c.path))
        assert state is not None and state.pages.n_pages == 6250
        assert state.fast_pages() == 0  # simulated: everything starts slow
        hot = np.arange(0, 100_000, 400)[:200]  # 200 rows on 200 pages
        rng = np.random.default_rng(0)
        for _ in range(5):
            for _ in range(10):
                c.record([np.concatenate([hot, rng.integers(0, 100_000, 50)])])
            pipe.tick()
        st = pipe.status().to_dict()["targets"][0]
        assert st["fast_pages"] <= st["budget_pages"] == 256
        hot_pages = state.pages.pages_of_keys(hot.astype(np.uint64))
        assert np.isin(state.engine.placement[hot_pages], [0]).mean() > 0.95
        assert st["promoted"] > 0 and st["hit_ratio"] > 0
        pipe.paused = True
        before = st["promoted"]
        c.record([rng.integers(0, 100_000, 500)])
        pipe.tick()
        assert pipe.status().to_dict()["targets"][0]["promoted"] == before
        pipe.close()


def test_ingest_above_the_limit_sets_the_clients_sampling_word(tmp_path):
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\n'
                       '[target]\nmax_accesses_per_s = 1000.0\n')
    prof = cfgmod.load_profile("lru")
    with Client("sampled", [("a", 1000, 4)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, prof, [0], [1])
        st = pipe.attach(Path(c.path))
        for _ in range(3):
            for _ in range(20):
                c.record([np.arange(500)])  # 10k accesses per tick, far above 1k/s
            time.sleep(0.2)
            pipe.tick()
        assert st.sampling > 1 and pipe.status().to_dict()["targets"][0]["sampling"] == st.sampling
        before = c.stats()["sampled_out_batches"]
        for _ in range(20):
            c.record([np.arange(500)])
        assert c.stats()["sampled_out_batches"] > before  # the client honours it
        pipe.close()


def test_offered_rate_comes_from_the_clients_timestamps_not_the_read_time(tmp_path):
    """A 0.3 M accesses/s client whose backlog is read a moment after attach is not
    sampled under a 1 M/s limit (it was set to 1 in 20 when the backlog was divided by
    the time since attach)."""
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\n'
                       '[target]\nmax_accesses_per_s = 1000000.0\n')
    with Client("paced", [("a", 100_000, 4)], shm_dir=str(tmp_path)) as c:
        t0 = time.monotonic()
        for i in range(30):  # 3,000 keys every 10 ms
            c.record([np.arange(3000) + i])
            time.sleep(max(0.0, t0 + (i + 1) * 0.01 - time.monotonic()))
        pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1])
        st = pipe.attach(Path(c.path))
        pipe.tick()  # reads the whole backlog at once
        assert st.sampling == 1
        assert 0.1e6 < st.rate < 0.45e6
        for i in range(10):
            c.record([np.arange(3000) + i])
            time.sleep(0.01)
        pipe.tick()
        assert st.sampling == 1 and c.stats()["sampled_out_batches"] == 0
        pipe.close()


def _fake_host(tmp_path, psi=1.0, total_kb=10_000_000, free_kb=9_000_000, file_kb=0):
    proc = tmp_path / "proc/pressure"
    proc.mkdir(parents=True, exist_ok=True)
    (proc / "memory").write_text(f"some avg10={psi:.2f} avg60=1.00 avg300=0.00 total=1\n"
                                 "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    node = tmp_path / "sys/devices/system/node/node0"
    node.mkdir(parents=True, exist_ok=True)
    (node / "meminfo").write_text(f"Node 0 MemTotal: {total_kb} kB\nNode 0 MemFree: {free_kb} kB\n"
                                  f"Node 0 Active(file): {file_kb // 2} kB\n"
                                  f"Node 0 Inactive(file): {file_kb - file_kb // 2} kB\n")
    return str(tmp_path / "sys"), str(tmp_path / "proc")


def test_psi_and_free_floor_brakes_read_real_memory_only_for_real_moves(tmp_path):
    s = cfgmod.Safety()
    sys_root, proc_root = _fake_host(tmp_path, psi=55.0, free_kb=100)
    b = safety.check(s, [0], {0: 0.0}, 0.8, True, sys_root, proc_root)
    assert b.reason == "psi" and b.stops == "all moves" and "55.0%" in b.detail
    # the simulated tier does not read the host's pressure or free memory
    assert safety.check(s, [0], {0: 0.0}, 0.8, False, sys_root, proc_root) is None
    sys_root, proc_root = _fake_host(tmp_path, free_kb=100)
    b = safety.check(s, [0], {0: 0.0}, 0.8, True, sys_root, proc_root)
    assert b.reason == "free_floor" and b.stops == "promotions"


def test_page_cache_counts_as_available_and_only_recmgs_pages_count_for_the_share(tmp_path):
    """A node 95% full of page cache is an ordinary host: no brake (it braked for good
    before, counting MemTotal - MemFree)."""
    s = cfgmod.Safety()
    sys_root, proc_root = _fake_host(tmp_path, free_kb=500_000, file_kb=9_000_000)
    assert safety.check(s, [0], {0: 100.0}, 0.8, True, sys_root, proc_root) is None
    # recmg's own placement at the share limit: no promotions
    b = safety.check(s, [0], {0: 0.8 * 10_000_000 / 1024}, 0.8, True, sys_root, proc_root)
    assert b.reason == "node_share" and b.stops == "promotions"


def test_node_share_brake_in_the_pipeline_engages_logs_shows_and_releases(tmp_path, caplog):
    """A 2 MiB fast node with a 0.25 share: recmg may place 512 KiB (128 pages); the
    brake engages there, is logged and shown, and releases when pages are demoted."""
    sys_root, _ = _fake_host(tmp_path, total_kb=2048, free_kb=2048)
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\n'
                       '[budget]\nfast_mib_per_target = 4\nmax_fast_node_share = 0.25\n')
    with Client("share", [("a", 4096, 1024)], shm_dir=str(tmp_path)) as c:  # 4096 pages
        pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1], "/proc", sys_root)
        st = pipe.attach(Path(c.path))
        with caplog.at_level("INFO", logger="recmgd"):
            for i in range(4):
                c.record([np.arange(i * 100, (i + 1) * 100)])
                pipe.tick()
            # LRU alone would hold all 400 pages; the brake stops at the limit plus at
            # most one tick's promotions (100 pages)
            assert 128 <= st.fast_pages() <= 228
            assert pipe.brake is not None and pipe.brake.reason == "node_share"
            shown = pipe.status().to_dict()["brake"]
            assert shown["reason"] == "node_share" and "0.25" in shown["detail"]
            assert "safety brake node_share engaged" in caplog.text
            st.engine.pages.node[:] = 1  # all demoted (the simulated tier's placement)
            pipe.tick()
            assert pipe.brake is None and "safety brake node_share released" in caplog.text
        pipe.close()


def test_conflicts_refuse_or_warn_and_missing_slow_tier():
    t = FIXTURES / "two-socket-cxl"
    refuse = cfgmod.parse('[safety]\non_conflict = "refuse"\n')
    with pytest.raises(StartupError) as ei:
        Daemon(refuse, None, sys_root=str(t / "sys"), proc_root=str(t / "proc"))
    assert ei.value.code == 69 and "tiering mode" in str(ei.value)
    d = Daemon(cfgmod.parse(""), None, sys_root=str(t / "sys"), proc_root=str(t / "proc"))
    assert (d.fast, d.slow) == ([0, 1], [2, 3])
    d.watcher.close()
    assert d.cfg.migration.backend == "move_pages"  # auto, with a slow tier
    one = FIXTURES / "one-node"
    strict = cfgmod.parse('[migration]\nbackend = "move_pages"\n')
    with pytest.raises(StartupError, match="no slow memory tier") as ei:
        Daemon(strict, None, sys_root=str(one / "sys"), proc_root=str(one / "proc"))
    assert ei.value.code == 69


def test_default_config_on_a_one_node_host_runs_simulated_and_says_so(tmp_path, caplog):
    one = FIXTURES / "one-node"
    with caplog.at_level("WARNING", logger="recmgd"):
        d = Daemon(cfgmod.parse(""), None, sys_root=str(one / "sys"),
                   proc_root=str(one / "proc"))
    try:
        assert d.cfg.migration.backend == "simulated" and d.auto_backend
        assert "NO PAGES MOVE" in caplog.text and "no slow memory tier" in caplog.text
        st = d.handle("status", {}, None)
        assert st["backend"] == "simulated" and st["backend_auto"] and not st["real_migration"]
        assert "SIMULATED" in recmgctl.render_status(st)
    finally:
        d.watcher.close()


def test_check_config_without_a_file_says_defaults(tmp_path, monkeypatch, capsys):
    from recmg.cli import recmgd

    monkeypatch.setattr(cfgmod, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    assert recmgd.main(["--check-config"]) == 0
    out = capsys.readouterr().out
    assert "absent.toml: the built-in defaults: ok" in out and "backend auto" in out


# --------------------------------------------------------------------- recmgd as process
def test_a_scan_of_cold_pages_does_not_displace_the_hot_ones(tmp_path):
    """The default profile's admission test: once the budget is full of hot pages, pages
    read once each (a scan) are wanted by S3-FIFO's small queue but not hotter than the
    pages they would displace, so they stay slow, and status counts the refusals."""
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\n'
                       '[budget]\nfast_mib_per_target = 1\n')
    profile = cfgmod.load_profile("default")
    with Client("scan", [("a", 100_000, 64)], shm_dir=str(tmp_path)) as c:  # 16 rows a page
        pipe = Pipeline(cfg, profile, [0], [1])
        state = pipe.attach(Path(c.path))
        hot = np.arange(0, 256 * 16, 16)  # 256 rows on 256 pages: the whole budget
        for _ in range(6):
            for _ in range(10):
                c.record([hot])
            pipe.tick()
        hot_pages = state.pages.pages_of_keys(hot.astype(np.uint64))
        assert np.isin(state.engine.placement[hot_pages], [0]).mean() > 0.95
        cold = np.arange(256 * 16, 100_000, 16)
        for t in range(20):  # 60 new pages a tick, each read once
            c.record([cold[60 * t:60 * (t + 1)]])
            pipe.tick()
        assert np.isin(state.engine.placement[hot_pages], [0]).mean() > 0.95
        st = pipe.status().to_dict()["targets"][0]
        assert st["refused_by_admission"] > 0 and st["fast_pages"] <= st["budget_pages"]
        from recmg.service import metrics

        assert re.search(r'^recmgd_admission_refused_pages_total\{target="scan"\} [1-9]',
                         metrics.exposition(), re.M)
        pipe.close()
    assert 'target="scan"' not in metrics.exposition()  # forgotten with the target


def test_daemon_process_against_live_workload(tmp_path, capsys):
    cfgp = write_config(tmp_path, metrics={"textfile": str(tmp_path / "m.prom")})
    sock = tmp_path / "ctl.sock"
    wl = start_workload("live")
    d = start_daemon(cfgp)
    try:
        wait(lambda: sock.exists() and ctl(sock, {"cmd": "status"})["result"]["targets"])
        st = wait(lambda: (lambda r: r if r["totals"]["promoted"] > 0 else None)(
            ctl(sock, {"cmd": "status"})["result"]))
        assert st["backend"] == "simulated" and not st["real_migration"]
        assert st["targets"][0]["segment"].startswith("recmg.live.")
        assert st["totals"]["accesses"] > 0
        assert recmgctl.main(["--socket", str(sock), "status"]) == 0
        assert recmgctl.main(["--socket", str(sock), "pause"]) == 0
        assert ctl(sock, {"cmd": "status"})["result"]["paused"] is True
        assert recmgctl.main(["--socket", str(sock), "resume"]) == 0
        text = ctl(sock, {"cmd": "metrics"})["result"]
        assert re.search(r'^recmgd_pages_promoted_total\{target="live"\} [1-9]', text, re.M)
        assert "pid" not in text  # no pid labels
        assert "_created" not in text  # no creation-time twins
        wait(lambda: (tmp_path / "m.prom").exists())
        assert "recmgd_ticks_total" in (tmp_path / "m.prom").read_text()
        out = tmp_path / "rec.rtrace"
        assert ctl(sock, {"cmd": "record", "action": "start", "output": str(out),
                          "batches": 5})["ok"]
        wait(lambda: out.exists())
        from recmg.trace import format as tf
        assert tf.read(out).n_batches == 5
        # --wait says how far it got, and the finished recording keeps its count
        out2 = tmp_path / "rec2.rtrace"
        assert recmgctl.main(["--socket", str(sock), "record", "-o", str(out2), "--batches",
                              "400", "--wait", "--timeout", "120"]) == 0
        err = capsys.readouterr()
        assert re.search(r"recording recmg\.live\.\d+: \d+ of 400 batches", err.err)
        assert '"have": 400' in err.out and tf.read(out2).n_batches == 400
    finally:
        wl.kill()
        out = stop(d)
    assert d.returncode == 0, out
    assert "recmgd stopped" in out and not sock.exists()


def test_reload_with_bad_config_or_policy_keeps_the_old_one(tmp_path):
    cfgp = write_config(tmp_path)
    sock = tmp_path / "ctl.sock"
    d = start_daemon(cfgp)
    try:
        wait(sock.exists)
        good = cfgp.read_text()
        cfgp.write_text(good + "[bogus]\nx = 1\n")
        r = ctl(sock, {"cmd": "reload"})
        assert not r["ok"] and "bogus" in r["error"] and "old config kept" in r["error"]
        d.send_signal(signal.SIGHUP)  # the same path by signal: still alive, still default

        def failed_reloads():
            text = ctl(sock, {"cmd": "metrics"})["result"]
            found = re.search(r'^recmgd_reloads_total\{result="failed"\} (\S+)', text, re.M)
            return float(found.group(1)) if found else 0.0

        wait(lambda: failed_reloads() >= 2)  # the SIGHUP reload has run (and failed)
        st = ctl(sock, {"cmd": "status"})["result"]
        assert st["profile"] == "default" and d.poll() is None
        cfgp.write_text(good)
        r = ctl(sock, {"cmd": "policy", "action": "set", "name": "nonexistent"})
        assert not r["ok"] and "unknown profile" in r["error"]
        assert ctl(sock, {"cmd": "status"})["result"]["profile"] == "default"
        r = ctl(sock, {"cmd": "policy", "action": "set", "name": "lru"})
        assert r["ok"] and r["result"]["caching"] == "lru"
        assert ctl(sock, {"cmd": "status"})["result"]["profile"] == "lru"
        names = [p["name"] for p in ctl(sock, {"cmd": "policy", "action": "list"})["result"]]
        assert {"default", "lru", "frequency"} <= set(names)
    finally:
        stop(d)


def test_target_that_exits_and_restarts_is_reattached(tmp_path):
    cfgp = write_config(tmp_path)
    sock = tmp_path / "ctl.sock"
    d = start_daemon(cfgp)
    first = start_workload("again")
    try:
        wait(lambda: sock.exists() and [t for t in ctl(sock, {"cmd": "status"})["result"]
                                        ["targets"] if t["pid"] == first.pid])
        first.kill()
        first.wait()
        wait(lambda: not ctl(sock, {"cmd": "status"})["result"]["targets"])
        second = start_workload("again")
        try:
            wait(lambda: [t for t in ctl(sock, {"cmd": "status"})["result"]["targets"]
                          if t["pid"] == second.pid])
        finally:
            second.kill()
            second.wait()
        # killed clients leave their segments behind: recmgd removes them and forgets
        # their rejection (status is the end-of-tick snapshot: the tick that removed the
        # file may not have published yet)
        wait(lambda: not discover(name="again"))
        wait(lambda: not ctl(sock, {"cmd": "status"})["result"]["rejected"])
        st = ctl(sock, {"cmd": "status"})["result"]
        assert not st["targets"] and not st["rejected"]
    finally:
        out = stop(d)
    assert "detached" in out and "process exited" in out
    assert "removed stale segment" in out


def test_a_target_whose_file_is_removed_as_stale_is_detached_in_the_same_tick(tmp_path):
    """The exit event can come after discovery finds the process gone and removes its
    file: the target was left attached to a removed file until a later tick (seen as a
    target still listed once its file and rejection were gone)."""
    cfg = cfgmod.parse(f'shm_dir = "{tmp_path}"\n[target]\nsegments = ["*"]\n'
                       '[migration]\nbackend = "simulated"\n'
                       f'[control]\nsocket = "{tmp_path / "ctl.sock"}"\n')
    d = Daemon(cfg, None, sys_root=str(ROOT / "tests/data/topology/one-node/sys"))
    w = start_workload("stale", seconds=60, env={"RECMG_SHM_DIR": str(tmp_path)})
    try:
        wait(lambda: discover(shm_dir=str(tmp_path), name="stale") or w.poll() is not None)
        d.discover()
        assert [t.pid for t in d.pipeline.targets.values()] == [w.pid]
        w.kill()
        w.wait()
        d.discover()  # no watcher poll: the exit event has not been seen
        assert not discover(shm_dir=str(tmp_path), name="stale")
        assert not d.pipeline.targets
    finally:
        w.kill()
        w.wait()
        d.pipeline.close()


def test_malformed_oversized_and_unauthorized_requests(tmp_path):
    sockdir = Path(f"/tmp/recmg-ctl-test-{os.getpid()}")  # reachable by uid 65534
    shutil.rmtree(sockdir, ignore_errors=True)
    sock = sockdir / "ctl.sock"
    cfgp = write_config(tmp_path, control={"max_request_bytes": 1024,
                                           "max_requests_per_s": 5.0, "socket": str(sock)})
    d = start_daemon(cfgp)
    try:
        wait(sock.exists)
        for payload, code in ((b"not json\n", "EINVAL"), (b"[1, 2]\n", "EINVAL"),
                              (b'{"cmd": "format-disk"}\n', "EINVAL"),
                              (b'{"nocmd": 1}\n', "EINVAL")):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
                s.sendall(payload)
                assert json.loads(s.makefile().readline())["code"] == code
        with socket.socket(socket.AF_UNIX) as s:  # oversized: error, then closed
            s.connect(str(sock))
            s.sendall(b'{"cmd": "status", "pad": "' + b"x" * 4000 + b'"}\n')
            f = s.makefile()
            assert json.loads(f.readline())["code"] == "E2BIG"
            assert f.readline() == ""
        with socket.socket(socket.AF_UNIX) as s:  # rate limit
            s.connect(str(sock))
            s.sendall(b'{"cmd": "version"}\n' * 12)
            replies = [json.loads(x) for x in s.makefile().read().splitlines()]
            assert replies[-1]["code"] == "EAGAIN" and len(replies) <= 7
        os.chmod(sockdir, 0o755)
        os.chmod(sock, 0o666)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # an unprivileged peer: SO_PEERCRED says uid 65534
            try:
                os.setgid(65534)
                os.setuid(65534)
                res = [control.request(str(sock), {"cmd": c})["code"] for c in ("status",
                                                                                  "pause")]
                os.write(w, json.dumps(res).encode())
            except BaseException as e:  # noqa: BLE001 - report to the parent
                os.write(w, json.dumps([repr(e)]).encode())
            finally:
                os._exit(0)
        os.close(w)
        got = json.loads(os.read(r, 1000))
        os.waitpid(pid, 0)
        assert got == ["EPERM", "EPERM"]
        assert d.poll() is None  # the daemon kept running through all of it
    finally:
        stop(d)
        shutil.rmtree(sockdir, ignore_errors=True)


def test_sd_notify_sequence(tmp_path):
    ns = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(ns))
    listener.settimeout(20)
    cfgp = write_config(tmp_path)
    d = start_daemon(cfgp, env={"NOTIFY_SOCKET": str(ns), "WATCHDOG_USEC": "1000000"})
    msgs = []

    def until(pred):
        while not any(pred(m) for m in msgs):
            msgs.append(listener.recv(4096).decode())

    try:
        until(lambda m: "READY=1" in m)
        until(lambda m: m == "WATCHDOG=1")
        d.send_signal(signal.SIGHUP)
        until(lambda m: "RELOADING=1" in m)
        until(lambda m: "READY=1" in m and "STATUS=profile" in m)
        d.send_signal(signal.SIGTERM)
        until(lambda m: "STOPPING=1" in m)
    finally:
        d.wait(timeout=30)
        listener.close()
    assert d.returncode == 0
    reloading = next(m for m in msgs if "RELOADING=1" in m)
    assert re.search(r"MONOTONIC_USEC=\d+", reloading)
    order = [i for i, m in enumerate(msgs) if "READY=1" in m or "RELOADING=1" in m
             or "STOPPING=1" in m]
    kinds = [("READY" if "READY=1" in msgs[i] else "RELOADING" if "RELOADING" in msgs[i]
              else "STOPPING") for i in order]
    assert kinds[:1] == ["READY"] and kinds[-1] == "STOPPING"
    assert kinds.index("RELOADING") < len(kinds) - 1 and kinds[kinds.index("RELOADING") + 1] == "READY"


def test_http_metrics_are_opt_in_and_loopback(tmp_path):
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfgp = write_config(tmp_path, metrics={"http_port": port})
    d = start_daemon(cfgp)
    try:
        wait(lambda: (tmp_path / "ctl.sock").exists())
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"recmgd_ticks_total" in body
    finally:
        stop(d)


def test_recmgctl_without_daemon_and_exit_codes(tmp_path, capsys):
    assert recmgctl.main(["--socket", str(tmp_path / "none.sock"), "status"]) == 69
    assert "recmgd is not running" in capsys.readouterr().err


def test_recmgd_socket_flag_overrides_the_config_and_survives_reload(tmp_path):
    cfgp = write_config(tmp_path)
    other = tmp_path / "other.sock"
    d = start_daemon(cfgp, args=["--socket", str(other)])
    try:
        wait(other.exists)
        assert not (tmp_path / "ctl.sock").exists()
        assert recmgctl.main(["reload", "--socket", str(other)]) == 0
        assert ctl(other, {"cmd": "status"})["ok"]
    finally:
        out = stop(d)
    assert d.returncode == 0, out


@pytest.mark.parametrize("prog", ["recmgd", "recmgctl", "recmg"])
def test_usage_errors_exit_64(prog):
    """sysexits EX_USAGE for every command, as documented (argparse's own is 2)."""
    res = subprocess.run([PY, "-m", f"recmg.cli.{prog}", "--no-such-flag"],
                         capture_output=True, text=True)
    assert res.returncode == 64 and "error:" in res.stderr


def test_bash_completion_matches_the_argument_parser():
    text = (ROOT / "packaging/completion/recmgctl.bash").read_text()
    parser = recmgctl.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    words = re.search(r'local commands="([^"]+)"', text).group(1).split()
    assert sorted(words) == sorted(sub.choices)
    policy = next(a for a in sub.choices["policy"]._actions if a.dest == "action")
    assert all(w in text for w in policy.choices)
    for name, p in sub.choices.items():
        for a in p._actions:
            for opt in a.option_strings:
                if opt.startswith("--") and opt != "--help" and name in ("check", "status",
                                                                           "record"):
                    assert opt in text, (name, opt)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze")
def test_systemd_unit_verifies(tmp_path):
    unit = (ROOT / "packaging/systemd/recmgd.service").read_text()
    recmgd = shutil.which("recmgd") or str(Path(PY).parent / "recmgd")
    unit = unit.replace("/usr/bin/recmgd", recmgd)
    unit = "\n".join(ln for ln in unit.splitlines() if not ln.startswith("Documentation="))
    p = tmp_path / "recmgd.service"
    p.write_text(unit + "\n")
    res = subprocess.run(["systemd-analyze", "verify", str(p)], capture_output=True, text=True)
    problems = [ln for ln in (res.stdout + res.stderr).splitlines()
                if "recmgd.service" in ln]
    assert not problems, problems


def test_journal_records_carry_structured_fields():
    import logging

    from systemd.journal import JournalHandler

    from recmg.service.pipeline import MSG_ATTACH, journal_fields
    sent = []
    h = JournalHandler(sender_function=lambda *a, **kw: sent.append((a, kw)))
    log = logging.getLogger("recmgd-journal-test")
    log.addHandler(h)
    log.setLevel("INFO")
    log.info("attached x", extra=journal_fields(MSG_ATTACH, 42, "recmg.x.42"))
    (args, fields), = sent
    assert args[0] == "attached x"
    assert fields["MESSAGE_ID"] == MSG_ATTACH and fields["RECMGD_TARGET_PID"] == 42
    assert fields["RECMGD_SEGMENT"] == "recmg.x.42"


def test_second_daemon_on_the_same_socket_exits_73_and_bad_profile_78(tmp_path):
    cfgp = write_config(tmp_path)
    sock = tmp_path / "ctl.sock"
    first = start_daemon(cfgp)
    try:
        wait(sock.exists)
        second = start_daemon(cfgp)
        out = second.communicate(timeout=60)[0]
        assert second.returncode == 73 and "another recmgd is listening" in out
        assert first.poll() is None
    finally:
        stop(first)
    cfgp.write_text(cfgp.read_text() + '[policy]\nprofile = "nope"\n')
    res = subprocess.run([PY, "-m", "recmg.cli.recmgd", "--check-config", str(cfgp)],
                         capture_output=True, text=True)
    assert res.returncode == 78 and "unknown profile 'nope'" in res.stderr
    assert "policy.profile: policy.profile" not in res.stderr


def test_recmgctl_record_needs_an_output(tmp_path, capsys):
    assert recmgctl.main(["--socket", str(tmp_path / "x.sock"), "record"]) == 64
    assert "needs -o/--output" in capsys.readouterr().err


def test_start_with_a_missing_read_group_is_a_config_error(tmp_path):
    cfgp = write_config(tmp_path, control={"read_group": "no-such-group-recmg"})
    res = subprocess.run([PY, "-m", "recmg.cli.recmgd", "-c", str(cfgp)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 78 and "no group 'no-such-group-recmg'" in res.stderr


def test_reload_says_which_settings_need_a_restart(tmp_path):
    cfgp = write_config(tmp_path)
    sock = tmp_path / "ctl.sock"
    d = start_daemon(cfgp)
    try:
        wait(sock.exists)
        cfgp.write_text(cfgp.read_text() + "[tiers]\nfast_nodes = [0]\n"
                        "[metrics]\nhttp_port = 0\n")
        r = ctl(sock, {"cmd": "reload"})
        assert r["ok"] and r["result"]["not_applied"] == ["tiers"]
        r = ctl(sock, {"cmd": "policy", "action": "set", "name": "lru"})
        assert r["ok"] and r["result"]["caching"] == "lru"
    finally:
        out = stop(d)
    assert "tiers changed but apply only at restart" in out


def test_sighup_during_startup_does_not_kill_recmgd(tmp_path):
    """From the moment recmgd's entry module is loaded (SIGHUP in SigIgn), a SIGHUP
    before the reload handler is installed is ignored, not fatal."""
    cfgp = write_config(tmp_path)
    sock = tmp_path / "ctl.sock"
    d = start_daemon(cfgp)

    def hup_ignored():
        try:
            status = Path(f"/proc/{d.pid}/status").read_text()
        except FileNotFoundError:
            return False
        ign = int(re.search(r"^SigIgn:\s+([0-9a-f]+)", status, re.M).group(1), 16)
        return bool(ign & (1 << (signal.SIGHUP - 1)))

    try:
        wait(hup_ignored, timeout=60, step=0.002)
        sent = 0
        while not sock.exists() and d.poll() is None:
            d.send_signal(signal.SIGHUP)
            sent += 1
            time.sleep(0.01)
        assert d.poll() is None and sent > 0
        assert ctl(sock, {"cmd": "version"})["ok"]
    finally:
        stop(d)


def test_a_fatal_signal_prints_every_threads_python_stack(tmp_path):
    """A crash in native code (here a SIGSEGV sent to it) leaves each thread's Python
    stack in recmgd's output, the journal under the unit: the worker's and the main
    thread's, so a crash report says where it was."""
    cfgp = write_config(tmp_path)
    d = start_daemon(cfgp)
    try:
        wait(lambda: (tmp_path / "ctl.sock").exists() or d.poll() is not None, timeout=60)
        assert ctl(tmp_path / "ctl.sock", {"cmd": "version"})["ok"]
        d.send_signal(signal.SIGSEGV)
        out = d.communicate(timeout=30)[0]
    finally:
        if d.poll() is None:
            d.kill()
    assert d.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in out, out
    assert "_worker" in out and "serve" in out, out


class _FailingMigrator:
    """Wraps a target's mover; apply() fails as move_pages does for a target whose mm
    is gone (EINVAL)."""

    def __init__(self, inner):
        self.inner, self.name, self.real, self.ideal = inner, inner.name, inner.real, False

    def locate(self, *a):
        return self.inner.locate(*a)

    def apply(self, *a):
        raise OSError(22, "Invalid argument (move_pages)")


def test_an_error_in_one_target_detaches_and_quarantines_it_only(tmp_path):
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\n')
    prof = cfgmod.load_profile("lru")
    with Client("good", [("a", 1000, 64)], shm_dir=str(tmp_path)) as good, \
            Client("bad", [("a", 1000, 64)], shm_dir=str(tmp_path)) as bad:
        pipe = Pipeline(cfg, prof, [0], [1])
        pipe.attach(Path(good.path))
        eng = pipe.attach(Path(bad.path)).engine
        eng.mover = _FailingMigrator(eng.mover)
        bad.record([np.arange(100)])
        pipe.tick()  # the process is alive: an error of ours, not an exit
        name = Path(bad.path).name
        assert name not in pipe.targets and "OSError" in pipe.rejected[name]
        assert not pipe.may_attach(name)  # quarantined
        assert pipe.attach(Path(bad.path)) is not None  # (a manual attach still works)
        good.record([np.arange(100)])
        pipe.tick()
        assert Path(good.path).name in pipe.targets
        assert pipe.targets[Path(good.path).name].stats.promoted > 0
        pipe.close()


def test_a_target_killed_mid_move_is_detached_as_exited(tmp_path):
    """The real race: the client dies while its moves fail."""
    code = ("import sys, time, numpy as np\nfrom recmg.client import Client\n"
            f"c = Client('dying', [('a', 1000, 64)], shm_dir={str(tmp_path)!r})\n"
            "c.record([np.arange(200)])\nprint(c.path, flush=True)\ntime.sleep(60)\n")
    p = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    path = Path(p.stdout.readline().strip())
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\n')
    pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1])
    eng = pipe.attach(path).engine
    eng.mover = _FailingMigrator(eng.mover)
    p.kill()
    p.wait()
    pipe.tick()
    assert not pipe.targets and path.name not in pipe.rejected
    assert pipe.retired.batches == 1  # what it recorded before dying was read
    path.unlink()


def test_a_narrower_target_set_on_reload_detaches_attached_targets(tmp_path):
    cfgp = write_config(tmp_path)
    sock = tmp_path / "ctl.sock"
    wl = start_workload("narrow")
    d = start_daemon(cfgp)
    try:
        wait(lambda: sock.exists() and ctl(sock, {"cmd": "status"})["result"]["targets"])
        cfgp.write_text(cfgp.read_text().replace('[target]\n', '[target]\n'
                                                 'allowed_uids = [12345]\n'))
        assert ctl(sock, {"cmd": "reload"})["ok"]
        st = ctl(sock, {"cmd": "status"})["result"]
        assert not st["targets"]
        time.sleep(0.5)  # and it is not attached again
        st = ctl(sock, {"cmd": "status"})["result"]
        assert not st["targets"] and any("allowed uids" in why for why in st["rejected"].values())
    finally:
        wl.kill()
        out = stop(d)
    assert "is no longer in target.allowed_uids" in out


def test_a_target_whose_tables_span_too_many_pages_is_rejected(tmp_path):
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\n[target]\nmax_pages = 1000\n')
    with Client("huge", [("a", 100_000, 64)], shm_dir=str(tmp_path)) as c:  # 6250 pages
        pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1])
        assert pipe.attach(Path(c.path)) is None
        assert "more than target.max_pages (1000)" in pipe.rejected[Path(c.path).name]
        pipe.close()


def _unprivileged_client(shm_dir: Path, name: str, seconds: float) -> int:
    """Fork a client process of uid 65534 that records batches for ``seconds``.  It
    makes itself dumpable again after the uid change, as a process a user starts is.
    Everything it needs is imported and computed before the fork: uid 65534 cannot
    read this interpreter's standard library."""
    import ctypes

    batches = [b % 20000 for b in np.random.default_rng(0).zipf(1.3, (64, 256))]
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
            c = Client(name, [("a", 20000, 64)], shm_dir=str(shm_dir),
                       key_capacity=1 << 16)
            t0, i = time.monotonic(), 0
            while time.monotonic() - t0 < seconds:
                c.record([batches[i % len(batches)]])
                i += 1
                time.sleep(0.005)
            c.close()
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(0)
    return pid


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to drop to the unit's capabilities")
@pytest.mark.parametrize("in_group", [True, False], ids=["recmg-group", "no-group"])
def test_recmgd_with_the_units_capabilities_manages_another_uids_workload(tmp_path, in_group):
    """recmgd as the shipped unit runs it: uid 0 with exactly the unit's capability
    bounding set (no CAP_DAC_OVERRIDE), a member of the segment directory's group;
    the workload is another uid's process, its segment in a setgid directory as
    packaging/tmpfiles.d makes it.  Without the group the segment cannot be opened."""
    import grp

    unit = (ROOT / "packaging/systemd/recmgd.service").read_text()
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M).group(1).split()
    assert "SupplementaryGroups=recmg" in unit
    bounding = "-all," + ",".join("+" + c.lower().removeprefix("cap_") for c in caps)
    gid = next(g for g in range(4321, 5000) if g not in {x.gr_gid for x in grp.getgrall()})
    shm = Path(f"/tmp/recmg-unit-test-{os.getpid()}")
    shutil.rmtree(shm, ignore_errors=True)
    shm.mkdir()
    os.chown(shm, 0, gid)
    os.chmod(shm, 0o3773)  # as tmpfiles.d: setgid, sticky, no read for others
    cfgp = write_config(tmp_path, shm_dir=str(shm))
    client = _unprivileged_client(shm, "other", 30)
    argv = ["setpriv", "--reuid=0", "--regid=0",
            f"--groups={gid}" if in_group else "--clear-groups",
            f"--bounding-set={bounding}", "--", PY, "-m", "recmg.cli.recmgd", "-c", str(cfgp)]
    d = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sock = tmp_path / "ctl.sock"
    try:
        wait(sock.exists)
        cap_eff = int(re.search(r"^CapEff:\s+(\w+)", Path(f"/proc/{d.pid}/status").read_text(),
                                re.M).group(1), 16)
        assert not cap_eff & (1 << 1)  # no CAP_DAC_OVERRIDE
        if in_group:
            st = wait(lambda: (lambda s: s if s["targets"] and s["totals"]["promoted"] else None)(
                ctl(sock, {"cmd": "status"})["result"]))
            assert st["targets"][0]["pid"] == client
        else:
            st = wait(lambda: (lambda s: s if s["rejected"] else None)(
                ctl(sock, {"cmd": "status"})["result"]))
            assert not st["targets"]
            assert "Permission denied" in next(iter(st["rejected"].values()))
    finally:
        os.kill(client, signal.SIGKILL)
        os.waitpid(client, 0)
        stop(d)
        shutil.rmtree(shm, ignore_errors=True)


def test_a_slow_tick_still_gets_its_moves(tmp_path, monkeypatch):
    """The migration deadline counts from the tick's first move, not its start: a tick
    whose earlier stages took longer than tick_deadline_ms still moves pages."""
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\ntick_deadline_ms = 20\n'
                       'min_residency_ticks = 0\n')
    with Client("slow", [("a", 1000, 1024)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1])
        st = pipe.attach(Path(c.path))
        seen = []
        real_apply = pipe.migrator.apply

        def apply(pid, pages, idx, node, placement, deadline):
            seen.append(deadline - time.monotonic())
            return real_apply(pid, pages, idx, node, placement, deadline)

        monkeypatch.setattr(pipe.migrator, "apply", apply)
        slow_brakes = pipe._check_brakes
        monkeypatch.setattr(pipe, "_check_brakes", lambda: (time.sleep(0.05), slow_brakes()))
        c.record([np.arange(50)])
        pipe.tick()
        assert seen and seen[0] > 0  # time was left when the moves started
        assert st.stats.promoted == 50
        pipe.close()


def test_live_ticks_and_their_replay_make_the_same_moves(tmp_path):
    """A live client's batches, read through the real ring by recmgd's pipeline tick by
    tick and recorded with the tick grouping, replayed by `recmg sim --config`'s engine
    (sim.replay.replay) with the same config: the same pages move in every tick, in the
    same order."""
    from recmg.capture.record import ticked_trace
    from recmg.sim.replay import replay

    cfg = cfgmod.parse("tick_ms = 100\n[budget]\nfast_mib_per_target = 1\n"
                       "[migration]\nbackend = \"simulated\"\nrate_mib_s = 20.0\n"
                       "min_residency_ticks = 2\n[target]\nmax_accesses_per_s = 0\n")
    prof = cfgmod.load_profile("default")  # s3fifo + stms
    rng = np.random.default_rng(5)
    rows = 30_000
    with Client("twin", [("a", rows, 64), ("b", rows // 3, 32)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, prof, [0], [1])
        st = pipe.attach(Path(c.path))
        recorded = []
        st.record_into(recorded)
        live = []
        for _ in range(25):
            for _ in range(int(rng.integers(1, 4))):  # a varying number of batches a tick
                c.record([rng.zipf(1.2, 200) % rows, rng.zipf(1.5, 50) % (rows // 3)])
            pipe.tick()
            live.append((st.last_step.promoted.tolist(), st.last_step.demoted.tolist()))
        # what `recmgctl record` writes: the batches with the ticks that read them
        trace = ticked_trace(recorded, [r.info for r in st.reader.tables], {})
        pipe.close()
    assert sum(len(p) for p, _ in live) > 0 and sum(len(d) for _, d in live) > 0
    assert len(trace.meta["tick_starts"]) == 25
    _, ticks = replay(trace, cfg, prof)
    assert [(t["promoted"], t["demoted"]) for t in ticks] == live


def test_a_segment_truncated_during_the_copy_is_rejected_without_killing_the_tick(
        tmp_path, monkeypatch):
    """The owner truncates its segment between the size check and the copy: the fault
    becomes a rejection of that target only.  (Closing the reader inside the handler
    raised BufferError, since the fault's traceback still held the mapping's view, and
    it escaped tick(): the worker died with exit 70.)"""
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\n')
    with Client("trunc", [("a", 1000, 64)], shm_dir=str(tmp_path)) as bad, \
            Client("fine", [("a", 1000, 64)], shm_dir=str(tmp_path)) as good:
        pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1])
        state = pipe.attach(Path(bad.path))
        pipe.attach(Path(good.path))
        monkeypatch.setattr(state.reader, "_check_size", lambda: None)  # lose the race
        bad.record([np.arange(100)])
        good.record([np.arange(100)])
        os.truncate(bad.path, 4096)
        pipe.tick()
        name = Path(bad.path).name
        assert name not in pipe.targets and "truncated while attached" in pipe.rejected[name]
        assert pipe.targets[Path(good.path).name].stats.batches == 1
        os.truncate(bad.path, 1 << 20)  # the client's own close() writes its header
        pipe.close()


def test_a_closed_writers_backlog_is_read_in_bounded_reads_before_detaching(tmp_path):
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\n[target]\nmax_batches_per_read = 4\n')
    with Client("backlog", [("a", 1000, 64)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1])
        state = pipe.attach(Path(c.path))
        for _ in range(10):
            c.record([np.arange(10)])
        c.close()
        pipe.tick()
        assert state.stats.batches == 4 and pipe.targets  # still draining
        pipe.tick()
        pipe.tick()
        assert not pipe.targets and pipe.retired.batches == 10
        pipe.close()


def test_a_segment_that_fails_after_every_attach_backs_off_and_logs_are_limited(
        tmp_path, caplog):
    """A segment that turns invalid right after each attach was re-attached every
    ~1.2 s forever (attaching reset its quarantine), with three log lines each time."""
    from recmg.capture.reader import SegmentError

    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\n')
    pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1])
    with Client("flap", [("a", 1000, 64)], shm_dir=str(tmp_path)) as c:
        name = Path(c.path).name
        delays = []
        for _ in range(6):
            state = pipe.attach(Path(c.path))
            state.reader.read = lambda *a: (_ for _ in ()).throw(SegmentError("went bad"))
            pipe.tick()
            assert name not in pipe.targets
            delays.append(pipe.quarantine[name][1])
        assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
        lines = [r for r in caplog.records if name in r.getMessage()]
        assert len(lines) <= 3  # attach, reject, detach once each; the rest held back
    with caplog.at_level("INFO"):
        caplog.clear()
        for i in range(5000):  # junk files: one line per file was 55,374 lines in 14 s
            pipe.reject(f"recmg.junk{i}.1", "bad magic")
        assert len(caplog.records) <= pipe.logs.burst
    pipe.close()


def test_log_limiter_holds_back_repeats_and_reports_them():
    import logging

    from recmg.service.loglimit import LogLimiter

    now = [0.0]
    seen = []

    class H(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    lg = logging.getLogger("recmg-test-limiter")
    lg.addHandler(H())
    lg.setLevel(logging.INFO)
    lim = LogLimiter(lg, every_s=60, burst=3, clock=lambda: now[0])
    assert lim.log(logging.WARNING, "move:a", "failed %d", 1)
    assert not lim.log(logging.WARNING, "move:a", "failed %d", 2)
    for k in "bcdef":
        lim.log(logging.WARNING, f"move:{k}", "x")
    assert len(seen) == 3
    now[0] = 61.0
    lim.log(logging.WARNING, "move:a", "failed %d", 3)
    assert "3 more 'move' log lines were held back" in seen[3]
    assert seen[4] == "failed 3 (repeated 1 times since last logged)"


def test_a_full_fast_node_pauses_growth_instead_of_failing_the_target(
        tmp_path, monkeypatch, caplog):
    """move_pages answers ENOMEM when the fast node is full: the target was rejected,
    quarantined and re-attached with fresh state in every guest run of the default
    profile.  Now the fast pages held stop growing (said once), the target stays;
    holding none here, it tries no move until the pause ends."""
    import errno

    from recmg import native
    from recmg.movers import placement as pl

    calls = []

    def full(pid, addrs, nodes, status, flags=0):
        calls.append(len(addrs))
        raise native.NativeError(errno.ENOMEM, "move_pages", pid=pid)

    monkeypatch.setattr(pl, "query_nodes",
                        lambda pid, addrs, batch_pages=0: np.full(len(addrs), 1, np.int32))
    monkeypatch.setattr(native, "move_pages", full)
    cfg = cfgmod.parse('[migration]\nbackend = "move_pages"\nmin_residency_ticks = 0\n')
    with Client("full", [("a", 10_000, 64)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1], "/proc", str(tmp_path))
        pipe.attach(Path(c.path))
        c.record([np.arange(0, 10_000, 100)])
        pipe.tick()
        name = Path(c.path).name
        assert name in pipe.targets and not pipe.rejected and len(calls) == 1
        st = pipe.status().to_dict()
        assert st["targets"][0]["errors"]["ENOMEM"] == 100
        for _ in range(3):  # no growth from no fast page: nothing tried
            c.record([np.arange(0, 10_000, 100)])
            pipe.tick()
            assert pipe.status().to_dict()["brake"]["reason"] == "node_full"
        assert len(calls) == 1
        for _ in range(2):
            c.record([np.arange(0, 10_000, 100)])
            pipe.tick()
        assert len(calls) == 2 and name in pipe.targets  # tried again, paused again
        assert pipe._full_ticks == 8  # the pause doubled
        engaged = [r for r in caplog.records if "node_full engaged" in r.getMessage()]
        assert len(engaged) == 1
        pipe.close()


def test_while_the_fast_node_is_full_a_new_hot_set_is_swapped_in_without_growth(tmp_path):
    """In the guest, a fast node's ENOMEM early in a run paused every promotion, the
    pause doubling up to 256 ticks, and the fast tier kept a stale hot set (67% of
    reads from DRAM against 71% in the runs without it).  Now the brake stops growth
    only: a new hot set still takes the places of the old one, and the pages held do
    not grow."""
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\n'
                       'rate_mib_s = 100000\n[budget]\nfast_mib_per_target = 1\n')
    rows_per_page = 4096 // 256
    old_set = np.arange(0, 100 * rows_per_page, 4)  # pages 0-99
    new_set = np.arange(300 * rows_per_page, 400 * rows_per_page, 4)  # pages 300-399
    with Client("swap", [("a", 10_000, 64)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1], "/proc", str(tmp_path))
        st = pipe.attach(Path(c.path))
        for _ in range(4):
            c.record([old_set])
            pipe.tick()
        held = st.engine.fast_pages()
        assert held == 100
        pipe._node_full(st, 7)  # as a promotion's ENOMEM does
        promoted = st.engine.stats.promoted
        for _ in range(3):
            c.record([new_set])
            pipe.tick()
            brake = pipe.status().to_dict()["brake"]
            assert brake["reason"] == "node_full" and brake["stops"] == "growth", brake
            assert st.engine.fast_pages() <= held
        assert st.engine.stats.promoted - promoted == 100  # the new set, swapped in
        fast = st.engine.pages.node_of(st.pages.pages_of_keys(
            tf.make_keys(0, new_set)), -1)
        assert (fast == 0).all()
        pipe.close()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to drop CAP_CHOWN")
def test_a_read_group_recmgd_cannot_use_under_the_unit_fails_the_check(tmp_path):
    """It passed --check-config, then recmgd exited 73 at its socket's chown and
    systemd restarted it in a loop (under a unit without CAP_CHOWN, as ours was
    before the learning loop needed it)."""
    import grp

    other = next((g for g in ("nogroup", "nobody", "daemon") if _has_group(g)), None)
    if other is None or grp.getgrnam(other).gr_gid in os.getgroups():
        pytest.skip("no group this process is not a member of")
    cfgp = write_config(tmp_path, control={"socket": str(tmp_path / "c.sock"),
                                           "read_group": other})
    check = [PY, "-m", "recmg.cli.recmgd", "--check-config", str(cfgp)]
    assert subprocess.run(check, capture_output=True).returncode == 0  # all capabilities
    res = subprocess.run(["setpriv", "--bounding-set=-chown", "--inh-caps=-chown", *check],
                         capture_output=True, text=True)
    assert res.returncode == 78 and "without CAP_CHOWN" in res.stderr, res.stderr


def _has_group(name):
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _rss_mib() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M).group(1)) / 1024


def test_tables_that_are_huge_untouched_reservations_cost_only_the_pages_read(tmp_path):
    """200 GiB of PROT_NONE reservation registered as tables raised recmgd's RSS by
    about 2 GB per segment (per-page arrays over the whole span, and a move_pages
    query of every page at attach): two such segments got it OOM-killed."""
    import mmap as mm

    span = 200 << 30
    res = mm.mmap(-1, span, flags=mm.MAP_PRIVATE | mm.MAP_ANONYMOUS, prot=0)  # PROT_NONE
    huge = np.frombuffer(res, np.float32).reshape(-1, 64)  # never touched
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\n'
                       '[budget]\nfast_mib_per_target = 1\n')
    before = _rss_mib()
    with Client("huge", [("big", huge)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1])
        st = pipe.attach(Path(c.path))
        assert st is not None and st.pages.n_pages == span // 4096
        rng = np.random.default_rng(0)
        for _ in range(5):
            c.record([rng.integers(0, len(huge), 2000)])
            pipe.tick()
        assert st.stats.promoted > 0 and len(st.engine.pages) <= 5 * 2000 + 256
        grew = _rss_mib() - before
        pipe.close()
    assert grew < 150, f"RSS grew {grew:.0f} MiB"  # was ~2,000 MiB


def test_the_state_of_all_targets_together_is_bounded(tmp_path):
    """Memory was bounded per target only; now target.max_state_mib bounds the sum."""
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\n[budget]\nfast_mib_per_target = 1\n'
                       '[target]\nmax_tracked_pages = 1048576\nmax_state_mib = 64\n')
    clients = [Client(f"many{i}", [("a", 1000, 64)], shm_dir=str(tmp_path)) for i in range(3)]
    try:
        pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1])
        got = [pipe.attach(Path(c.path)) for c in clients]
        assert got[0] is not None and got[1] is not None and got[2] is None  # 26 MiB each
        why = pipe.rejected[Path(clients[2].path).name]
        assert "target.max_state_mib (64)" in why
        pipe.detach(Path(clients[0].path).name, "test")
        assert pipe.attach(Path(clients[2].path)) is not None  # room again
        pipe.close()
    finally:
        for c in clients:
            c.close()


def test_a_flooding_target_cannot_hold_the_tick_or_starve_the_others(tmp_path):
    """One segment publishing 1 Mi-key batches held a tick for 45-90 s: no other target
    was served and the watchdog went unfed.  Now each target's share of the tick's work
    time bounds what it reads and steps (a batch beyond it is thinned, and counted),
    and progress is reported after every target."""
    cfg = cfgmod.parse('tick_ms = 100\n[migration]\nbackend = "simulated"\n'
                       '[budget]\nfast_mib_per_target = 4\n[target]\nmax_accesses_per_s = 0\n')
    rng = np.random.default_rng(0)
    with Client("flood", [("a", 1 << 20, 16)], shm_dir=str(tmp_path),
                key_capacity=1 << 24) as flood, \
            Client("calm", [("a", 10_000, 64)], shm_dir=str(tmp_path)) as calm:
        pipe = Pipeline(cfg, cfgmod.load_profile("default"), [0], [1])
        fst, cst = pipe.attach(Path(flood.path)), pipe.attach(Path(calm.path))
        for _ in range(12):
            assert flood.record([rng.integers(0, 1 << 20, 1 << 20)])
        walls, calls = [], []
        for i in range(4):
            calm.record([np.arange(100) + i])
            t0 = time.monotonic()
            pipe.tick(progress=lambda: calls.append(1))
            walls.append(time.monotonic() - t0)
            assert cst.stats.batches == i + 1  # served every tick
        assert max(walls) < 2.0, walls  # the 12 Mi keys at once took far longer
        assert fst.keys_thinned > 0 and fst.stats.batches >= 1 and fst.lag_batches > 0
        assert len(calls) == 8  # after each target, each tick
        work = pipe.status().to_dict()["targets"][[t["name"] for t in
                                          pipe.status().to_dict()["targets"]].index("flood")]["work"]
        assert work["keys_thinned"] == fst.keys_thinned and work["lag_batches"] > 0
        pipe.close()


def test_a_read_stops_at_the_keys_wanted_but_takes_at_least_one_batch(tmp_path):
    from recmg.capture.reader import SegmentReader

    with Client("want", [("a", 1000, 4)], shm_dir=str(tmp_path)) as c, \
            SegmentReader(c.path) as r:
        for n in (50, 50, 50):
            c.record([np.arange(n)])
        assert r.read(want_keys=10).n_batches == 1  # one batch even above the want
        assert r.read(want_keys=100).n_batches == 2
        got = r.read()
        assert got.n_batches == 0
        c.record([np.arange(1000)])
        thin, dropped = r.read().thinned(100)
        assert dropped == 900 and len(thin.keys) == 100 and thin.batch_offsets.tolist() == [0, 100]
