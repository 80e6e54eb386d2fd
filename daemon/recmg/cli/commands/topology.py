"""Host topology tools: ``recmg topology record``."""

from __future__ import annotations

from recmg.cli.output import EX_OK
from recmg.host import topology


def add(sub) -> None:
    """``recmg topology``'s parser."""
    topo = sub.add_parser("topology", help="host topology tools")
    tsub = topo.add_subparsers(dest="action", required=True, metavar="ACTION")
    rec = tsub.add_parser("record", help="copy the sysfs/procfs files recmg reads into "
                          "DIR (for a bug report or a test fixture)")
    rec.add_argument("dir")
    rec.add_argument("--sys-root", default="/sys")
    rec.add_argument("--proc-root", default="/proc")


def run(args) -> int:
    files = topology.record(args.dir, args.sys_root, args.proc_root)
    print(f"recorded {len(files)} files under {args.dir}")
    return EX_OK
