"""recmgd: the recmg tiering daemon (run by systemd: packaging/systemd/recmgd.service).

Exit codes (sysexits): 0 clean stop, 64 usage, 69 unavailable (no slow tier for real
migration, or a conflict with safety.on_conflict = "refuse"), 70 internal error,
73 cannot create the control socket, 78 configuration error.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys

# SIGHUP's default action terminates.  Until recmgd installs its reload handler, a
# SIGHUP (an early `systemctl reload`, a `kill -HUP`) is ignored: the configuration
# being read is the newest anyway.  Set at import, before anything slow.
signal.signal(signal.SIGHUP, signal.SIG_IGN)

from recmg import __version__  # noqa: E402 (after the SIGHUP guard)
from recmg.cli.output import (EX_CONFIG, EX_OK, Parser, guarded,  # noqa: E402
                              require_daemon_extra)
from recmg import config as cfgmod  # noqa: E402


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        try:
            from systemd.journal import JournalHandler

            root.addHandler(JournalHandler(SYSLOG_IDENTIFIER="recmgd"))
            return
        except ImportError:
            pass
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(asctime)s recmgd %(levelname)s %(message)s"))
    root.addHandler(h)


def check_config(path: str | None) -> int:
    """--check-config: the file, its profile, and what it names on this host."""
    from recmg.capture import segment as seg
    from recmg.host import topology

    try:
        cfg = cfgmod.load(path)
        cfgmod.load_profile(cfg.policy.profile)
        topo = topology.probe()
        problems = cfgmod.check_host(cfg, [n.id for n in topo.nodes])
        if problems:
            raise cfgmod.ConfigError(path or cfgmod.DEFAULT_PATH, problems)
    except cfgmod.ConfigError as e:
        for key, msg in e.problems:
            print(f"{e.source}: {msg}" if key == e.source else f"{e.source}: {key}: {msg}",
                  file=sys.stderr)
        return EX_CONFIG
    where = path or cfgmod.DEFAULT_PATH
    if not path and not os.path.exists(where):
        where = f"no {where}: the built-in defaults"
    print(f"{where}: ok (profile {cfg.policy.profile}, backend {cfg.migration.backend})")
    print(f"checked: syntax, keys, types and ranges; profile {cfg.policy.profile!r}; on this "
          f"host: NUMA nodes {[n.id for n in topo.nodes]}, shm_dir {cfg.shm_dir or seg.default_dir()}"
          + (f", group {cfg.control.read_group!r}" if cfg.control.read_group else "")
          + (f", port {cfg.metrics.http_port} free" if cfg.metrics.http_port else ""))
    return EX_OK


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="recmgd", description="recmg tiering daemon")
    p.add_argument("--version", action="version", version=f"recmgd {__version__}")
    p.add_argument("-c", "--config", help=f"config file (default {cfgmod.DEFAULT_PATH}; "
                   "built-in defaults when that file is absent)")
    p.add_argument("--check-config", nargs="?", const="", metavar="PATH",
                   help="validate the config (and its policy profile), print problems, "
                   "exit 0 or 78")
    p.add_argument("--socket", metavar="PATH", help="control socket (overrides the "
                   "config's control.socket)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    args = p.parse_args(argv)
    require_daemon_extra()
    if args.check_config is not None:
        return check_config(args.check_config or args.config)
    setup_logging(args.log_level)
    # a crash in native code (the shim, the cache core, numpy, onnxruntime) prints every
    # thread's Python stack to stderr, the journal under the unit, before the process dies
    faulthandler.enable()
    return guarded(run, args)


def run(args) -> int:
    """Load the config and serve until stopped (errors: output.exit_code)."""
    from recmg.service.daemon import Daemon

    cfg = cfgmod.load(args.config)
    if args.socket:
        cfg = cfgmod.with_socket(cfg, args.socket)
    daemon = Daemon(cfg, args.config)
    daemon.socket_override = args.socket
    return daemon.serve()


if __name__ == "__main__":
    sys.exit(main())
