"""Hostile segments and configs, generated: a live segment whose header, cursors and
descriptors an owner overwrites (or truncates) never makes a pipeline tick raise or
crash, and never changes table contents; any config text parses or raises
ConfigError.  Fixed seeds, bounded examples (`make soak` runs more)."""

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recmg.capture import segment as seg
from recmg.client import Client
from recmg import config as cfgmod
from recmg.service.pipeline import Pipeline

EXAMPLES = int(os.environ.get("RECMG_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
WORDS = st.sampled_from([0, 1, 2 ** 20, 2 ** 32, 2 ** 40, 2 ** 63 - 1, 2 ** 64 - 1]) | \
    st.integers(0, 2 ** 64 - 1)
# the words an attacker would aim at: geometry, cursors, drop counters, sampling,
# registry entries, and the first descriptors
TARGETS = st.sampled_from([8, 12, 16, 20, 24, 32, 40, 48, 56, 64, seg.OFF_KEY_HEAD,
                           seg.OFF_BATCH_HEAD, seg.OFF_KEY_TAIL, seg.OFF_BATCH_TAIL,
                           seg.OFF_DROPPED_BATCHES, seg.OFF_SAMPLING, seg.OFF_CLOSED,
                           seg.REGISTRY_OFFSET + 72, seg.REGISTRY_OFFSET + 88,
                           seg.REGISTRY_OFFSET + 96, seg.REGISTRY_OFFSET + 128 + 72])


@FUZZ
@given(writes=st.lists(st.tuples(TARGETS | st.integers(0, 9000).map(lambda x: x * 8), WORDS),
                       min_size=1, max_size=4),
       truncate=st.none() | st.sampled_from([0, 100, 512, 4096, 20000]),
       when=st.sampled_from(["before_attach", "attached"]))
def test_fuzz_hostile_segments_never_escape_a_tick(tmp_path, writes, truncate, when):
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\n[target]\nmax_pages = 100000\n')
    with Client("fz", [("a", 5000, 64), ("b", 300, 16)], shm_dir=str(tmp_path),
                key_capacity=4096, batch_capacity=64) as c:
        before = [t.copy() for t in c.tables.values()]
        pipe = Pipeline(cfg, cfgmod.load_profile("lru"), [0], [1])
        if when == "attached":
            pipe.attach(Path(c.path))
        for n in (40, 0, 7):
            c.record([np.arange(n), np.arange(n // 2)])
        size = os.path.getsize(c.path)
        with open(c.path, "r+b") as f:
            for off, word in writes:
                if off + 8 <= size:
                    f.seek(off)
                    f.write(word.to_bytes(8, "little"))
            if truncate is not None:
                f.truncate(truncate)
        pipe.attach(Path(c.path))  # refused while attached (one consumer), or validated
        for _ in range(2):
            pipe.tick()  # must not raise
        assert all(np.array_equal(a, b) for a, b in zip(before, c.tables.values()))
        pipe.close()
        if truncate is not None:
            os.truncate(c.path, size)  # let the client's own close() write its header


KEYS = st.sampled_from(["tick_ms", "shm_dir", "target.max_accesses_per_s", "target.pids",
                        "tiers.fast_nodes", "budget.fast_mib_per_target",
                        "migration.rate_mib_s", "migration.tick_deadline_ms",
                        "migration.simulated_slow_ns", "safety.psi_some_avg10_max",
                        "control.max_requests_per_s", "control.read_group",
                        "metrics.http_port", "policy.profile", "nosuch.key"])
VALUES = st.sampled_from(["inf", "nan", "-inf", "-1", "0", "1e308", "18446744073709551616",
                          '""', '"x"', "[]", "[1, 2]", "[-5]", "{}", "true", "1.5",
                          "[" * 50 + "]" * 50])


@FUZZ
@given(items=st.lists(st.tuples(KEYS, VALUES), max_size=5),
       junk=st.binary(max_size=40))
def test_fuzz_config_text_parses_or_is_a_config_error(items, junk):
    lines = []
    for key, value in items:
        if "." in key:
            section, name = key.split(".", 1)
            lines += [f"[{section}]", f"{name} = {value}"]
        else:
            lines.insert(0, f"{key} = {value}")
    text = "\n".join(lines) + "\n" + junk.decode("utf-8", "replace")
    try:
        cfg = cfgmod.parse(text)
    except cfgmod.ConfigError as e:
        assert e.problems
        return
    assert isinstance(cfg, cfgmod.Config)
    assert cfgmod.check_host(cfg, [0]) is not None


@pytest.mark.parametrize("inject,column", [("keyerror", "tracebacks"), ("sleep", "hangs")])
def test_the_robustness_bench_reports_a_planted_bug(inject, column):
    """Pipeline.tick() isolates every target error, its own alarm included: a planted
    KeyError, MemoryError or 30 s sleep all came out "handled".  Now the bench counts
    what the pipeline counted as its own bug, and a hang cannot be swallowed."""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[2] / "bench" / "robustness.py"
    res = subprocess.run([sys.executable, str(bench), "--classes", "segment", "--n", "6",
                          "--inject", inject], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    row = next(ln for ln in lines if ln.startswith("| capture segment"))
    cells = dict(zip(head, [c.strip() for c in row.strip("|").split("|")]))
    assert int(cells[column]) >= 1, row
