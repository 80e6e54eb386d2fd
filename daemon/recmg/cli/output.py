"""Shared helpers for the command-line tools: units, tables, JSON, exit codes."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

# sysexits(3) codes, as os.EX_* (documented in docs/architecture.md).
EX_OK = os.EX_OK
EX_USAGE = os.EX_USAGE
EX_DATAERR = os.EX_DATAERR
EX_UNAVAILABLE = os.EX_UNAVAILABLE
EX_SOFTWARE = os.EX_SOFTWARE
EX_OSERR = os.EX_OSERR
EX_NOPERM = os.EX_NOPERM
EX_CONFIG = os.EX_CONFIG
EX_TEMPFAIL = os.EX_TEMPFAIL
EX_PROTOCOL = os.EX_PROTOCOL


def human_bytes(n: int | float) -> str:
    """1536 -> '1.5 KiB' (binary units, one decimal)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def table(rows: list[list[str]], indent: str = "  ") -> str:
    """Left-aligned columns; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in rows)


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def fail(message: str, code: int) -> int:
    """Print 'prog: message' to stderr and return code (for `return fail(...)`)."""
    print(f"{os.path.basename(sys.argv[0])}: {message}", file=sys.stderr)
    return code


class Parser(argparse.ArgumentParser):
    """argparse with sysexits: a usage error exits 64 (EX_USAGE), not argparse's 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


DAEMON_MODULES = ("psutil", "prometheus_client", "pyroute2", "onnxruntime")


def require_daemon_extra() -> None:
    """Exit 69 with the install command when the `daemon` extra is missing: the base
    install (`pip install recmg`) carries only what recmg.client needs."""
    missing = [m for m in DAEMON_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(fail(f"missing {', '.join(missing)}: this command needs the daemon "
                              "extra: pip install 'recmg[daemon]'", EX_UNAVAILABLE))


def exit_code(exc: BaseException) -> int | None:
    """The one mapping from an error to a sysexits(3) code, for recmg, recmgd and
    recmgctl; None for an exception that is a bug (the caller lets it show)."""
    from recmg import native
    from recmg.capture.reader import SegmentError
    from recmg.trace.format import TraceError

    if isinstance(getattr(exc, "code", None), int) and not isinstance(exc, OSError):
        return exc.code  # StartupError and the like carry their own
    if isinstance(exc, TraceError):  # before ValueError: it is one
        return EX_DATAERR
    if type(exc).__name__ == "ConfigError":  # recmg.config, not imported here
        return EX_CONFIG
    if isinstance(exc, PermissionError):
        return EX_NOPERM
    if isinstance(exc, (SegmentError, ProcessLookupError, native.NativeNodeError,
                        MemoryError)):
        return EX_UNAVAILABLE
    if isinstance(exc, ValueError):
        return EX_USAGE
    if isinstance(exc, OSError):
        return EX_OSERR
    return None


def error_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def guarded(fn, *args) -> int:
    """Run a command; an error with a sysexits code is printed and returned as it."""
    try:
        return fn(*args)
    except Exception as e:
        code = exit_code(e)
        if code is None:
            raise
        return fail(error_text(e), code)
