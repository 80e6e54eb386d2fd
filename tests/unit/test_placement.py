"""Placement primitives against a live child process on this host."""

import errno
import os
import time

import numpy as np
import pytest

from recmg.cli import recmg as recmg_cli
from recmg.movers import placement

PAGE = placement.PAGE_SIZE


@pytest.mark.parametrize("start,length,want", [
    (0, 1, [0]), (PAGE - 1, 2, [0, PAGE]), (PAGE, PAGE, [PAGE]), (5, 0, []),
    (3 * PAGE + 7, 2 * PAGE, [3 * PAGE, 4 * PAGE, 5 * PAGE]),
])
def test_page_addresses_cover_straddling_ranges(start, length, want):
    assert placement.page_addresses(start, length).tolist() == want


def test_unaligned_page_addresses_are_refused():
    with pytest.raises(ValueError, match="aligned"):
        placement.query_nodes(0, np.array([PAGE + 8], np.uint64))


def test_query_and_move_a_live_child(region_child):
    pages = region_child.pages()
    assert len(pages) == (8 << 20) // PAGE
    before = placement.query_nodes(region_child.pid, pages, batch_pages=300)
    assert (before == 0).all()
    res = placement.move_to_node(region_child.pid, pages, 0, batch_pages=500)
    assert res.moved == len(pages) and res.batches == -(-len(pages) // 500)
    assert res.errors == {} and not res.deadline_hit
    assert region_child.checksum() == region_child.checksum()  # child still alive and sane
    summary = res.summary()
    assert summary["moved"] == len(pages) and summary["fault"] == 0


def test_mixed_ranges_count_faults_and_absent_pages(region_child):
    pages = region_child.pages()
    beyond = np.uint64(1 << 46) + np.arange(3, dtype=np.uint64) * np.uint64(PAGE)  # unmapped
    res = placement.move_to_node(region_child.pid, np.concatenate([pages[:10], beyond]), 0)
    assert res.moved == 10 and res.fault == 3 and res.errors == {"EFAULT": 3}
    assert placement.node_histogram(res.status) == {"0": 10, "EFAULT": 3}


def test_deadline_leaves_later_batches_unattempted(region_child):
    pages = region_child.pages()
    res = placement.move_to_node(region_child.pid, pages, 0, batch_pages=64,
                                 deadline=time.monotonic() - 1)
    assert res.deadline_hit and res.batches == 0
    assert res.not_attempted == len(pages) and res.moved == 0
    assert res.errors == {"ETIME": len(pages)}


def test_whole_call_errors_raise(region_child):
    with pytest.raises(ProcessLookupError):
        placement.move_to_node(2**22 + 12345, region_child.pages()[:4], 0)
    with pytest.raises(OSError) as ei:
        placement.move_to_node(region_child.pid, region_child.pages()[:4], 42)
    assert ei.value.errno == errno.ENODEV


def test_recmg_pages_cli(region_child, capsys):
    args = [str(region_child.pid), hex(region_child.addr), str(1 << 20)]
    assert recmg_cli.main(["pages", "where", *args]) == 0
    assert capsys.readouterr().out.strip() == "0=256"
    assert recmg_cli.main(["pages", "move", *args, "0", "--json"]) == 0
    assert '"moved": 256' in capsys.readouterr().out
    assert recmg_cli.main(["pages", "move", *args, "9"]) == 69
    assert "node 9" in capsys.readouterr().err
    assert recmg_cli.main(["pages", "where", "4206649", "0x1000", "4096"]) == 69
    assert recmg_cli.main(["pages", "demo", "--mib", "4"]) == 69  # one node: no slow tier
    assert "no slow memory node" in capsys.readouterr().err


def test_recmg_pages_demo_on_one_node_verifies_contents(capsys):
    assert recmg_cli.main(["pages", "demo", "--mib", "4", "--slow", "0", "--thp", "off"]) == 0
    out = capsys.readouterr().out
    assert "contents intact" in out and "PASS" in out


def test_recmg_topology_record_cli(tmp_path, capsys):
    assert recmg_cli.main(["topology", "record", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t/sys/devices/system/node/node0/meminfo").exists()
    assert os.path.exists(tmp_path / "t/proc/self/status")
