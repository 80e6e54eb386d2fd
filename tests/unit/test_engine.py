"""The one decision engine: contracts, registries, configurations, and what only the
engine decides (per-table keys, scores into the planner, the dry run's log)."""

import inspect
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recmg import config as cfgmod
from recmg import movers
from recmg.capture.reader import AccessBatch
from recmg.runner import build
from recmg.engine import contracts
from recmg import registry
from recmg.engine.layout import PAGE_SIZE, Layout
from recmg.engine.policy import cache as cache_mod
from recmg.engine.policy import prefetch as pf_mod
from recmg.engine.step import Engine, EngineConfig
from recmg.trace import format as tf

ROOT = Path(__file__).resolve().parents[2]


def batch_of(*batches) -> AccessBatch:
    keys = np.concatenate([np.asarray(b, np.uint64) for b in batches]) if batches else \
        np.zeros(0, np.uint64)
    offs = np.concatenate(([0], np.cumsum([len(b) for b in batches]))).astype(np.uint64)
    n = len(batches)
    return AccessBatch(keys=keys, batch_offsets=offs, batch_ids=np.arange(n, dtype=np.uint64),
                       timestamps_ns=np.zeros(n, np.uint64))


def test_the_registry_block_of_the_docs_is_current():
    text = (ROOT / "docs/policies.md").read_text()
    assert registry.markdown() in text, \
        "run: python -m recmg.registry --update docs/policies.md"


@pytest.mark.parametrize("role,name", [(r, n) for r in registry.ROLES for n in registry.ROLES[r]])
def test_every_registry_entry_says_what_its_class_says(role, name):
    """The registry carries each class's capabilities so the config layer need not
    import it: they must be the class's own."""
    e = registry.ROLES[role][name]
    cls = e.load()
    assert cls.name == name
    online = {"caching": lambda: cls.online, "prefetcher": lambda: not cls.needs_future,
              "mover": lambda: not cls.ideal}[role]()
    assert (e.online, e.needs_model, e.family) == (
        online, bool(getattr(cls, "needs_model", False)), getattr(cls, "family", ""))
    assert e.prefetches == getattr(cls, "prefetches", True)
    assert e.real == getattr(cls, "real", False)


@pytest.mark.parametrize("role,name", [(r, n) for r in registry.ROLES for n in registry.ROLES[r]
                                       if not registry.needs_model(r, n)])
# (the learned ones need a model: test_learned.py, test_prefetch_model.py)
def test_every_registered_class_meets_its_contract(role, name):
    if role == "caching":
        obj, proto = cache_mod.make(name, 4), contracts.CachePolicy
    elif role == "prefetcher":
        obj, proto = pf_mod.make(name, [10]), contracts.Prefetcher
    else:
        obj, proto = movers.make(name, 16, 100.0), contracts.Mover
    assert isinstance(obj, proto) and obj.name == name


PROTOCOLS = {"caching": contracts.CachePolicy, "prefetcher": contracts.Prefetcher,
             "mover": contracts.Mover}


def _params(fn) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()
            if p.name != "self"]


@pytest.mark.parametrize("role,name", [(r, n) for r in registry.ROLES for n in registry.ROLES[r]])
def test_every_registered_class_has_the_signatures_of_its_protocol(role, name):
    """Every method the engine calls is in the role's Protocol, and each class takes
    the Protocol's parameters, by name and kind, in order (a name-only check let a
    wrong signature through)."""
    proto, cls = PROTOCOLS[role], registry.ROLES[role][name].load()
    methods = [m for m, v in vars(proto).items() if callable(v) and not m.startswith("_")]
    assert methods, proto
    for m in methods:
        assert _params(getattr(cls, m)) == _params(getattr(proto, m)), f"{name}.{m}"


def test_the_engine_calls_only_what_its_protocols_list():
    """Every attribute the engine reads of its cache policy, prefetcher and mover is
    in their Protocols (the engine called methods they did not list)."""
    src = (ROOT / "daemon/recmg/engine/step.py").read_text()
    for part, proto in (("cache", contracts.CachePolicy), ("prefetcher", contracts.Prefetcher),
                        ("mover", contracts.Mover)):
        used = set(re.findall(rf"self\.{part}\.([a-z_]+)", src))
        listed = {m for m in dir(proto) if not m.startswith("_")} | set(
            proto.__annotations__)
        assert used and used <= listed, (part, used - listed)


def test_unknown_names_fail_validation_listing_the_known_ones(tmp_path):
    (tmp_path / "p.toml").write_text('schema = 1\ncaching = "arc"\nprefetcher = "oracle"\n')
    with pytest.raises(cfgmod.ConfigError) as e:
        cfgmod.load_profile("p", [tmp_path])
    text = str(e.value)
    assert "unknown caching 'arc'; known: lru, lfu, s3fifo" in text and "belady" not in text
    assert "'oracle' (simulator only: it needs the future)" in text
    with pytest.raises(cfgmod.ConfigError, match="move_pages, simulated, dryrun"):
        cfgmod.parse('[migration]\nbackend = "ideal"\n')
    with pytest.raises(ValueError, match="known: lru, lfu, s3fifo, belady"):
        cache_mod.make("arc", 4)
    with pytest.raises(ValueError, match="known: move_pages, simulated, dryrun, ideal"):
        movers.make("teleport", 16, 1.0)


def test_help_and_policy_list_come_from_the_registries(capsys):
    from recmg.cli import recmg as cli

    with pytest.raises(SystemExit):
        cli.main(["sim", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "belady (sim only)" in out and "oracle (sim only)" in out and "bingo" in out
    from recmg.cli.recmgctl import print_registries

    print_registries()
    out = capsys.readouterr().out
    assert "s3fifo" in out and "stms" in out and "belady" not in out and "oracle" not in out


def test_the_simulator_never_imports_the_daemons_service_package(tmp_path):
    code = """
import sys
from recmg import config as cfgmod
from recmg.sim import matrix, modes, replay
from recmg.trace import synthetic
t = synthetic.trace(synthetic.preset("meta2021-small", 0.01, seed=1), 3)
for mode in modes.MODES:
    modes.simulate(t, mode, "lru", 50, "stms", 16)
replay.replay(t, cfgmod.Config(), cfgmod.Profile(name="x"))
bad = sorted(m for m in sys.modules if m.startswith("recmg.service"))
assert not bad, bad
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("sizes", [None, [3000, 0, 20_000, 1, 700, 9000]])
def test_distinct_in_batches_is_each_batchs_distinct_keys_in_first_use_order(sizes):
    """Small batches, and large ones of different sizes one after another in the same
    call (each uses the front of one scratch table sized to the largest)."""
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 20, int(n)) for n in rng.integers(0, 40, 30)] if sizes is \
        None else [rng.integers(0, 4 * n + 1, n) for n in sizes]
    keys = np.concatenate(batches).astype(np.uint64)
    offs = np.concatenate(([0], np.cumsum([len(b) for b in batches])))
    got, counts, starts = cache_mod.distinct_in_batches(keys, offs)
    want = [list(dict.fromkeys(b.tolist())) for b in batches]
    assert got.tolist() == [k for w in want for k in w]
    assert counts.tolist() == [b.tolist().count(k) for b, w in zip(batches, want) for k in w]
    assert starts.tolist() == np.cumsum([0] + [len(w) for w in want]).tolist()
    with pytest.raises(ValueError, match="offsets"):
        cache_mod.distinct_in_batches(keys, [0, len(keys) + 1])
    assert [len(x) for x in cache_mod.distinct_in_batches(keys[:0], [0])] == [0, 0, 1]


def test_engine_configurations_are_checked():
    with pytest.raises(ValueError, match="granularity"):
        EngineConfig(granularity="line")
    with pytest.raises(ValueError, match="observe"):
        EngineConfig(observe="tick")
    with pytest.raises(ValueError, match="planned placement works on pages"):
        Engine(EngineConfig(), cache_mod.make("lru", 4), pf_mod.make("none", [10]),
               movers.make("simulated", 16, 1.0))


def _planned(tables, profile, budget=64):
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\nmin_residency_ticks = 0\n')
    layout = Layout.virtual(tables)
    mover = movers.make("simulated", 16, 1e6)
    return build.planned(cfg, profile, layout, mover, [0], [1], override=budget)


def test_recmgds_prefetcher_sees_pages_per_table():
    """A next-N prefetcher over the last page of table 0 proposes nothing in table 1
    (in one global page space it proposed table 1's first pages)."""
    rows = PAGE_SIZE // 64
    tables = [tf.TableInfo(0, "a", 4 * rows, 64), tf.TableInfo(1, "b", 4 * rows, 64)]
    eng = _planned(tables, cfgmod.Profile(name="x", caching="lru", prefetcher="nextn",
                                          prefetch_budget_pages=8))
    last = tf.make_keys(0, [4 * rows - 1])  # the last row of table 0: its page 3
    r = eng.step(batch_of(last), contracts.Controls(tick=1))
    assert r.promoted.tolist() == [3] and r.prefetch_issued == 0
    r = eng.step(batch_of(tf.make_keys(1, [0])), contracts.Controls(tick=2))
    # a miss on table 1's page 0 (global page 4): next-N proposes its pages 1..3 (5..7)
    assert sorted(r.promoted.tolist()) == [4, 5, 6, 7] and r.prefetch_issued == 3


def test_scores_reach_the_planner_most_valuable_first_under_the_rate_cap():
    """Three pages wanted, room to move one a tick: the policy's most valuable page
    (LRU: the most recently used) goes first, not the lowest-numbered one."""
    rows = PAGE_SIZE // 64
    tables = [tf.TableInfo(0, "a", 8 * rows, 64)]
    cfg = cfgmod.parse('tick_ms = 100\n[migration]\nbackend = "simulated"\n'
                       'min_residency_ticks = 0\nrate_mib_s = 0.04\n')  # 1 page a tick
    layout = Layout.virtual(tables)
    mover = movers.make("simulated", 16, 1.0)
    eng = build.planned(cfg, cfgmod.Profile(name="x", caching="lru"), layout, mover,
                        [0], [1], override=8)
    assert eng.cfg.rate_pages == 1
    r = eng.step(batch_of(tf.make_keys(0, [0, 2 * rows, 5 * rows])), contracts.Controls(tick=1))
    assert r.promoted.tolist() == [5] and r.cut_by_rate == 2
    r = eng.step(batch_of(), contracts.Controls(tick=2))
    assert r.promoted.tolist() == [2]


def test_admission_heat_decays_the_past_but_never_the_step_itself():
    """Each page's heat counts its accesses, halving every half-life of accesses.  A
    step of many half-lives zeroes the past but keeps its own accesses (the first
    version decayed a step by its own length, so a half-life shorter than a tick
    left every page at 0 and the admission test refused every promotion)."""
    rows = PAGE_SIZE // 64
    tables = [tf.TableInfo(0, "a", 8 * rows, 64)]
    for half_life, step_keys in ((1, 1000), (1 << 20, 10)):
        eng = _planned(tables, cfgmod.Profile(name="x", caching="lru",
                                              admission_half_life_accesses=half_life),
                       budget=1)
        old, new = tf.make_keys(0, [0]), tf.make_keys(0, [rows])  # pages 0 and 1
        eng.step(batch_of(np.repeat(old, step_keys)), contracts.Controls(tick=1))
        eng.step(batch_of(np.repeat(new, step_keys // 2)), contracts.Controls(tick=2))
        heat = eng.pages.heat[eng.pages.positions(np.array([0, 1]))]
        assert heat[1] > 0
        if half_life < step_keys:  # the past is gone: the newer page is hotter
            assert heat[1] > heat[0] and eng.placement[np.array([1])][0] == 0
        else:  # nothing has decayed yet: twice the reads, twice the heat
            assert heat[0] > heat[1] and eng.placement[np.array([0])][0] == 0


def test_a_paused_step_observes_but_plans_nothing_and_a_brake_moves_nothing():
    rows = PAGE_SIZE // 64
    eng = _planned([tf.TableInfo(0, "a", 4 * rows, 64)], cfgmod.Profile(name="x",
                                                                        caching="lru"))
    r = eng.step(batch_of(tf.make_keys(0, [0])), contracts.Controls(tick=1, plan=False))
    assert r.ondemand == 1 and not len(r.promoted) and len(eng.cache) == 1
    r = eng.step(batch_of(), contracts.Controls(tick=2, allow_moves=False))
    assert not len(r.promoted) and eng.stats.promoted == 0
    r = eng.step(batch_of(), contracts.Controls(tick=3, allow_promote=False))
    assert not len(r.promoted)
    r = eng.step(batch_of(tf.make_keys(0, [0])), contracts.Controls(tick=4))
    assert r.promoted.tolist() == [0] and r.hits == 0 and eng.stats.ondemand == 2


def test_the_dry_run_logs_each_move_it_would_make(caplog):
    layout = Layout([1 << 20], [8 * PAGE_SIZE], [64])
    mover = movers.make("dryrun", 16, 1.0)
    placement = mover.locate(1, layout, np.arange(layout.n_pages), 1)
    with caplog.at_level(logging.INFO, logger="recmgd"):
        out = mover.apply(1, layout, np.array([0, 3]), 0, placement, 0.0)
    assert out.moved == 2 and placement.tolist()[:4] == [0, 1, 1, 0]
    assert f"would move 2 pages to node 0: {1 << 20:#x} {(1 << 20) + 3 * PAGE_SIZE:#x}" \
        in caplog.text


def test_a_reload_that_changes_the_policy_replaces_it_and_one_that_does_not_keeps_it():
    rows = PAGE_SIZE // 64
    tables = [tf.TableInfo(0, "a", 8 * rows, 64)]
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\n')
    lru = cfgmod.Profile(name="l", caching="lru")
    eng = _planned(tables, lru)
    eng.step(batch_of(tf.make_keys(0, [0, rows])), contracts.Controls(tick=1))
    kept = eng.cache
    build.reconfigure(eng, lru, cfg, lru, override=64)
    assert eng.cache is kept and len(eng.cache) == 2  # learned state kept
    build.reconfigure(eng, lru, cfg, cfgmod.Profile(name="s", caching="s3fifo"), override=64)
    assert eng.cache is not kept and eng.cache.name == "s3fifo" and len(eng.cache) == 0


def test_every_mode_reports_slow_reads_in_vectors_per_batch():
    """ondemand counts each mode's own unit (page mode: pages brought in; daemon
    mode: vectors read from slow pages); slow_reads is the one unit of all modes."""
    from recmg.sim import modes

    # one table of 64-byte rows: 64 rows a page; batch 0 reads rows 0, 1, 1, 70
    # (pages 0 and 1), batch 1 reads rows 2 and 3 (page 0)
    t = tf.Trace(tables=[tf.TableInfo(0, "a", 1000, 64, 16, "<f4")],
                 keys=tf.make_keys(0, np.array([0, 1, 1, 70, 2, 3])),
                 batch_offsets=np.array([0, 4, 6], np.uint64))
    page = modes.simulate(t, "page", "lru", 1)
    assert (page.ondemand, page.slow_reads) == (3, 5)  # pages 0, 1, 0 again; 0,1,70 + 2,3
    batch = modes.simulate(t, "batch", "lru", 100)
    assert batch.ondemand == batch.slow_reads == 5
    daemon = modes.simulate(t, "daemon", "lru", 1)
    assert daemon.ondemand == daemon.slow_reads
