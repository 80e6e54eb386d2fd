"""recmg: offline toolkit (host topology recording, page placement tools).

Exit codes (sysexits): 0 ok, 1 a verification failed, 64 usage, 69 unavailable
(e.g. a node that does not exist), 71 other OS error, 77 permission denied.
"""

from __future__ import annotations

import argparse
import sys

from recmg.cli.output import (EX_NOPERM, EX_OK, EX_OSERR, EX_UNAVAILABLE, EX_USAGE, fail,
                              print_json)
from recmg.tiering import topology


def _int(text: str) -> int:
    """Decimal or 0x-prefixed hexadecimal integer."""
    return int(text, 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recmg", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    topo = sub.add_parser("topology", help="host topology tools")
    tsub = topo.add_subparsers(dest="action", required=True, metavar="ACTION")
    rec = tsub.add_parser("record", help="copy the sysfs/procfs files recmg reads into "
                          "DIR (for a bug report or a test fixture)")
    rec.add_argument("dir")
    rec.add_argument("--sys-root", default="/sys")
    rec.add_argument("--proc-root", default="/proc")

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
    return p


def cmd_topology(args) -> int:
    files = topology.record(args.dir, args.sys_root, args.proc_root)
    print(f"recorded {len(files)} files under {args.dir}")
    return EX_OK


def cmd_pages(args) -> int:
    from recmg import native
    from recmg.tiering import pagedemo, placement

    try:
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
    except native.NativePermissionError as e:
        return fail(str(e), EX_NOPERM)
    except (native.NativeNodeError, native.NativeProcessLookupError) as e:
        return fail(str(e), EX_UNAVAILABLE)
    except ValueError as e:
        return fail(str(e), EX_USAGE)
    except OSError as e:
        return fail(str(e), EX_OSERR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"topology": cmd_topology, "pages": cmd_pages}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
