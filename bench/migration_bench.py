"""Migration throughput: recmgd's move_pages path against `migratepages` (numactl)
and against one move_pages(2) call over the same region, in a two-node guest.

    make migration-bench          # boots the guest (tests/vm/harness.py) and runs this
    python bench/migration_bench.py [--mib 256] [--rounds 3]   # on a two-node host

A child process owns ``--mib`` MiB (THP off, filled); each round moves all of it from
node 0 to node 1 and back with each method in turn:
- recmgd: ``placement.move_to_node`` in batches of ``migration.batch_pages`` (1024), what
  ``MovePagesMigrator.apply`` runs for a tick's moves, without the rate cap;
- one call: a single move_pages(2) over every page of the region;
- migratepages: ``migratepages PID 0 1`` (every page of the process, the region and
  the child's own few MiB).
Prints MiB/s per method and direction (medians over the rounds) and recmgd's ratio to
the others.  Under TCG the copies are emulated: compare the ratios, not the MiB/s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time

import numpy as np

from recmg import native
from recmg.experiments import pagedemo
from recmg.movers import placement
from recmg.host import topology


def _on(child, node: int) -> float:
    st = placement.query_nodes(child.pid, child.pages())
    return float(np.mean(st == node))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-pages", type=int, default=1024,
                    help="recmgd's migration.batch_pages (its default: 1024)")
    a = ap.parse_args()
    if not topology.probe().can_migrate:
        print("migration_bench: this host has one NUMA node; `make migration-bench` runs it "
              "in the two-node guest")
        return 0
    if not shutil.which("migratepages"):
        print("migratepages (numactl) is not installed")
        return 2
    times: dict[tuple[str, int], list[float]] = {}
    ours = f"recmgd (move_pages, {a.batch_pages}-page batches)"
    with pagedemo.RegionChild(a.mib, thp=False) as child:
        pages = child.pages()

        def recmgd(node):  # what MovePagesMigrator.apply runs for a tick's moves
            placement.move_to_node(child.pid, pages, node, batch_pages=a.batch_pages)

        def one_call(node):
            status = np.zeros(len(pages), np.int32)
            native.move_pages(child.pid, pages, np.full(len(pages), node, np.int32), status)

        def migratepages(node):
            subprocess.run(["migratepages", str(child.pid), str(1 - node), str(node)],
                           check=True)

        methods = {ours: recmgd,
                   "one move_pages call": one_call, "migratepages": migratepages}
        for _ in range(a.rounds):
            for name, fn in methods.items():
                for node in (1, 0):
                    t0 = time.perf_counter()
                    fn(node)
                    dt = time.perf_counter() - t0
                    share = _on(child, node)
                    if share < 0.99:
                        print(f"{name}: only {share:.1%} of the pages reached node {node}")
                        return 1
                    times.setdefault((name, node), []).append(dt)
        ok = child.checksum() == pagedemo.expected_checksum(a.mib)
    print(f"{a.mib} MiB, {a.rounds} rounds, medians; contents intact after all moves: {ok}")
    print("| method | to node 1 (MiB/s) | to node 0 (MiB/s) |\n|---|---|---|")
    rate = {k: a.mib / statistics.median(v) for k, v in times.items()}
    for name in methods:
        print(f"| {name} | {rate[(name, 1)]:.0f} | {rate[(name, 0)]:.0f} |")
    for other in ("migratepages", "one move_pages call"):
        r = [rate[(ours, n)] / rate[(other, n)] for n in (1, 0)]
        print(f"recmgd / {other}: {r[0]:.2f} (to node 1), {r[1]:.2f} (to node 0)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
