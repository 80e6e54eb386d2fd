"""Safety brakes checked every tick.

- Free-memory floor: a fast node with less than ``free_floor_mib`` free gets no
  promotions (demotions still run; they free memory).  Source: the node's meminfo.
- Node share: a fast node more than ``max_fast_node_share`` used (MemTotal - MemFree)
  gets no promotions either.
- PSI brake: memory pressure ``some avg10`` above ``psi_some_avg10_max`` percent stops
  all moves for the tick (/proc/pressure/memory, Linux 4.20+; absent means no brake).
"""

from __future__ import annotations

import re
from pathlib import Path

from recmg.service import metrics as m


def psi_some_avg10(proc_root: str = "/proc") -> float | None:
    try:
        text = Path(proc_root, "pressure/memory").read_text()
    except (FileNotFoundError, PermissionError, OSError):
        return None
    match = re.search(r"^some avg10=([0-9.]+)", text, re.M)
    return float(match.group(1)) if match else None


def node_memory_mib(node: int, sys_root: str = "/sys") -> tuple[float, float] | None:
    """(total, free) MiB of a node, from its meminfo."""
    try:
        text = Path(sys_root, f"devices/system/node/node{node}/meminfo").read_text()
    except OSError:
        return None
    total = re.search(r"MemTotal:\s+(\d+) kB", text)
    free = re.search(r"MemFree:\s+(\d+) kB", text)
    if not free:
        return None
    return (int(total.group(1)) / 1024 if total else float("inf"), int(free.group(1)) / 1024)


def brake_reason(cfg, fast_nodes: list[int], sys_root: str = "/sys",
                 proc_root: str = "/proc", max_node_share: float = 1.0) -> str | None:
    """None, "psi" (no moves), "free_floor" or "node_share" (no promotions)."""
    psi = psi_some_avg10(proc_root)
    if psi is not None and psi > cfg.psi_some_avg10_max:
        m.BRAKES.labels(reason="psi").inc()
        return "psi"
    for n in fast_nodes:
        mem = node_memory_mib(n, sys_root)
        if mem is None:
            continue
        total, free = mem
        if free < cfg.free_floor_mib:
            m.BRAKES.labels(reason="free_floor").inc()
            return "free_floor"
        if total != float("inf") and (total - free) / total > max_node_share:
            m.BRAKES.labels(reason="node_share").inc()
            return "node_share"
    return None
