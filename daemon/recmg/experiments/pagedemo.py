"""A live process with a known memory region, and a page-move round trip over it.

Used by `recmg pages demo` (what `make run` shows in the NUMA guest) and by the guest
tests.  The child is a real separate process: it allocates an anonymous region, fills
it with a deterministic pattern and answers checksum requests over a pipe, so moves
are made from outside exactly as recmgd makes them.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass

from recmg.movers import placement

HUGE = 2 << 20

# The child: mmap + optional THP advice + fill, then a tiny line protocol on stdin.
_CHILD = r"""
import mmap, sys, hashlib
import numpy as np
from recmg import native
mib, thp = int(sys.argv[1]), sys.argv[2]
length = mib << 20
huge = 2 << 20
m = mmap.mmap(-1, length + huge, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
raw = np.frombuffer(m, dtype=np.uint8)
base = raw.ctypes.data
off = (-base) % huge                     # 2 MiB-align so THP can back the region
addr = base + off
native.madvise(addr, length, native.MADV_HUGEPAGE if thp == "on" else native.MADV_NOHUGEPAGE)
region = raw[off:off + length]
words = region.view(np.uint64)
words[:] = np.arange(len(words), dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
print("READY", addr, length, flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "sum":
        print("SUM", hashlib.sha256(region).hexdigest(), flush=True)
    elif cmd == "touch":                 # read every page (a workload's access)
        print("TOUCHED", int(words[::512].sum() & np.uint64(0xFFFF)), flush=True)
    elif cmd == "exit":
        break
"""


def expected_checksum(mib: int) -> str:
    """The sha256 the child's region must have if its contents are intact."""
    import numpy as np

    words = np.arange((mib << 20) // 8, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return hashlib.sha256(words.view(np.uint8)).hexdigest()


class RegionChild:
    """A child process owning `mib` MiB at .addr (page addresses via .pages())."""

    def __init__(self, mib: int, thp: bool):
        self.mib = mib
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(mib),
                                      "on" if thp else "off"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            self.close()
            raise RuntimeError(f"region child failed to start (got {line!r})")
        self.addr, self.length = int(line[1]), int(line[2])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pages(self):
        return placement.page_addresses(self.addr, self.length)

    def _ask(self, cmd: str) -> list[str]:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().split()

    def checksum(self) -> str:
        return self._ask("sum")[1]

    def touch(self) -> None:
        self._ask("touch")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("exit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class Step:
    what: str
    seconds: float
    placement: dict[str, int]
    moved: int | None = None


def round_trip(mib: int, thp: bool, fast: int, slow: int, out=print) -> dict:
    """Move a live child's region fast -> slow -> fast, verifying each step by
    re-query and the contents by checksum.  Returns a summary dict; raises nothing
    for a failed verification (``ok`` says), NativeError for a refused move."""
    steps: list[Step] = []
    with RegionChild(mib, thp) as child:
        pages = child.pages()
        want = expected_checksum(mib)
        steps.append(Step("allocated", 0.0,
                          placement.node_histogram(placement.query_nodes(child.pid, pages))))
        for target in (slow, fast):
            res = placement.move_to_node(child.pid, pages, target)
            hist = placement.node_histogram(placement.query_nodes(child.pid, pages))
            steps.append(Step(f"moved to node {target}", res.seconds, hist, res.moved))
        intact = child.checksum() == want
    ok = (steps[1].placement.get(str(slow)) == len(pages)
          and steps[2].placement.get(str(fast)) == len(pages) and intact)
    for s in steps:
        rate = (f", {mib / s.seconds:.0f} MiB/s" if s.seconds > 0 else "")
        out(f"  {s.what:<16} pages per node {s.placement}"
            + (f" ({s.moved} moved in {s.seconds:.2f} s{rate})" if s.moved is not None else ""))
    out(f"  contents {'intact' if intact else 'CORRUPTED'} (sha256 of {mib} MiB), "
        f"THP {'on' if thp else 'off'}: {'PASS' if ok else 'FAIL'}")
    return {"mib": mib, "thp": thp, "pages": int(len(pages)), "intact": intact, "ok": ok,
            "steps": [s.__dict__ for s in steps]}
