"""NUMA topology and tiering facts of a host, read from sysfs and procfs.

``probe(sys_root, proc_root)`` reads only files; both roots are overridable so tests
run against recorded trees (tests/data/topology/*) and ``record()`` captures a live
host's tree for a bug report.  Nothing here needs privileges or the native shim.

Sources (Linux 6.1 / 6.12):
- /sys/devices/system/node/{online,has_cpu,has_memory}, nodeN/{cpulist,meminfo,distance}
- /sys/devices/virtual/memory_tiering/memory_tierN/nodelist (Linux 6.1+; a lower tier
  number means a smaller abstract distance, i.e. faster memory)
- /sys/kernel/mm/numa/demotion_enabled (reclaim demotes to the next tier when true)
- /proc/sys/kernel/numa_balancing (bit 0 normal balancing, bit 1 tiering mode, 6.0+)
- /sys/kernel/mm/damon/admin (DAMON sysfs, 5.18+; DAMOS migrate_hot/cold, 6.11+)
- /proc/self/status CapEff, /proc/sys/kernel/perf_event_paranoid, osrelease
- /sys/kernel/mm/transparent_hugepage/enabled
"""

from __future__ import annotations

import errno
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Capability bit numbers (include/uapi/linux/capability.h).
CAPS = {"CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_SYS_NICE": 23, "CAP_PERFMON": 38}


class TopologyError(RuntimeError):
    """A sysfs/procfs file exists but cannot be parsed."""


def parse_cpulist(text: str) -> list[int]:
    """Parse a kernel cpulist/nodelist ("0-3,8,10-11") into sorted ints."""
    out: list[int] = []
    text = text.strip()
    if not text:
        return out
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise TopologyError(f"malformed cpu/node list {text!r}") from None
    return sorted(out)


def _read(path: Path) -> str | None:
    """A sysfs/procfs file's text; None when it is absent or unreadable.  A busy one
    (EBUSY, EAGAIN: a DAMON kdamond at work answers so) is tried three times, 10 ms
    apart; what still fails reads as None, never raises."""
    for attempt in range(3):
        try:
            return path.read_text()
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None
        except OSError as e:
            if e.errno in (errno.EBUSY, errno.EAGAIN) and attempt < 2:
                time.sleep(0.01)
                continue
            return None
    return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise TopologyError(f"{path}: expected an integer, got {text.strip()!r}") from None


@dataclass(frozen=True)
class NumaNode:
    id: int
    cpus: tuple[int, ...]
    mem_total_bytes: int
    mem_free_bytes: int
    distances: tuple[int, ...]
    tier: int | None  # memory_tierN, None where the kernel has no memory tiers

    @property
    def has_cpus(self) -> bool:
        return bool(self.cpus)


@dataclass(frozen=True)
class DamonScheme:
    kdamond: int
    context: int
    scheme: int
    action: str
    target_nid: int | None


@dataclass(frozen=True)
class Finding:
    level: str  # "conflict", "warning", "missing" or "info"
    what: str
    fix: str


@dataclass
class Topology:
    nodes: list[NumaNode]
    kernel: str | None = None
    numa_balancing: int | None = None
    demotion_enabled: bool | None = None
    damon_present: bool = False
    damon_running: int = 0
    damon_migration_schemes: list[DamonScheme] = field(default_factory=list)
    damon_unreadable: list[int] = field(default_factory=list)  # kdamonds whose state failed
    caps: dict[str, bool] = field(default_factory=dict)
    perf_event_paranoid: int | None = None
    thp: str | None = None

    # --- derived facts -------------------------------------------------------------
    @property
    def memory_nodes(self) -> list[NumaNode]:
        return [n for n in self.nodes if n.mem_total_bytes > 0]

    def _split(self) -> tuple[list[int], list[int], str]:
        mem = self.memory_nodes
        tiers = sorted({n.tier for n in mem if n.tier is not None})
        if len(tiers) >= 2:
            fast = [n.id for n in mem if n.tier == tiers[0]]
            return fast, [n.id for n in mem if n.id not in fast], "memory tiers"
        cpuless = [n.id for n in mem if not n.has_cpus]
        with_cpu = [n.id for n in mem if n.has_cpus]
        if cpuless and with_cpu:
            return with_cpu, cpuless, "CPU-less nodes"
        return [n.id for n in mem], [], "single tier"

    @property
    def fast_nodes(self) -> list[int]:
        return self._split()[0]

    @property
    def slow_nodes(self) -> list[int]:
        return self._split()[1]

    @property
    def tier_basis(self) -> str:
        """How fast and slow nodes were told apart."""
        return self._split()[2]

    def nearest_fast(self, slow: int) -> int | None:
        """The fast node closest (by SLIT distance) to a slow node."""
        fast = self.fast_nodes
        node = next((n for n in self.nodes if n.id == slow), None)
        if not fast or node is None or not node.distances:
            return fast[0] if fast else None
        ids = [n.id for n in self.nodes]
        return min(fast, key=lambda f: (node.distances[ids.index(f)], f))

    @property
    def can_migrate(self) -> bool:
        """Real migration possible: a fast and a slow tier, and the capabilities to
        move another process's pages: CAP_SYS_PTRACE (ptrace read access, required by
        move_pages(2) since Linux 4.13) and CAP_SYS_NICE (MPOL_MF_MOVE_ALL, before 4.13)."""
        return bool(self.fast_nodes and self.slow_nodes and self.caps.get("CAP_SYS_NICE")
                    and self.caps.get("CAP_SYS_PTRACE"))

    @property
    def perf_access(self) -> str:
        if self.caps.get("CAP_PERFMON") or self.caps.get("CAP_SYS_ADMIN"):
            return "full"
        p = self.perf_event_paranoid
        if p is None:
            return "unavailable"
        if p <= 1:
            return "full"
        if p == 2:
            return "user-space only"
        return "unavailable"

    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        if len(self.memory_nodes) < 2:
            out.append(Finding("info", "one memory node: nothing to migrate between",
                               "recmgd runs with the simulated tier (modelled placement)"))
        elif not self.slow_nodes:
            out.append(Finding("info", "all memory nodes are in one tier",
                               "set [tiers] fast_nodes/slow_nodes in recmgd.toml to choose"))
        nb = self.numa_balancing
        if nb is not None and nb & 2:
            out.append(Finding(
                "conflict", f"kernel NUMA balancing is in tiering mode "
                f"(kernel.numa_balancing={nb}): the kernel promotes slow-tier pages itself",
                "sysctl -w kernel.numa_balancing=0"))
        elif nb == 1 and len(self.memory_nodes) >= 2:
            out.append(Finding(
                "warning", "kernel NUMA balancing is on (kernel.numa_balancing=1): hinting "
                "faults pull pages back to the CPU's node and undo demotions",
                "sysctl -w kernel.numa_balancing=0"))
        for s in self.damon_migration_schemes:
            out.append(Finding(
                "conflict", f"DAMON kdamond {s.kdamond} runs a {s.action} scheme"
                + (f" to node {s.target_nid}" if s.target_nid is not None else ""),
                f"stop it: echo off > /sys/kernel/mm/damon/admin/kdamonds/{s.kdamond}/state"))
        for kd in self.damon_unreadable:
            out.append(Finding(
                "warning", f"DAMON kdamond {kd}: its state could not be read (busy); a "
                "migration scheme there would conflict with recmg",
                f"cat /sys/kernel/mm/damon/admin/kdamonds/{kd}/state, then run the check "
                "again"))
        if self.demotion_enabled and self.slow_nodes:
            out.append(Finding("info", "reclaim demotes cold pages to the slow tier "
                               "(demotion_enabled=true); recmgd works alongside it", "none"))
        if not self.caps.get("CAP_SYS_NICE"):
            out.append(Finding("missing", "CAP_SYS_NICE: no MPOL_MF_MOVE_ALL, no "
                               "process_madvise on other processes",
                               "run as root or with AmbientCapabilities=CAP_SYS_NICE"))
        if not self.caps.get("CAP_SYS_PTRACE"):
            out.append(Finding("missing", "CAP_SYS_PTRACE: cannot move other users' pages "
                               "(move_pages needs ptrace read access since Linux 4.13) or "
                               "read their mappings",
                               "run as root or with AmbientCapabilities=CAP_SYS_PTRACE"))
        if self.perf_access != "full":
            out.append(Finding("missing", f"perf counters: {self.perf_access} "
                               f"(perf_event_paranoid={self.perf_event_paranoid})",
                               "grant CAP_PERFMON, or sysctl -w kernel.perf_event_paranoid=1"))
        return out

    @property
    def verdict(self) -> str:
        conflicts = [f for f in self.findings() if f.level == "conflict"]
        tail = f"; resolve {len(conflicts)} conflict(s) first" if conflicts else ""
        if self.can_migrate:
            return (f"real migration possible: fast nodes {format_list(self.fast_nodes)}, "
                    f"slow nodes {format_list(self.slow_nodes)}{tail}")
        if self.fast_nodes and self.slow_nodes:
            return ("two tiers present but migration not permitted (missing CAP_SYS_PTRACE "
                    "or CAP_SYS_NICE)" + tail)
        return "no slow tier: recmgd would run with the simulated tier only" + tail

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(fast_nodes=self.fast_nodes, slow_nodes=self.slow_nodes,
                 tier_basis=self.tier_basis, can_migrate=self.can_migrate,
                 perf_access=self.perf_access, verdict=self.verdict,
                 findings=[asdict(f) for f in self.findings()])
        return d


def format_list(ids, empty: str = "-") -> str:
    """Inverse of parse_cpulist: [0, 1, 2, 5] -> "0-2,5"; no ids -> empty."""
    ids = sorted(ids)
    parts, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts) or empty


_MEMINFO_LINE = re.compile(r"^(?:Node \d+ )?([^:\s]+):\s+(\d+)( kB)?\s*$", re.M)


def parse_meminfo(text: str) -> dict[str, int]:
    """The one meminfo parser: /proc/meminfo or a node's
    /sys/devices/system/node/nodeN/meminfo ("Node N " before each key) -> bytes per
    key (counts without a unit, such as HugePages_Total, as they are)."""
    return {k: int(v) * (1024 if kb else 1) for k, v, kb in _MEMINFO_LINE.findall(text)}


def node_meminfo(node: int, sys_root: str | Path = "/sys") -> dict[str, int]:
    """A node's meminfo in bytes; {} where the file is absent or unreadable."""
    return parse_meminfo(_read(Path(sys_root, f"devices/system/node/node{node}/meminfo"))
                         or "")


def meminfo(proc_root: str | Path = "/proc") -> dict[str, int]:
    """/proc/meminfo in bytes; {} where unreadable."""
    return parse_meminfo(_read(Path(proc_root, "meminfo")) or "")


def _meminfo_bytes(text: str, key: str) -> int:
    value = parse_meminfo(text).get(key)
    if value is None:
        raise TopologyError(f"node meminfo has no {key} line")
    return value


def probe(sys_root: str | Path = "/sys", proc_root: str | Path = "/proc") -> Topology:
    """Read the host's topology.  Missing files mean "feature absent", not errors;
    malformed files raise TopologyError naming the file."""
    sysr, procr = Path(sys_root), Path(proc_root)
    node_dir = sysr / "devices/system/node"
    online = _read(node_dir / "online")
    ids = parse_cpulist(online) if online is not None else (
        sorted(int(p.name[4:]) for p in node_dir.glob("node[0-9]*")))
    tiers: dict[int, int] = {}
    for tdir in sorted((sysr / "devices/virtual/memory_tiering").glob("memory_tier*")):
        nodelist = _read(tdir / "nodelist")
        if nodelist is not None:
            for nid in parse_cpulist(nodelist):
                tiers[nid] = int(tdir.name[len("memory_tier"):])
    nodes = []
    for nid in ids:
        d = node_dir / f"node{nid}"
        meminfo = _read(d / "meminfo") or ""
        try:
            total = _meminfo_bytes(meminfo, "MemTotal") if meminfo else 0
            free = _meminfo_bytes(meminfo, "MemFree") if meminfo else 0
        except TopologyError as e:
            raise TopologyError(f"{d / 'meminfo'}: {e}") from None
        dist_text = _read(d / "distance") or ""
        try:
            distances = tuple(int(x) for x in dist_text.split())
        except ValueError:
            raise TopologyError(f"{d / 'distance'}: malformed {dist_text.strip()!r}") from None
        nodes.append(NumaNode(id=nid, cpus=tuple(parse_cpulist(_read(d / "cpulist") or "")),
                              mem_total_bytes=total, mem_free_bytes=free,
                              distances=distances, tier=tiers.get(nid)))
    topo = Topology(nodes=nodes)
    osrel = _read(procr / "sys/kernel/osrelease")
    topo.kernel = osrel.strip() if osrel else None
    topo.numa_balancing = _read_int(procr / "sys/kernel/numa_balancing")
    dem = _read(sysr / "kernel/mm/numa/demotion_enabled")
    topo.demotion_enabled = None if dem is None else dem.strip() in ("true", "1", "Y")
    topo.perf_event_paranoid = _read_int(procr / "sys/kernel/perf_event_paranoid")
    thp = _read(sysr / "kernel/mm/transparent_hugepage/enabled")
    if thp:
        m = re.search(r"\[(\w+)\]", thp)
        topo.thp = m.group(1) if m else thp.strip()
    status = _read(procr / "self/status") or ""
    m = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status, re.M)
    capeff = int(m.group(1), 16) if m else 0
    topo.caps = {name: bool(capeff >> bit & 1) for name, bit in CAPS.items()}
    _probe_damon(topo, sysr / "kernel/mm/damon/admin")
    return topo


def _probe_damon(topo: Topology, admin: Path) -> None:
    topo.damon_present = admin.is_dir()
    for kd in sorted((admin / "kdamonds").glob("[0-9]*")):
        state = _read(kd / "state")
        if state is None and (kd / "state").exists():
            topo.damon_unreadable.append(int(kd.name))
            continue
        if (state or "").strip() != "on":
            continue
        topo.damon_running += 1
        for scheme in sorted(kd.glob("contexts/[0-9]*/schemes/[0-9]*")):
            action = (_read(scheme / "action") or "").strip()
            if action.startswith("migrate_"):
                topo.damon_migration_schemes.append(DamonScheme(
                    kdamond=int(kd.name), context=int(scheme.parent.parent.name),
                    scheme=int(scheme.name), action=action,
                    target_nid=_read_int(scheme / "target_nid")))


# Files record() copies, relative to the sys and proc roots.
_RECORD_SYS = ["devices/system/node/online", "devices/system/node/has_cpu",
               "devices/system/node/has_memory", "kernel/mm/numa/demotion_enabled",
               "kernel/mm/transparent_hugepage/enabled"]
_RECORD_PROC = ["sys/kernel/osrelease", "sys/kernel/numa_balancing",
                "sys/kernel/perf_event_paranoid", "self/status"]


def record(dest: str | Path, sys_root: str | Path = "/sys", proc_root: str | Path = "/proc"
           ) -> list[Path]:
    """Copy the files probe() reads into dest/sys and dest/proc (a recorded tree that
    probe(dest/'sys', dest/'proc') reads back identically).  Returns the files written."""
    sysr, procr, dest = Path(sys_root), Path(proc_root), Path(dest)
    rels = [("sys", sysr, r) for r in _RECORD_SYS] + [("proc", procr, r) for r in _RECORD_PROC]
    for pattern in ("devices/system/node/node[0-9]*/cpulist",
                    "devices/system/node/node[0-9]*/meminfo",
                    "devices/system/node/node[0-9]*/distance",
                    "devices/virtual/memory_tiering/memory_tier*/nodelist",
                    "kernel/mm/damon/admin/kdamonds/[0-9]*/state",
                    "kernel/mm/damon/admin/kdamonds/[0-9]*/contexts/[0-9]*/schemes/[0-9]*/action",
                    "kernel/mm/damon/admin/kdamonds/[0-9]*/contexts/[0-9]*/schemes/[0-9]*/target_nid"):
        rels += [("sys", sysr, str(p.relative_to(sysr))) for p in sysr.glob(pattern)]
    written = []
    if (sysr / "kernel/mm/damon/admin").is_dir():
        (dest / "sys/kernel/mm/damon/admin/kdamonds").mkdir(parents=True, exist_ok=True)
    for top, root, rel in rels:
        src = root / rel
        text = _read(src)
        if text is None:
            continue
        if rel == "self/status":  # keep only what probe() reads; status holds names
            text = "".join(ln + "\n" for ln in text.splitlines() if ln.startswith("Cap"))
        out = dest / top / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        written.append(out)
    return written


@dataclass(frozen=True)
class NodeMemory:
    total_mib: float
    free_mib: float
    available_mib: float


def psi_some_avg10(proc_root: str = "/proc") -> float | None:
    """Memory pressure: /proc/pressure/memory's "some avg10" (percent), None where
    the kernel has no PSI (CONFIG_PSI, Linux 4.20+) or it cannot be read."""
    try:
        text = Path(proc_root, "pressure/memory").read_text()
    except OSError:
        return None
    match = re.search(r"^some avg10=([0-9.]+)", text, re.M)
    return float(match.group(1)) if match else None


def node_memory(node: int, sys_root: str = "/sys") -> NodeMemory | None:
    """A node's memory from /sys/devices/system/node/nodeN/meminfo, in MiB."""
    b = node_meminfo(node, sys_root)
    if "MemTotal" not in b or "MemFree" not in b:
        return None
    avail = b["MemFree"] + sum(b.get(k, 0) for k in ("Active(file)", "Inactive(file)",
                                                      "SReclaimable"))
    return NodeMemory(b["MemTotal"] / 2**20, b["MemFree"] / 2**20,
                      min(avail, b["MemTotal"]) / 2**20)
