"""Safety brakes checked every tick (docs/operations.md, "Safety", lists each one).

- PSI brake: memory pressure ``some avg10`` above ``safety.psi_some_avg10_max`` percent
  stops all moves for the tick (/proc/pressure/memory, Linux 4.20+; absent: no brake).
- Free-memory floor: a fast node with less than ``safety.free_floor_mib`` *available*
  gets no promotions (demotions still run; they free memory).  Per-node meminfo has no
  MemAvailable, so available is estimated as the kernel does for /proc/meminfo's
  (mm/page_alloc.c si_mem_available, less the watermarks): MemFree + Active(file) +
  Inactive(file) + SReclaimable.  MemFree alone leaves out the page cache, which an
  ordinary host fills, so a free-memory test would brake for good.
- Node share: the pages recmg itself placed on a fast node (over all targets) may not
  exceed ``budget.max_fast_node_share`` of the node's MemTotal; at the limit, no
  promotions.  What other processes use is not recmg's to ration (the floor covers it).

- Node full: a promotion that move_pages answers with ENOMEM (the node is full at
  its watermarks although page cache counts as available) stops promotions for 4
  ticks, doubling while it recurs, up to 256 (service.pipeline); demotions go on.

The PSI and free-floor brakes read the host's real memory, so they apply only to a
backend that really moves pages; with the simulated or dry-run backend nothing is
moved and the node-share brake works on the modelled placement.
"""

from __future__ import annotations

from dataclasses import dataclass

from recmg.service import metrics as m
from recmg.host import topology



@dataclass(frozen=True)
class Brake:
    """A brake that holds for this tick.  ``reason`` is a stable name (metrics label,
    status), ``detail`` the numbers behind it, ``stops`` "all moves", "promotions" or
    "growth" (of the fast pages held: promotions only where the same step demotes)."""

    reason: str
    detail: str
    stops: str


def check(cfg, fast_nodes: list[int], placed_mib: dict[int, float], max_node_share: float,
          real_memory: bool, sys_root: str = "/sys", proc_root: str = "/proc"
          ) -> Brake | None:
    """The brake that holds this tick, or None.  ``cfg`` is the [safety] section,
    ``placed_mib`` what recmg placed on each fast node (all targets), ``real_memory``
    whether the backend moves real pages (else PSI and the floor do not apply)."""
    if real_memory:
        psi = topology.psi_some_avg10(proc_root)
        if psi is not None and psi > cfg.psi_some_avg10_max:
            return _brake("psi", f"memory PSI some avg10 {psi:.1f}% > "
                          f"{cfg.psi_some_avg10_max:g}%", "all moves")
    for n in fast_nodes:
        mem = topology.node_memory(n, sys_root)
        if mem is None:
            continue
        if real_memory and mem.available_mib < cfg.free_floor_mib:
            return _brake("free_floor", f"node {n} has {mem.available_mib:.0f} MiB available "
                          f"< free_floor_mib {cfg.free_floor_mib}", "promotions")
        limit = max_node_share * mem.total_mib
        placed = placed_mib.get(n, 0.0)
        if placed >= limit:
            return _brake("node_share", f"recmg placed {placed:.0f} MiB on node {n}, "
                          f"max_fast_node_share {max_node_share:g} of {mem.total_mib:.0f} MiB",
                          "promotions")
    return None


def node_full(detail: str) -> Brake:
    """The brake after a promotion failed with ENOMEM: the node had less free memory
    than the available estimate above says (page cache that reclaim had not freed).
    It stops growth, not promotions: a page may be promoted into the room a demotion
    in the same step frees."""
    return _brake("node_full", detail, "growth")


def _brake(reason: str, detail: str, stops: str) -> Brake:
    m.BRAKES.labels(reason=reason).inc()
    return Brake(reason, detail, stops)
