"""Topology probe against recorded trees, and golden `recmgctl check` output."""

import json
import os
import shutil
from pathlib import Path

import pytest

from recmg.cli import recmgctl
from recmg.host import topology

DATA = Path(__file__).resolve().parents[1] / "data"
TREES = sorted(p.name for p in (DATA / "topology").iterdir())
UPDATE = os.environ.get("RECMG_UPDATE_GOLDEN") == "1"


def probe(name: str) -> topology.Topology:
    root = DATA / "topology" / name
    return topology.probe(root / "sys", root / "proc")


def test_all_three_recorded_trees_are_present():
    assert TREES == ["dram-cxl-hmat", "one-node", "two-socket-cxl"]


@pytest.mark.parametrize("text,ids", [("0-3,8,10-11", [0, 1, 2, 3, 8, 10, 11]), ("", []),
                                      ("5\n", [5])])
def test_cpulist_round_trip(text, ids):
    assert topology.parse_cpulist(text) == ids
    assert topology.parse_cpulist(topology.format_list(ids, empty="")) == ids


def test_malformed_cpulist_names_the_text():
    with pytest.raises(topology.TopologyError, match="'0-x'"):
        topology.parse_cpulist("0-x")


def test_one_node_host_has_no_slow_tier():
    t = probe("one-node")
    assert [n.id for n in t.memory_nodes] == [0]
    assert t.slow_nodes == [] and not t.can_migrate
    assert t.tier_basis == "single tier"
    assert any("one memory node" in f.what for f in t.findings())


def test_dram_plus_cxl_with_hmat_tiers():
    t = probe("dram-cxl-hmat")
    assert t.nodes[1].cpus == () and t.nodes[1].tier > t.nodes[0].tier
    assert (t.fast_nodes, t.slow_nodes, t.tier_basis) == ([0], [1], "memory tiers")
    assert t.can_migrate and t.nearest_fast(1) == 0
    assert not [f for f in t.findings() if f.level in ("conflict", "missing")]


def test_two_sockets_two_cxl_nodes_with_conflicts_and_no_caps():
    t = probe("two-socket-cxl")
    assert (t.fast_nodes, t.slow_nodes) == ([0, 1], [2, 3])
    assert t.nearest_fast(2) == 0 and t.nearest_fast(3) == 1
    assert not t.can_migrate  # no CAP_SYS_NICE
    levels = [(f.level, f.what.split(":")[0]) for f in t.findings()]
    assert ("conflict", "kernel NUMA balancing is in tiering mode "
            "(kernel.numa_balancing=2)") in levels
    assert t.damon_migration_schemes == [topology.DamonScheme(0, 0, 0, "migrate_cold", 2)]
    assert {f.what.split(":")[0] for f in t.findings() if f.level == "missing"} == {
        "CAP_SYS_NICE", "CAP_SYS_PTRACE", "perf counters"}
    assert t.perf_access == "user-space only"


def test_cpu_less_nodes_are_slow_without_memory_tiers(tmp_path):
    shutil.copytree(DATA / "topology" / "dram-cxl-hmat", tmp_path / "t")
    shutil.rmtree(tmp_path / "t/sys/devices/virtual/memory_tiering")
    t = topology.probe(tmp_path / "t/sys", tmp_path / "t/proc")
    assert (t.fast_nodes, t.slow_nodes, t.tier_basis) == ([0], [1], "CPU-less nodes")


def test_normal_numa_balancing_is_a_warning(tmp_path):
    shutil.copytree(DATA / "topology" / "dram-cxl-hmat", tmp_path / "t")
    (tmp_path / "t/proc/sys/kernel/numa_balancing").write_text("1\n")
    t = topology.probe(tmp_path / "t/sys", tmp_path / "t/proc")
    assert [f.level for f in t.findings() if "balancing" in f.what] == ["warning"]


@pytest.mark.parametrize("path,content,needle", [
    ("sys/devices/system/node/node1/meminfo", "Node 1 garbage\n", "MemTotal"),
    ("sys/devices/system/node/node0/distance", "10 x\n", "distance"),
    ("proc/sys/kernel/numa_balancing", "on\n", "numa_balancing"),
])
def test_malformed_files_name_the_file(tmp_path, path, content, needle):
    shutil.copytree(DATA / "topology" / "dram-cxl-hmat", tmp_path / "t")
    (tmp_path / "t" / path).write_text(content)
    with pytest.raises(topology.TopologyError, match=needle) as ei:
        topology.probe(tmp_path / "t/sys", tmp_path / "t/proc")
    assert str(tmp_path / "t") in str(ei.value)


@pytest.mark.parametrize("name", TREES)
def test_record_reads_back_identically(tmp_path, name):
    root = DATA / "topology" / name
    topology.record(tmp_path / "rec", root / "sys", root / "proc")
    again = topology.probe(tmp_path / "rec/sys", tmp_path / "rec/proc")
    assert again.to_dict() == probe(name).to_dict()


@pytest.mark.parametrize("name", TREES)
@pytest.mark.parametrize("fmt", ["txt", "json"])
def test_recmgctl_check_golden(name, fmt, capsys):
    root = DATA / "topology" / name
    argv = ["check", "--sys-root", str(root / "sys"), "--proc-root", str(root / "proc")]
    assert recmgctl.main(argv + (["--json"] if fmt == "json" else [])) == 0
    out = capsys.readouterr().out
    golden = DATA / "golden" / f"check-{name}.{fmt}"
    if UPDATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(out)
    assert out == golden.read_text()
    if fmt == "json":
        assert json.loads(out)["verdict"] == probe(name).verdict


@pytest.mark.parametrize("name,code", [("one-node", 69), ("two-socket-cxl", 69),
                                       ("dram-cxl-hmat", 0)])
def test_check_strict_exit_codes(name, code, capsys):
    root = DATA / "topology" / name
    assert recmgctl.main(["check", "--strict", "--sys-root", str(root / "sys"),
                          "--proc-root", str(root / "proc")]) == code


def test_check_reports_unreadable_tree_with_os_error_code(tmp_path, capsys):
    shutil.copytree(DATA / "topology" / "one-node", tmp_path / "t")
    (tmp_path / "t/sys/devices/system/node/online").write_text("zero\n")
    assert recmgctl.main(["check", "--sys-root", str(tmp_path / "t/sys"),
                          "--proc-root", str(tmp_path / "t/proc")]) == 71
    assert "cannot read the host topology" in capsys.readouterr().err


def test_a_busy_damon_sysfs_file_is_retried_then_reported_not_a_traceback(monkeypatch):
    """A kdamond at work answers EBUSY; `--check-config` died with a traceback."""
    import errno
    from pathlib import Path

    real = Path.read_text
    calls = {"n": 0}

    def busy(self, *a, **kw):
        if self.name == "state" and "kdamonds" in str(self):
            calls["n"] += 1
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", busy)
    t = probe("two-socket-cxl")
    assert calls["n"] == 3 and t.damon_unreadable == [0]
    warn = [f for f in t.findings() if "kdamond 0: its state could not be read" in f.what]
    assert warn and warn[0].level == "warning"


def test_one_meminfo_parser_for_proc_and_node_files():
    node = ("Node 1 MemTotal:       65536 kB\nNode 1 MemFree:        1024 kB\n"
            "Node 1 HugePages_Total:     3\n")
    assert topology.parse_meminfo(node) == {"MemTotal": 65536 << 10, "MemFree": 1 << 20,
                                            "HugePages_Total": 3}
    proc = "MemTotal:       16384 kB\nMemAvailable:    8192 kB\nHugePages_Free:  0\n"
    assert topology.parse_meminfo(proc) == {"MemTotal": 16 << 20, "MemAvailable": 8 << 20,
                                            "HugePages_Free": 0}
    t = probe("two-socket-cxl")
    fixture = Path(__file__).resolve().parents[1] / "data/topology/two-socket-cxl/sys"
    assert topology.node_meminfo(2, fixture)["MemTotal"] == t.nodes[2].mem_total_bytes
