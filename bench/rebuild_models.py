"""Remake every shipped model by the command its card records and compare bytes
(issue 22, item 3; docs/models.md, "Portable math").  Prints Markdown.

    python bench/rebuild_models.py [--models caching-page-v1,...] [--keep DIR]

For each policies/*.onnx whose card records a `recmg train` command writing to
policies/: run that command in its own process with ``-o`` pointing at a temporary
directory (or ``--keep DIR``), then compare the sha256 of the new ONNX file with the
shipped one's.  Also prints this machine's CPU and the card's training versions, so
a run on another machine (an AMD CPU, say) says what it checked.  Exit status 1 if
any model's bytes differ.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recmg.engine.models.card import sha256_file

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def command_of(card: dict, out: Path) -> list[str] | None:
    """The card's training command with its output directory replaced, or None if it
    is not a `recmg train` command writing to policies/."""
    argv = shlex.split((card.get("training") or {}).get("command", ""))
    if argv[:2] != ["recmg", "train"] or "-o" not in argv:
        return None
    i = argv.index("-o")
    if argv[i + 1] != "policies":
        return None
    argv[i + 1] = str(out)
    return [sys.executable, "-m", "recmg.cli.recmg"] + argv[1:] + ["--quiet"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", help="comma list of names (default: every shipped model)")
    ap.add_argument("--keep", help="write the remade models here instead of a temporary "
                    "directory")
    a = ap.parse_args()
    names = a.models.split(",") if a.models else sorted(
        p.name[:-len(".card.json")] for p in POLICIES.glob("*.card.json"))
    print(f"CPU: {cpu()}\n")
    print("| model | shipped sha256 | remade sha256 | same bytes | seconds | trained with |")
    print("|---|---|---|---|---:|---|")
    differ = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.keep) if a.keep else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            card = json.loads((POLICIES / f"{name}.card.json").read_text())
            argv = command_of(card, out)
            t = card.get("training") or {}
            made = f"torch {t.get('torch')}, numpy {t.get('numpy')}, {t.get('math', 'native')}"
            if argv is None:
                print(f"| {name} | | | no `recmg train -o policies` command on its card | | |")
                continue
            t0 = time.monotonic()
            res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
            took = time.monotonic() - t0
            if res.returncode != 0:
                differ += 1
                print(f"| {name} | | | training failed: {res.stderr.strip()[-200:]} | "
                      f"{took:.0f} | {made} |")
                continue
            old, new = sha256_file(POLICIES / f"{name}.onnx"), sha256_file(out / f"{name}.onnx")
            differ += old != new
            print(f"| {name} | {old[:12]} | {new[:12]} | {'yes' if old == new else 'NO'} | "
                  f"{took:.0f} | {made} |", flush=True)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
