"""recmgd: the recmg tiering daemon (service entry point).

The tick pipeline (capture -> policy -> planner -> migrator) and the service
lifecycle are not built yet; until then recmgd reports that plainly and exits 69
(EX_UNAVAILABLE), which the systemd unit lists in RestartPreventExitStatus.
"""

from __future__ import annotations

import argparse
import sys

from recmg import __version__
from recmg.cli.output import EX_UNAVAILABLE, fail


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recmgd", description="recmg tiering daemon")
    p.add_argument("--version", action="version", version=f"recmgd {__version__}")
    p.parse_args(argv)
    return fail("the daemon pipeline is not available in this version; "
                "`recmgctl check` and `recmg pages` work", EX_UNAVAILABLE)


if __name__ == "__main__":
    sys.exit(main())
