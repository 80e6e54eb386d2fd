"""Real page migration inside the two-node QEMU guest (node 1 CPU-less).

Run by tests/vm/test_harness.py::test_guest_suite through the harness; skipped
anywhere else.
"""

import errno
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recmg.experiments import pagedemo
from recmg.movers import placement
from recmg.host import topology

pytestmark = pytest.mark.guest

MIB = 256


def anon_huge_kib(pid: int, addr: int) -> int:
    """AnonHugePages of the mapping that contains addr (from /proc/PID/smaps)."""
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", Path(f"/proc/{pid}/smaps").read_text()):
        lo, hi = (int(x, 16) for x in block.split()[0].split("-"))
        if lo <= addr < hi:
            return int(re.search(r"AnonHugePages:\s+(\d+) kB", block).group(1))
    raise AssertionError(f"no mapping of pid {pid} contains {addr:#x}")


def test_guest_topology_is_two_nodes_with_a_cpu_less_node():
    t = topology.probe()
    assert [n.id for n in t.memory_nodes] == [0, 1]
    assert t.nodes[1].cpus == () and t.nodes[0].cpus == (0, 1)
    assert t.fast_nodes == [0] and t.slow_nodes == [1] and t.can_migrate
    assert t.numa_balancing == 0  # the harness turns it off; see the next test


SORT_AT_PAGE_END = """
import ctypes, mmap
import numpy as np
libc = ctypes.CDLL(None, use_errno=True)
page = mmap.PAGESIZE
m = mmap.mmap(-1, 2 * page)
base = ctypes.addressof(ctypes.c_char.from_buffer(m))
assert libc.mprotect(ctypes.c_void_p(base + page), page, 0) == 0  # PROT_NONE after
for dtype in (np.int64, np.uint64, np.float64, np.int32, np.float32):
    for n in range(1, 300):
        a = np.frombuffer(m, dtype, n, page - n * np.dtype(dtype).itemsize)
        a[:] = np.arange(n, 0, -1)
        a.sort()
        assert (a == np.arange(1, n + 1)).all(), (dtype, n)
print("sorted")
"""


def test_numpy_sorts_an_array_that_ends_where_unmapped_memory_begins():
    """recmgd's worker died in the guest in numpy's sort (np.unique of new pages): under
    QEMU 7.2's TCG the AVX2 sort faults when the array ends at a page followed by
    unmapped memory, although hardware runs it.  The harness gives TCG a CPU without
    AVX2; this fails (SIGSEGV) with the old CPU model."""
    r = subprocess.run([sys.executable, "-c", SORT_AT_PAGE_END], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "sorted" in r.stdout, (r.returncode, r.stderr[-2000:])


def test_numa_balancing_is_detected_when_on():
    knob = Path("/proc/sys/kernel/numa_balancing")
    knob.write_text("1")
    try:
        levels = [f.level for f in topology.probe().findings() if "balancing" in f.what]
        assert levels == ["warning"]
        knob.write_text("2")
        levels = [f.level for f in topology.probe().findings() if "balancing" in f.what]
        assert levels == ["conflict"]
    finally:
        knob.write_text("0")


@pytest.mark.parametrize("thp", [True, False], ids=["thp-on", "thp-off"])
def test_live_process_pages_move_0_to_1_to_0_intact(thp):
    want = pagedemo.expected_checksum(MIB)
    with pagedemo.RegionChild(MIB, thp=thp) as child:
        pages = child.pages()
        assert len(pages) == (MIB << 20) // placement.PAGE_SIZE
        huge = anon_huge_kib(child.pid, child.addr)
        assert (huge > 0) if thp else (huge == 0)
        assert (placement.query_nodes(child.pid, pages) == 0).all()
        for target in (1, 0):
            res = placement.move_to_node(child.pid, pages, target)
            # THP: the per-entry status is corrected by the re-query in move_to_node
            assert res.moved == len(pages), res.summary()
            again = placement.query_nodes(child.pid, pages)
            assert (again == target).all(), placement.node_histogram(again)
            child.touch()  # the owner reads every page between moves
        assert child.checksum() == want


def test_move_reports_per_page_outcomes_in_one_call():
    with pagedemo.RegionChild(16, thp=False) as child:
        pages = child.pages()
        unmapped = np.uint64(1 << 46) + np.arange(4, dtype=np.uint64) * np.uint64(4096)
        res = placement.move_to_node(child.pid, np.concatenate([pages, unmapped]), 1,
                                     batch_pages=1000)
        assert res.moved == len(pages) and res.fault == 4
        assert res.batches == -(-(len(pages) + 4) // 1000)
        assert (res.status[-4:] == -errno.EFAULT).all()
        assert child.checksum() == pagedemo.expected_checksum(16)


def test_recmg_pages_demo_passes():
    from recmg.cli import recmg as recmg_cli
    assert recmg_cli.main(["pages", "demo", "--mib", "32"]) == 0
