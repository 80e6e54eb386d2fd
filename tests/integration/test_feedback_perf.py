"""recmgd's closed loop and per-target perf counters, with a live client on a real ring
and recmgd's pipeline: a workload whose batches run slower after recmgd moves pages
(migrations cannot help it) gets its migration rate cut; one they do not slow keeps
it; perf counters appear in status, metrics and recordings."""

import logging
import re
import time
from pathlib import Path

import numpy as np

from recmg import config as cfgmod
from recmg.client import Client
from recmg.service import metrics
from recmg.engine.feedback import Feedback, mean_interval
from recmg.movers import SimulatedMigrator
from recmg.service.pipeline import Pipeline

CFG = ('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\nrate_mib_s = 400.0\n'
       'feedback_window_ticks = 12\nfeedback_slowdown = 0.3\n'
       '[budget]\nfast_mib_per_target = 2\n[target]\nmax_accesses_per_s = 0\n')


class _MovingMigrator(SimulatedMigrator):
    """The simulated tier, standing in for a backend whose moves are real: only then
    does the closed loop judge moves."""

    real = True


def _run(tmp_path, slow_after_moves: bool, ticks: int = 48, real: bool = True):
    """A client that records 8 batches a tick, spaced 1 ms apart, or 3 ms apart in a
    tick after recmgd moved pages when ``slow_after_moves``; the hot set keeps moving so
    recmgd keeps migrating."""
    cfg = cfgmod.parse(CFG)
    prof = cfgmod.load_profile("frequency", [Path(__file__).resolve().parents[2] / "policies"])
    rng = np.random.default_rng(0)
    with Client("fb", [("a", 200_000, 64)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, prof, [0], [1])
        if real:
            pipe.migrator = _MovingMigrator(rate_mib_s=cfg.migration.rate_mib_s)
        st = pipe.attach(Path(c.path))
        for i in range(ticks):
            gap = 0.003 if slow_after_moves and st.moved_last else 0.001
            for _ in range(8):
                time.sleep(gap)
                c.record([(rng.zipf(1.3, 400) + 7919 * i) % 200_000])
            pipe.tick()
        status = pipe.status().to_dict()["targets"][0]
        pipe.close()
    return st, status


def test_moves_that_slow_the_target_down_cut_its_rate(tmp_path, caplog):
    caplog.set_level(logging.INFO, "recmgd")
    st, status = _run(tmp_path, slow_after_moves=True)
    fb = status["feedback"]
    assert fb["backoffs"] >= 1 and fb["rate_scale"] < 1
    assert fb["rate_pages_per_tick"] < st.base_rate
    assert "slower after recmgd's moves" in caplog.text
    assert "recmgd_feedback_backoffs_total" in metrics.exposition()


def test_where_nothing_moves_slower_batches_are_not_blamed_on_moves(tmp_path):
    """The simulated backend moves no page: the closed loop cut a target's rate there
    because of host noise."""
    st, status = _run(tmp_path, slow_after_moves=True, real=False)
    fb = status["feedback"]
    assert fb["window_ticks"] == 0 and fb["backoffs"] == 0 and fb["rate_scale"] == 1.0
    assert fb["rate_pages_per_tick"] == st.base_rate


def test_moves_that_do_not_slow_it_keep_the_rate(tmp_path):
    st, status = _run(tmp_path, slow_after_moves=False)
    fb = status["feedback"]
    assert fb["backoffs"] == 0 and fb["rate_scale"] == 1.0
    assert fb["rate_pages_per_tick"] == st.base_rate
    assert st.stats.promoted > 0  # it did migrate, every window but the probe tick


def test_the_controller_restores_the_rate_and_a_probe_tick_moves_nothing():
    fb = Feedback(4, 0.1)
    for _ in range(3):
        assert not fb.probe()
        fb.observe(True, 1e6)
    assert fb.probe()  # the window's last quarter (its 4th tick) moves nothing
    assert fb.observe(False, 1e6) is None  # the same pace either way: nothing to cut
    f20 = Feedback(20, 0.1)
    probes = []
    for _ in range(20):
        probes.append(f20.probe())
        f20.observe(True, 1e6)
    assert probes == [False] * 15 + [True] * 5
    for moved, ns in ((True, 2e6), (False, 1e6), (True, 2e6), (False, 1e6)):
        v = fb.observe(moved, ns)
    assert v == "backoff" and fb.scale == 0.5
    for moved, ns in ((True, 1e6), (False, 1e6), (True, 1e6), (False, 1e6)):
        v = fb.observe(moved, ns)
    assert v == "restore" and fb.scale == 1.0
    assert Feedback(0, 0.1).observe(True, 5e6) is None  # off
    assert mean_interval(np.array([0, 10, 20, 40])) == 40 / 3
    assert mean_interval(np.array([5])) is None


def test_perf_counters_per_target_in_status_metrics_and_recordings(tmp_path):
    from recmg.capture import perf

    cfg = cfgmod.parse(CFG)
    prof = cfgmod.load_profile("default", [Path(__file__).resolve().parents[2] / "policies"])
    with Client("pf", [("a", 50_000, 64)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, prof, [0], [1])
        st = pipe.attach(Path(c.path))
        perf_log = []
        st.record_into([], perf_log)
        rng = np.random.default_rng(1)
        buf = np.zeros(1 << 22, np.uint8)
        for _ in range(5):
            buf[rng.integers(0, len(buf), 1000)] += 1  # some CPU time and faults
            buf = np.zeros(1 << 22, np.uint8)
            c.record([rng.integers(0, 50_000, 300)])
            pipe.tick()
        status = pipe.status().to_dict()["targets"][0]["perf"]
        live = metrics.exposition()
        pipe.close()
    # per target, labelled with the segment's name; gone once it is detached
    assert re.search(r'^recmgd_target_cpu_seconds_total\{target="pf"\} [0-9.e-]+$', live, re.M)
    assert re.search(r'^recmgd_target_page_faults_total\{target="pf"\} [1-9]', live, re.M)
    assert 'target="pf"' not in metrics.exposition()
    # CPU time and page faults come from /proc/PID/stat: every Linux has them
    assert not {"cpu_time_ns", "page_faults", "major_faults"} & set(status["unsupported"])
    assert status["totals"]["cpu_time_ns"] > 0 and status["totals"]["page_faults"] > 0
    assert status["cpu_ms_per_batch"] is not None
    # where there is no PMU, the hardware ones are listed with the kernel's reason
    for name, why in status["unsupported"].items():
        assert name in perf.TICK_EVENTS + ("memory_load_samples",) and why
    assert [p["tick"] for p in perf_log] == [1, 2, 3, 4, 5]
    assert sum(p["cpu_time_ns"] for p in perf_log) == status["totals"]["cpu_time_ns"]


def test_a_target_whose_perf_counters_cannot_open_still_runs(tmp_path, monkeypatch):
    from recmg import native

    def refuse(*a, **k):
        raise native.NativePermissionError(1, "perf_event_open", hint="paranoid")

    monkeypatch.setattr(native, "perf_event_open", refuse)
    cfg = cfgmod.parse(CFG)
    prof = cfgmod.load_profile("default", [Path(__file__).resolve().parents[2] / "policies"])
    with Client("np", [("a", 50_000, 64)], shm_dir=str(tmp_path)) as c:
        pipe = Pipeline(cfg, prof, [0], [1])
        st = pipe.attach(Path(c.path))
        c.record([np.arange(100)])
        pipe.tick()
        status = pipe.status().to_dict()["targets"][0]["perf"]
        pipe.close()
    assert st.stats.accesses == 100
    assert set(status["unsupported"]) >= {"llc_load_misses", "memory_load_samples"}
    assert status["totals"]["cpu_time_ns"] > 0  # /proc needs no perf
