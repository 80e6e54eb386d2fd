"""`recmg bench tiering`: recmgd against what the kernel already offers, on one workload,
one DRAM budget and one metric, on a host (or the two-node guest) with a slow node.

Contenders (each a fresh run of the same instrumented DLRM workload: fixed seed, fixed
number of batches, the same tables):
  first-touch   no tiering: the tables where first touch put them (under the budget)
  slow          no tiering: the tables on the slow node
  all-dram      all tables in DRAM (no budget): the ceiling
  kernel        the kernel's tiering: kernel.numa_balancing=2 (hinting-fault promotion,
                Linux 5.18+) and demotion_enabled=1 (reclaim demotes to the slow tier)
  damon         DAMON via the damo tool: a paddr kdamond per node, migrate_hot on the
                slow node and migrate_cold on the fast one (DAMOS actions of Linux 6.11+)
  recmgd-NAME   recmgd with the shipped profile NAME
  ...-layout    the same with a row layout applied by the workload (docs/layouts.md):
                made from the first half of the run's batches (their access counts), so
                its rows predicted to be reused share pages
Every managed contender starts from the "slow" placement: the manager has to find the
hot pages itself.  ``--drift-period 0`` runs the workload without its drifting hot set.

The budget: once the manager runs (so its own memory does not come out of the budget)
and before the tables are touched, fast node 0's free memory is cut to the
budget plus the zones' high watermarks by reserving 2 MiB huge pages on that node
(/sys/devices/system/node/node0/hugepages: pages nobody can migrate, reclaim or demote),
so the kernel's promotion (which stops at the high watermark) has the budget to fill;
recmgd is given the same budget in its config. First touch can fill node 0 down to the
low watermark, so it may hold more; every row reports the table MiB it actually had on
the fast node and node 0's free memory when the workload starts.

The metric, measured the same way for every contender: the share of embedding accesses
whose page was on the fast node when read. A sampler thread queries the node of every
table page every ``sample_ms`` with move_pages(2) (nodes = NULL: a query, no move);
the workload writes each batch's start time; each batch is joined with the last sample
taken before it, and its lookups (replayed from the workload's seed: the synthetic
stream is deterministic; under a layout, at their rows' positions) are counted by where
their pages were.  The share is also given over the second half of the batches alone:
the half no layout was made from. Beside it: pages
migrated (/proc/vmstat pgmigrate_success, every mechanism's moves), the manager's CPU
time (recmgd's, and kswapd, kcompactd and kdamond threads'), the workload's own user
and system time (the kernel's hinting faults are charged to the workload), and the
bound: Belady's MIN over the same page stream at the same budget (demand moves, no
prefetch, free and instant).

It changes the machine while it runs (sysctls, huge pages, DAMON, dropped page cache)
and puts everything back at the end: run it on a machine of its own, as root.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recmg.capture import reader
from recmg.capture.perf import proc_counts
from recmg.movers import placement
from recmg.host import topology

PAGE = placement.PAGE_SIZE
HUGE = 2 << 20
# free memory on the fast node beyond budget + high watermark that still counts as the
# budget (the watermarks move with the kernel's boosts); more, and the row says so
BUDGET_SLACK = 4 * HUGE
MIN_FREE_KBYTES = 8192  # vm.min_free_kbytes during the bench (restored after)
RESERVE_SLACK = 160 << 20
SYS_NODE = Path("/sys/devices/system/node")


@dataclass(frozen=True)
class Workload:
    """The bench's DLRM run: 4 x 200,000 x 64 float32 (195 MiB), drifting hot set."""

    tables: int = 4
    rows: int = 200_000
    dim: int = 64
    pooling: int = 8
    batch_size: int = 256
    alpha: float = 1.05
    drift_period: int = 100
    seed: int = 7
    batches: int = 120

    def args(self) -> list[str]:
        return ["--tables", str(self.tables), "--rows", str(self.rows), "--dim", str(self.dim),
                "--pooling", str(self.pooling), "--batch-size", str(self.batch_size),
                "--alpha", str(self.alpha), "--drift-period", str(self.drift_period),
                "--seed", str(self.seed), "--batches", str(self.batches),
                "--report-every", "1000"]

    def batches_of_rows(self):
        """The run's lookups, batch by batch (per-table row arrays)."""
        from recmg.trace import synthetic
        from recmg.workload.dlrm import ModelSpec
        from recmg.workload.run import synthetic_spec

        spec = synthetic_spec(ModelSpec(rows=(self.rows,) * self.tables, dim=self.dim,
                                        bottom=(64, self.dim)),
                              self.batch_size, self.pooling, self.alpha, self.seed,
                              self.drift_period)
        for idx, _ in synthetic.batches(spec, self.batches):
            yield idx

    def trace(self):
        """The run's lookups as a trace, each batch table by table as the workload's
        client records it (synthetic.trace gives the same keys sample by sample), one
        batch every 10 ms: what `recmg sim --config` replays to set the guest's
        numbers beside recmgd's engine on the host."""
        from recmg.trace import format as tf

        keys = [np.concatenate([tf.make_keys(t, r) for t, r in enumerate(idx)])
                for idx in self.batches_of_rows()]
        offs = np.cumsum([0] + [len(k) for k in keys]).astype(np.uint64)
        return tf.Trace(tables=[tf.TableInfo(t, f"t{t}", self.rows, 4 * self.dim, self.dim,
                                             "<f4") for t in range(self.tables)],
                        keys=np.concatenate(keys), batch_offsets=offs,
                        timestamps_ns=np.arange(1, len(keys) + 1, dtype=np.uint64) * 10**7)


@dataclass(frozen=True)
class Contender:
    name: str
    what: str
    placement: str  # "slow", "first-touch" or "dram": where the tables start
    budget: bool = True  # node 0 cut to the budget
    kernel_tiering: bool = False
    damon: bool = False
    profile: str | None = None  # recmgd's profile
    layout: bool = False  # the workload applies the run's row layout


CONTENDERS = (
    Contender("first-touch", "no tiering, tables where first touch put them", "first-touch"),
    Contender("slow", "no tiering, tables on the slow node", "slow"),
    Contender("kernel", "numa_balancing=2 + demotion", "slow", kernel_tiering=True),
    Contender("damon", "DAMON (damo): migrate_hot/cold", "slow", damon=True),
    Contender("recmgd-default", "recmgd, S3-FIFO + STMS", "slow", profile="default"),
    Contender("recmgd-frequency", "recmgd, LFU", "slow", profile="frequency"),
    Contender("recmgd-lru", "recmgd, LRU", "slow", profile="lru"),
    Contender("recmgd-learned", "recmgd, learned caching", "slow", profile="learned"),
    Contender("recmgd-learned-counted", "recmgd, learned caching per distinct page", "slow",
              profile="learned-counted"),
    Contender("recmgd-recmg", "recmgd, learned caching + prefetch", "slow", profile="recmg"),
    Contender("kernel-layout", "numa_balancing=2 + demotion, row layout", "slow",
              kernel_tiering=True, layout=True),
    Contender("recmgd-default-layout", "recmgd, S3-FIFO + STMS, row layout", "slow",
              profile="default", layout=True),
    Contender("recmgd-learned-layout", "recmgd, learned caching, row layout", "slow",
              profile="learned", layout=True),
    Contender("recmgd-recmg-layout", "recmgd, learned caching + prefetch, row layout",
              "slow", profile="recmg", layout=True),
    # last: it lifts the budget, which is cheaper to take back from unfragmented memory
    Contender("all-dram", "all tables in DRAM, no budget", "dram", budget=False),
)
BY_NAME = {c.name: c for c in CONTENDERS}
# the list: not LRU, nor the learned profiles with a layout (each takes 2-3x the
# default profile's workload time under TCG), nor learned-counted; name them to run them
DEFAULT = [c.name for c in CONTENDERS if c.name not in (
    "recmgd-lru", "recmgd-learned-layout", "recmgd-recmg-layout", "recmgd-learned-counted")]


def make_layout(wl: Workload, path: Path) -> None:
    """The run's row layout: `recmg layout`'s ranking (access counts) over the first
    half of the run's batches."""
    from recmg.rowlayout import format as lf
    from recmg.trace import format as tf
    from recmg.training import rowlayout

    keys = []
    for b, idx in enumerate(wl.batches_of_rows()):
        if b >= wl.batches // 2:
            break
        keys += [tf.make_keys(t, rows) for t, rows in enumerate(idx)]
    sizes = np.cumsum([0] + [len(k) for k in keys])
    per_batch = sizes[::wl.tables]  # a batch's keys are its tables' in order
    trace = tf.Trace(tables=[tf.TableInfo(t, f"t{t}", wl.rows, wl.dim * 4, wl.dim, "<f4")
                             for t in range(wl.tables)],
                     keys=np.concatenate(keys).astype(np.uint64),
                     batch_offsets=per_batch.astype(np.uint64))
    lf.write(path, rowlayout.build([trace], [{"workload": asdict(wl),
                                              "batches": wl.batches // 2}]))


def layout_positions(path: Path) -> list[np.ndarray]:
    """Per table, each row's position under the layout at ``path``."""
    from recmg.rowlayout import format as lf
    from recmg.rowlayout import permute

    return [permute.inverse(permute.positions(t.rows, t.hot)) for t in lf.read(path).tables]

# DAMON's schemes (Linux 6.12 has no node-memory quota goals, those came in 6.16):
# regions of the slow node accessed in >= 5% of samples go to node 0; regions of node 0
# not accessed for 2 s go to the slow node; each scheme moves at most 64 MiB a second.
# Sampling 5 ms, aggregation 100 ms, as in the kernel's samples/damon/mtier.c.
DAMON_CTX = ["--damon_ctx", "--ops", "paddr", "--monitoring_intervals", "5000", "100000",
             "1000000"]
DAMON_HOT = ["--damos_access_rate", "5%", "max", "--damos_age", "0", "max",
             "--damos_quotas", "0", str(64 << 20), "1000"]
DAMON_COLD = ["--damos_access_rate", "0%", "0%", "--damos_age", "2000000", "max",
              "--damos_quotas", "0", str(64 << 20), "1000"]


def damo_start_args(fast: int, slow: int, memcg: str) -> list[str]:
    """`damo start`'s arguments: one kdamond per node, each with one scheme that acts
    only on the pages of cgroup memcg (the workload's): paddr DAMON sees the whole node,
    and would otherwise demote every cold page there (the other processes', the page
    cache) and give the tables more fast memory than the budget."""
    only = ["--damos_filter", "reject", "none", "memcg", memcg]
    return ["start",
            "--kdamond", *DAMON_CTX, "--damon_target", "--numa_node", str(slow),
            "--damos_scheme", "--damos_action", "migrate_hot", str(fast), *DAMON_HOT, *only,
            "--kdamond", *DAMON_CTX, "--damon_target", "--numa_node", str(fast),
            "--damos_scheme", "--damos_action", "migrate_cold", str(slow), *DAMON_COLD, *only]

class BenchError(RuntimeError):
    """The host cannot run a contender; the message says what is missing."""


# ---------------------------------------------------------------------------- kernel state

def _write(path: Path | str, value) -> str:
    """Write value to a sysfs/procfs file; returns the previous value."""
    path = Path(path)
    old = path.read_text().strip()
    path.write_text(f"{value}\n")
    return old


def high_watermark_bytes(node: int, zoneinfo: str | None = None) -> int:
    """The sum of the high watermarks of node's zones (/proc/zoneinfo): the kernel
    promotes to a node only while its free memory stays above them (Linux 5.18+,
    migrate_balanced_pgdat), and page allocation falls back to another node below the
    low one."""
    text = zoneinfo if zoneinfo is not None else Path("/proc/zoneinfo").read_text()
    total, inside = 0, False
    for line in text.splitlines():
        m = re.match(r"Node (\d+), zone", line)
        if m:
            inside = int(m.group(1)) == node
        elif inside:
            m = re.match(r"\s+high\s+(\d+)$", line)  # not the per-cpu "high:" lines
            if m:
                total += int(m.group(1))
    return total * PAGE


class NodeReserve:
    """Cuts a node's free memory to a target by reserving 2 MiB huge pages there.  One
    for the whole bench: it reserves most of what it needs at the start, while the
    node's memory is not yet fragmented, and each run adjusts by a few pages."""

    def __init__(self, node: int):
        self.path = SYS_NODE / f"node{node}" / "hugepages" / "hugepages-2048kB" / "nr_hugepages"
        self.node = node
        if not self.path.exists():
            raise BenchError(f"{self.path} is missing: the kernel has no 2 MiB huge pages, "
                             "so the fast-memory budget cannot be set (run the bench on a "
                             "kernel built with CONFIG_HUGETLBFS, as Debian's are)")
        self.original = int(self.path.read_text())

    def leave_free(self, target: int) -> int:
        """Reserve or release huge pages until node's MemFree is about target bytes
        (2 MiB steps); returns the free bytes achieved.  Clean page cache is dropped
        first: reclaim would otherwise turn it into fast memory beyond the budget for
        whichever contender puts the node under pressure."""
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        compact = SYS_NODE / f"node{self.node}" / "compact"  # CONFIG_COMPACTION
        for _ in range(8):  # the kernel may grant fewer pages than asked (fragmentation)
            free = topology.node_meminfo(self.node)["MemFree"]
            have = int(self.path.read_text())
            want = max(0, have + (free - target) // HUGE)
            if want == have:
                break
            self.path.write_text(f"{want}\n")
            time.sleep(0.2)  # kcompactd
            if int(self.path.read_text()) < want and compact.exists():
                # short of free 2 MiB blocks after earlier runs: compact the node now
                # (its migrations happen before settle(), so no contender is charged)
                compact.write_text("1\n")
        return topology.node_meminfo(self.node)["MemFree"]

    def release(self) -> None:
        self.path.write_text(f"{self.original}\n")


class Cgroup:
    """A cgroup v2 of its own for the workload (memory controller on), so DAMON's filter
    can name its pages; it limits nothing."""

    ROOT = Path("/sys/fs/cgroup")

    def __init__(self, name: str):
        if not (self.ROOT / "cgroup.controllers").exists():
            raise BenchError(f"no cgroup v2 hierarchy at {self.ROOT} (mount -t cgroup2 none "
                             f"{self.ROOT})")
        if "memory" not in (self.ROOT / "cgroup.controllers").read_text().split():
            raise BenchError("the cgroup v2 memory controller is not available")
        if "memory" not in (self.ROOT / "cgroup.subtree_control").read_text().split():
            (self.ROOT / "cgroup.subtree_control").write_text("+memory\n")
        self.path = self.ROOT / name
        self.path.mkdir(exist_ok=True)
        self.name = "/" + name  # as DAMON's memcg_path wants it

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:  # a process still in it (it is empty once the workload is reaped)
            pass


def vmstat() -> dict[str, int]:
    out = {}
    for line in Path("/proc/vmstat").read_text().splitlines():
        k, _, v = line.partition(" ")
        out[k] = int(v)
    return out


def settle(quiet_s: float = 1.0, limit_s: float = 20.0) -> None:
    """Until no page has migrated for quiet_s (at most limit_s): reserving huge pages
    compacts memory (kcompactd migrates pages), which must not count for the next run."""
    t0 = last_change = time.monotonic()
    last = vmstat()["pgmigrate_success"]
    while time.monotonic() - last_change < quiet_s and time.monotonic() - t0 < limit_s:
        time.sleep(0.2)
        now = vmstat()["pgmigrate_success"]
        if now != last:
            last, last_change = now, time.monotonic()


VMSTAT_KEYS = ("pgmigrate_success", "pgpromote_success", "pgdemote_kswapd", "pgdemote_direct",
               "numa_hint_faults", "pgmigrate_fail")
MANAGER_THREADS = re.compile(r"^(kswapd\d+|kcompactd\d+|kdamond\.\d+)$")


def manager_cpu(pids: list[int]) -> float:
    """CPU seconds so far of the kernel's tiering threads (kswapd, kcompactd, kdamond)
    and of the given processes (recmgd): read before a manager stops, since an exited
    thread's time is gone."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if int(pid) in pids or MANAGER_THREADS.match(
                    Path(f"/proc/{pid}/comm").read_text().strip()):
                total += proc_counts(int(pid))["cpu_time_ns"] / 1e9
        except OSError:  # exited while we looked
            continue
    return total


# -------------------------------------------------------------------------------- sampling

class PlacementSampler(threading.Thread):
    """Every period_s, the node of each page of addrs in process pid (a move_pages
    query), kept as packed "on a fast node" bits with its CLOCK_MONOTONIC time.  At most
    max_samples are kept (a longer run keeps its first ones and counts the rest)."""

    def __init__(self, pid: int, addrs: np.ndarray, fast: list[int], period_s: float,
                 max_samples: int = 20_000):
        super().__init__(daemon=True)
        self.pid, self.addrs, self.period_s = pid, addrs, period_s
        self.fast = np.asarray(fast, np.int32)
        self.times = np.zeros(max_samples, np.int64)
        self.bits = np.zeros((max_samples, (len(addrs) + 7) // 8), np.uint8)
        self.n = self.missed = 0
        self.query_s = 0.0  # time spent in the queries (the sampler's own cost)
        self.error: str | None = None
        self._halt = threading.Event()

    def sample(self) -> None:
        t = time.monotonic_ns()
        nodes = placement.query_nodes(self.pid, self.addrs)
        self.query_s += (time.monotonic_ns() - t) / 1e9
        if self.n < len(self.times):
            self.times[self.n] = t
            self.bits[self.n] = np.packbits(np.isin(nodes, self.fast))
            self.n += 1
        else:
            self.missed += 1

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.sample()
            except OSError as e:  # the workload exited between two samples
                self.error = str(e)
                return
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def table_pages(tables: list[reader.TableRegion]) -> tuple[np.ndarray, np.ndarray]:
    """(every table page's address, each table's first index into it)."""
    per = [placement.page_addresses(t.base, t.length) for t in tables]
    starts = np.cumsum([0] + [len(p) for p in per])
    return np.concatenate(per), starts


def page_stream(wl: Workload, tables: list[reader.TableRegion], starts: np.ndarray,
                positions: list[np.ndarray] | None = None):
    """Per batch, the index (into table_pages' order) of each lookup's page; with
    ``positions`` (a layout's, per table) rows are read where the layout put them."""
    for idx in wl.batches_of_rows():
        yield np.concatenate([
            starts[t] + ((tables[t].base % PAGE
                          + (rows if positions is None else positions[t][rows]).astype(np.int64)
                          * tables[t].info.row_bytes) // PAGE)
            for t, rows in enumerate(idx)])


def join(batch_times: np.ndarray, times: np.ndarray, bits: np.ndarray, stream) -> dict:
    """Accesses whose page was on a fast node in the last sample before their batch,
    over all batches and over the second half alone."""
    fast = total = late_fast = late_total = 0
    mib = []
    half = len(batch_times) // 2
    for b, (start, pages) in enumerate(zip(batch_times, stream)):
        j = max(int(np.searchsorted(times, start, side="right")) - 1, 0)
        on = np.unpackbits(bits[j])
        hit = int(on[pages].sum())
        fast += hit
        total += len(pages)
        if b >= half:
            late_fast += hit
            late_total += len(pages)
        mib.append(int(on.sum()))
    return {"accesses": total, "fast_share": fast / total if total else 0.0,
            "fast_share_2nd_half": late_fast / late_total if late_total else 0.0,
            "table_mib_fast": round(float(np.mean(mib)) * PAGE / 2**20, 1) if mib else 0.0}


def opt_bound(wl: Workload, tables: list[reader.TableRegion], starts: np.ndarray,
              budget_pages: int, positions: list[np.ndarray] | None = None) -> float:
    """Belady's MIN over the run's page stream with budget_pages of fast memory: the
    share of accesses that hit (demand moves only, free and instant); with
    ``positions``, the page stream under that layout."""
    from recmg.engine.policy.cache import opt_keep

    units = np.concatenate(list(page_stream(wl, tables, starts, positions))).astype(np.uint64)
    return float(opt_keep(units, budget_pages)[1].mean())


# -------------------------------------------------------------------------------- managers

class Manager:
    """Starts and stops one contender's manager; ``pids`` are its processes."""

    def __init__(self, c: Contender, tmp: Path, budget_mib: int, slow: int, fast: int,
                 free_floor_mib: int, segment: str, memcg: str):
        self.c, self.tmp, self.pids, self.memcg = c, tmp, [], memcg
        self.budget_mib, self.slow, self.fast = budget_mib, slow, fast
        self.free_floor_mib, self.segment = free_floor_mib, segment
        self._restore: list[tuple[Path, str]] = []
        self._daemon = None
        self.damo: str | None = None  # set once DAMON runs
        self.log = ""

    def _set(self, path: str, value) -> None:
        p = Path(path)
        if not p.exists():
            raise BenchError(f"{path} is missing: this kernel cannot run {self.c.name!r} "
                             "(memory tiering needs Linux 6.1+ with NUMA balancing; leave "
                             "it out with --contenders)")
        self._restore.append((p, _write(p, value)))

    def start(self) -> None:
        if self.c.kernel_tiering:
            self._set("/proc/sys/kernel/numa_balancing", 2)
            self._set("/sys/kernel/mm/numa/demotion_enabled", 1)
        if self.c.damon:
            damo = shutil.which("damo", path=str(Path(sys.executable).parent)) or \
                shutil.which("damo")
            if not damo:
                raise BenchError("damo is not installed (pip install 'recmg[bench]')")
            cmd = [damo, *damo_start_args(self.fast, self.slow, self.memcg)]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            self.damo = damo  # stop even after a failed start: one kdamond may run
            if res.returncode != 0:
                raise BenchError(f"damo start failed ({res.returncode}): "
                                 f"{(res.stderr or res.stdout).strip()[-500:]}")
        if self.c.profile:
            from recmg.experiments import demo

            cfg = demo.config(self.tmp, "move_pages", self.budget_mib, self.c.profile,
                              segment=self.segment, free_floor_mib=self.free_floor_mib)
            self._daemon = demo.start_recmgd(cfg, self.tmp / "control.sock")
            self.pids = [self._daemon.pid]
            # serving, not only listening: under TCG a cold recmgd once answered nothing
            # for a whole run (0 moves, status unreachable), which read as a 0% share
            t0 = time.monotonic()
            while self.status() is None:
                if self._daemon.poll() is not None or time.monotonic() - t0 > 120:
                    raise BenchError(f"{self.c.name}: recmgd does not answer status: "
                                     + demo.stop_recmgd(self._daemon)[-800:])
                time.sleep(0.2)

    def status(self) -> dict | None:
        if self._daemon is None:
            return None
        from recmg.service import control

        try:
            return control.request(str(self.tmp / "control.sock"), {"cmd": "status"})["result"]
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self._daemon is not None:
            from recmg.experiments import demo

            self.log = demo.stop_recmgd(self._daemon)
            self._daemon = None
        if self.damo:
            subprocess.run([self.damo, "stop"], capture_output=True, timeout=120)
            self.damo = None
        for path, old in reversed(self._restore):
            path.write_text(f"{old}\n")
        self._restore.clear()


# ------------------------------------------------------------------------------------- run

def wait_stopped(pid: int, timeout_s: float) -> None:
    """Until pid is in state T (it stopped itself) or gone."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            raise BenchError(f"the workload (pid {pid}) exited before its tables were "
                             "mapped") from None
        if state in ("T", "t"):
            return
        time.sleep(0.05)
    raise BenchError(f"the workload (pid {pid}) did not reach its tables in {timeout_s:.0f} s")


def run_one(c: Contender, wl: Workload, budget_mib: int, tmp: Path, fast: int, slow: int,
            sample_ms: int, reserve: NodeReserve, say) -> tuple[dict, dict]:
    """One contender: returns (row, raw) where raw has the arrays the join needs."""
    segment = f"tb{os.getpid()}"
    times_file = tmp / f"{c.name}.times.npy"
    bindir = Path(sys.executable).parent
    args = [str(bindir / "recmg"), "workload", *wl.args(), "--name", segment,
            "--batch-times", str(times_file), "--stop-before-fill"]
    if c.layout:
        args += ["--layout", str(tmp / "run.rlayout")]
    if c.placement == "slow":
        args += ["--prefer-node", str(slow)]
    elif c.placement == "dram":
        args += ["--prefer-node", str(fast)]
    cgroup = Cgroup(segment)
    manager = Manager(c, tmp, budget_mib, slow, fast, free_floor_mib=8, segment=segment,
                      memcg=cgroup.name)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = None
    try:
        wait_stopped(proc.pid, 300)
        cgroup.add(proc.pid)  # before the tables are touched: their pages are charged there
        path = Path("/dev/shm") / f"recmg.{segment}.{proc.pid}"
        _, tables = reader.peek_tables(path)
        addrs, starts = table_pages(tables)
        # the manager first: its own memory (recmgd's Python and model runtime, DAMON's
        # regions) comes out of node 0 before the budget is cut, not out of the budget
        manager.start()
        target = budget_mib * 2**20 + high_watermark_bytes(fast)
        if c.budget:
            reserve.leave_free(target)
        else:
            reserve.release()
        settle()  # the reserve's compaction, not the contender's moves
        free = topology.node_meminfo(fast)["MemFree"] if c.budget else None
        if free is not None and free > target + BUDGET_SLACK:
            # memory freed while it settled (the compaction, the last run's leftovers):
            # cut again, once
            reserve.leave_free(target)
            settle()
            free = topology.node_meminfo(fast)["MemFree"]
        cpu0, vm0 = manager_cpu(manager.pids), vmstat()
        sampler = PlacementSampler(proc.pid, addrs, [fast], sample_ms / 1000)
        sampler.sample()
        sampler.start()
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGCONT)
        _, wstatus, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(wstatus)
        sampler.stop()
        cpu1, vm1 = manager_cpu(manager.pids), vmstat()
        status = manager.status()
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        manager.stop()
        cgroup.remove()
    out = proc.stdout.read()
    summary = next((ln for ln in out.splitlines() if ln.startswith("workload summary")), "")
    if proc.returncode != 0 or not summary:
        raise BenchError(f"{c.name}: the workload failed ({proc.returncode}): {out[-800:]}")
    batch_times = np.load(times_file)
    row = {"contender": c.name, "what": c.what,
           "node0_free_mib": None if free is None else round(free / 2**20, 1),
           "budget_held": None if free is None else bool(free <= target + BUDGET_SLACK),
           "pages_migrated": vm1["pgmigrate_success"] - vm0["pgmigrate_success"],
           "vmstat": {k: vm1.get(k, 0) - vm0.get(k, 0) for k in VMSTAT_KEYS},
           "manager_cpu_s": round(cpu1 - cpu0, 2),
           "workload_user_s": round(usage.ru_utime, 2), "workload_sys_s": round(usage.ru_stime, 2),
           "wall_s": round(wall, 1), "batches": int(len(batch_times)),
           "batch_span_s": round((batch_times[-1] - batch_times[0]) / 1e9, 1)
           if len(batch_times) else 0.0,
           "samples": sampler.n, "samples_missed": sampler.missed,
           "sampler_stopped_by": sampler.error,
           "sample_query_ms": round(1e3 * sampler.query_s / max(sampler.n, 1), 1),
           "p50_ms": float(summary.split("p50_ms=")[1].split()[0])}
    if manager.log.strip():
        row["recmgd_log"] = manager.log.splitlines()[-20:]
    if c.profile and not status:
        # enough of its output for a crash's faulthandler dump (every thread's stack)
        raise BenchError(f"recmgd stopped answering during the run (its output: "
                         f"{manager.log.strip()[-8000:] or 'nothing'})")
    if status:
        t = status["totals"]
        tg = status["targets"][0] if status["targets"] else {}
        row["recmgd"] = {"promoted": t["promoted"], "demoted": t["demoted"],
                         "ticks": status["tick"], "last_tick_ms": status["last_tick_ms"],
                         "accesses_seen": t["accesses"], "sampling": tg.get("sampling")}
    say(f"  {c.name}: vmstat {row['vmstat']}")
    say(f"  {c.name}: {len(batch_times)} batches in {row['batch_span_s']} s ({wall:.1f} s with "
        f"the fill), {row['pages_migrated']} pages migrated, manager CPU "
        f"{row['manager_cpu_s']} s, a placement query {row['sample_query_ms']} ms")
    raw = {"batch_times": batch_times, "times": sampler.times[:sampler.n],
           "bits": sampler.bits[:sampler.n], "tables": tables, "starts": starts}
    return row, raw


def check_contenders(names: list[str]) -> None:
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise BenchError(f"unknown contenders {unknown}; known: {', '.join(BY_NAME)}")


def run(contenders: list[str], wl: Workload, budget_mib: int, out_dir: Path | None,
        sample_ms: int = 500, say=None) -> list[dict]:
    """Every contender in turn, then the join and the bound; the rows, best first after
    the bound.  Needs root and a slow node (the two-node guest: `make tiering-bench`)."""
    if say is None:
        def say(msg):  # flushed: in the guest stdout is the serial console, not a tty
            print(msg, flush=True)
    check_contenders(contenders)
    topo = topology.probe()
    if not (topo.fast_nodes and topo.slow_nodes):
        raise BenchError("this host has no slow memory tier (a CPU-less NUMA node); run it "
                         "in the two-node guest: make tiering-bench")
    if os.geteuid() != 0:
        raise BenchError("needs root: it sets sysctls, huge pages and DAMON")
    fast, slow = topo.fast_nodes[0], topo.slow_nodes[0]
    say(f"recmg bench tiering: fast node {fast}, slow node {slow}, DRAM budget {budget_mib} "
        f"MiB, {wl.batches} batches of {wl.batch_size} x {wl.tables} x {wl.pooling} lookups, "
        f"tables {wl.tables * wl.rows * wl.dim * 4 / 2**20:.0f} MiB")
    with terminating_as_interrupt():
        return _run(contenders, wl, budget_mib, out_dir, sample_ms, say, fast, slow)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP during the bench: unwinds like Ctrl-C, through every finally
    that restores what the bench changed (sysctls, huge pages, the workload)."""


@contextlib.contextmanager
def terminating_as_interrupt():
    """SIGTERM and SIGHUP raise Terminated, as SIGINT raises KeyboardInterrupt; the
    previous handlers come back after."""
    def handler(signum, frame):
        raise Terminated(f"{signal.Signals(signum).name} received: restoring the host")

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _run(contenders, wl, budget_mib, out_dir, sample_ms, say, fast, slow) -> list[dict]:
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="recmg-tiering-"))
    raw = None
    # Small watermarks for the bench: THP raises min_free_kbytes to tens of MiB per node,
    # and each mechanism stops at a different watermark (first touch falls back at low,
    # the kernel promotes down to high, a migration allocates down to min), so a wide
    # spread would hand them different budgets.
    min_free = Path("/proc/sys/vm/min_free_kbytes")
    old_min_free = _write(min_free, MIN_FREE_KBYTES)
    # no proactive compaction: its migrations would count as the contenders' moves
    proactive = Path("/proc/sys/vm/compaction_proactiveness")
    old_proactive = _write(proactive, 0) if proactive.exists() else None
    reserve = NodeReserve(fast)
    try:
        # most of the reserve now, unfragmented; each run adjusts it (RESERVE_SLACK: room
        # for a workload's interpreter and libraries before its tables)
        reserve.leave_free(budget_mib * 2**20 + RESERVE_SLACK)
        positions = None
        if any(BY_NAME[n].layout for n in contenders):
            make_layout(wl, tmp / "run.rlayout")
            positions = layout_positions(tmp / "run.rlayout")
        for name in contenders:
            say(f"run {name}: {BY_NAME[name].what}")
            try:
                row, last = run_one(BY_NAME[name], wl, budget_mib, tmp, fast, slow,
                                    sample_ms, reserve, say)
            except BenchError as e:  # one contender this host cannot run: say so, go on
                say(f"  {name}: not run: {e}")
                rows.append({"contender": name, "what": BY_NAME[name].what, "error": str(e)})
                continue
            raw = last
            row.update(join(raw["batch_times"], raw["times"], raw["bits"],
                            page_stream(wl, raw["tables"], raw["starts"],
                                        positions if BY_NAME[name].layout else None)))
            rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        reserve.release()
        min_free.write_text(f"{old_min_free}\n")
        if old_proactive is not None:
            proactive.write_text(f"{old_proactive}\n")
    if raw is None:
        raise BenchError("no contender ran: " + "; ".join(r["error"] for r in rows))
    bound = {"contender": "OPT (bound)", "what": "Belady MIN on the page stream, same budget",
             "fast_share": opt_bound(wl, raw["tables"], raw["starts"],
                                     budget_mib * 2**20 // PAGE)}
    rows.append(bound)
    if positions is not None:
        rows.append({"contender": "OPT with the layout (bound)",
                     "what": "Belady MIN on the page stream under the run's layout",
                     "fast_share": opt_bound(wl, raw["tables"], raw["starts"],
                                             budget_mib * 2**20 // PAGE, positions)})
    result = {"workload": asdict(wl), "budget_mib": budget_mib, "sample_ms": sample_ms,
              "kernel": os.uname().release, "rows": rows}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "tiering.json").write_text(json.dumps(result, indent=1, default=str))
    say(table(result))
    return rows


def table(result: dict) -> str:
    """The markdown table of a result (docs/results.md)."""
    lines = ["| contender | accesses on fast node | 2nd half | table MiB on fast node (node 0 "
             "free at start) | pages migrated | manager CPU s | workload user/sys s | p50 "
             "batch ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['contender']} ({r['what']}) | not run: {r['error']} | | | | | "
                         "| |")
            continue
        if "pages_migrated" not in r:
            lines.append(f"| {r['contender']} | {100 * r['fast_share']:.1f}% | | "
                         f"{result['budget_mib']} | | | | |")
            continue
        lines.append(f"| {r['contender']} ({r['what']}) | {100 * r['fast_share']:.1f}% | "
                     f"{100 * r.get('fast_share_2nd_half', 0):.1f}% | "
                     f"{r['table_mib_fast']} ({r['node0_free_mib'] or '-'}"
                     f"{'; budget not held' if r.get('budget_held') is False else ''}) | "
                     f"{r['pages_migrated']} | {r['manager_cpu_s']} | "
                     f"{r['workload_user_s']}/{r['workload_sys_s']} | {r['p50_ms']:.0f} |")
    return "\n".join(lines)
