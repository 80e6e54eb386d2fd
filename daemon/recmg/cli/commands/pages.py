"""``recmg pages``: where a process's pages are, moving them, the page-move demo."""

from __future__ import annotations

from recmg.cli.output import EX_OK, EX_UNAVAILABLE, fail, print_json
from recmg.host import topology


def _int(text: str) -> int:
    """Decimal or 0x-prefixed hexadecimal integer."""
    return int(text, 0)


def add(sub) -> None:
    """``recmg pages``'s parser."""
    pages = sub.add_parser("pages", help="page placement of a process")
    psub = pages.add_subparsers(dest="action", required=True, metavar="ACTION")
    where = psub.add_parser("where", help="pages per node of an address range of PID")
    move = psub.add_parser("move", help="move an address range of PID to NODE")
    for sp in (where, move):
        sp.add_argument("pid", type=int)
        sp.add_argument("addr", type=_int, help="start address (hex with 0x)")
        sp.add_argument("length", type=_int, help="bytes")
        sp.add_argument("--json", action="store_true")
    move.add_argument("node", type=int)
    move.add_argument("--batch-pages", type=int, default=4096)
    demo = psub.add_parser("demo", help="move a live child's memory between two nodes and "
                           "verify placement and contents")
    demo.add_argument("--mib", type=int, default=64)
    demo.add_argument("--fast", type=int, help="fast node (default: from topology)")
    demo.add_argument("--slow", type=int, help="slow node (default: from topology)")
    demo.add_argument("--thp", choices=["on", "off", "both"], default="both")


def run(args) -> int:
    from recmg.experiments import pagedemo
    from recmg.movers import placement

    if args.action == "demo":
        topo = topology.probe()
        fast = args.fast if args.fast is not None else (topo.fast_nodes or [0])[0]
        slow = args.slow if args.slow is not None else (
            topo.slow_nodes[0] if topo.slow_nodes else None)
        if slow is None:
            return fail("this host has no slow memory node to move pages to; "
                        "`recmgctl check` explains, or pass --slow NODE", EX_UNAVAILABLE)
        print(f"page-move demo: {args.mib} MiB in a live child, node {fast} -> {slow} "
              f"-> {fast}")
        ok = all(pagedemo.round_trip(args.mib, thp, fast, slow)["ok"]
                 for thp in {"on": [True], "off": [False], "both": [True, False]}[args.thp])
        return EX_OK if ok else 1
    pages = placement.page_addresses(args.addr, args.length)
    if args.action == "where":
        result = placement.node_histogram(placement.query_nodes(args.pid, pages))
    else:
        result = placement.move_to_node(args.pid, pages, args.node,
                                        batch_pages=args.batch_pages).summary()
    if args.json:
        print_json(result)
    else:
        print(" ".join(f"{k}={v}" for k, v in result.items()))
    return EX_OK
