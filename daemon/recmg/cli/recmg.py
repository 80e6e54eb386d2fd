"""recmg: offline toolkit (workload, capture and traces, host topology, page placement).

Each command is a module of recmg.cli.commands (its parser and what it runs).

Exit codes (sysexits): 0 ok, 1 a verification failed, 64 usage, 69 unavailable
(e.g. a node that does not exist), 71 other OS error, 77 permission denied.
"""

from __future__ import annotations

import argparse
import sys

from recmg.cli.commands import (bench, capture, demo, label, layout, pages, sim, topology,
                                trace, train, workload)
from recmg.cli.output import Parser, guarded

# in the order of --help
COMMANDS = {"topology": topology, "workload": workload, "demo": demo, "capture": capture,
            "trace": trace, "sim": sim, "label": label, "train": train, "layout": layout,
            "bench": bench, "pages": pages}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="recmg", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        module.add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(COMMANDS[args.command].run, args)


if __name__ == "__main__":
    sys.exit(main())
