"""Safety brakes checked every tick.

- Free-memory floor: a fast node with less than ``free_floor_mib`` free gets no
  promotions (demotions still run; they free memory).  Source: the node's meminfo.
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


def node_free_mib(node: int, sys_root: str = "/sys") -> float | None:
    try:
        text = Path(sys_root, f"devices/system/node/node{node}/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"MemFree:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else None


def brake_reason(cfg, fast_nodes: list[int], sys_root: str = "/sys",
                 proc_root: str = "/proc") -> str | None:
    """None, "psi" (no moves) or "free_floor" (no promotions)."""
    psi = psi_some_avg10(proc_root)
    if psi is not None and psi > cfg.psi_some_avg10_max:
        m.BRAKES.labels(reason="psi").inc()
        return "psi"
    for n in fast_nodes:
        free = node_free_mib(n, sys_root)
        if free is not None and free < cfg.free_floor_mib:
            m.BRAKES.labels(reason="free_floor").inc()
            return "free_floor"
    return None
