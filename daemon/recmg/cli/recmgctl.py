"""recmgctl: inspect the host and (with the daemon) control a running recmgd.

Exit codes (sysexits): 0 ok, 64 usage, 69 unavailable (with --strict: no real
migration possible on this host), 71 OS error reading sysfs/procfs.
"""

from __future__ import annotations

import argparse
import sys

from recmg.cli import check
from recmg.cli.output import EX_OK, EX_OSERR, EX_UNAVAILABLE, fail, print_json
from recmg.tiering import topology


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recmgctl", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser("check", help="what recmg can do on this host (topology, tiers, "
                       "conflicts, permissions)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument("--strict", action="store_true",
                   help="exit 69 unless real page migration is possible")
    c.add_argument("--sys-root", default="/sys", help="sysfs root (default /sys)")
    c.add_argument("--proc-root", default="/proc", help="procfs root (default /proc)")
    return p


def cmd_check(args) -> int:
    try:
        topo = topology.probe(args.sys_root, args.proc_root)
    except (topology.TopologyError, OSError) as e:
        return fail(f"cannot read the host topology: {e}", EX_OSERR)
    if args.json:
        print_json(topo.to_dict())
    else:
        sys.stdout.write(check.render(topo))
    if args.strict and not topo.can_migrate:
        return EX_UNAVAILABLE
    return EX_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"check": cmd_check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
