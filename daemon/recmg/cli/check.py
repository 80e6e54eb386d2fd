"""`recmgctl check`: what recmg can do on this host, as a table or JSON."""

from __future__ import annotations

from recmg.cli.output import human_bytes, table
from recmg.host.topology import Topology, format_list


def _role(topo: Topology, nid: int) -> str:
    if nid in topo.fast_nodes and topo.slow_nodes:
        return "fast"
    if nid in topo.slow_nodes:
        return "slow"
    return "-" if nid not in topo.fast_nodes else "only"


def render(topo: Topology) -> str:
    """Readable report; stable for golden tests (no timestamps, fixed order)."""
    lines = [f"recmg host check (kernel {topo.kernel or 'unknown'})", "", "NUMA nodes"]
    rows = [["node", "cpus", "memory", "free", "tier", "role", "distances"]]
    for n in topo.nodes:
        rows.append([str(n.id), format_list(n.cpus),
                     human_bytes(n.mem_total_bytes), human_bytes(n.mem_free_bytes),
                     "-" if n.tier is None else str(n.tier), _role(topo, n.id),
                     " ".join(map(str, n.distances)) or "-"])
    lines.append(table(rows))
    lines.append(f"  tiers: fast {format_list(topo.fast_nodes)}, slow {format_list(topo.slow_nodes)} "
                 f"(from {topo.tier_basis})")
    nb = topo.numa_balancing
    nb_text = {None: "unknown", 0: "0 (off)", 1: "1 (normal)", 2: "2 (tiering)",
               3: "3 (normal+tiering)"}.get(nb, str(nb))
    dem = {None: "unknown", True: "true", False: "false"}[topo.demotion_enabled]
    damon = ("absent" if not topo.damon_present else
             f"present, {topo.damon_running} kdamond(s) running, "
             f"{len(topo.damon_migration_schemes)} migration scheme(s)")
    lines += ["", "Kernel", table([["setting", "value"],
                                  ["numa_balancing", nb_text],
                                  ["demotion_enabled", dem],
                                  ["DAMON", damon],
                                  ["transparent hugepages", topo.thp or "unknown"]])]
    yes = {True: "yes", False: "no"}
    lines += ["", "Permissions", table(
        [["capability", "held"]]
        + [[c, yes[topo.caps.get(c, False)]] for c in
           ("CAP_SYS_NICE", "CAP_SYS_PTRACE", "CAP_PERFMON", "CAP_SYS_ADMIN")]
        + [["perf counters", f"{topo.perf_access} (perf_event_paranoid="
            f"{'unknown' if topo.perf_event_paranoid is None else topo.perf_event_paranoid})"]])]
    findings = topo.findings()
    lines += ["", "Findings"]
    if not findings:
        lines.append("  none")
    for f in findings:
        lines.append(f"  [{f.level}] {f.what}")
        if f.fix != "none":
            lines.append(f"      fix: {f.fix}")
    lines += ["", f"Verdict: {topo.verdict}"]
    return "\n".join(lines) + "\n"
