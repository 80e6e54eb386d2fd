"""Running a command confined, as recmgd's learning loop runs its trainer: as another
user (the window it reads holds what an unprivileged client wrote), under chrt(1)
SCHED_IDLE, nice(1), ionice(1) idle class and prlimit(1) CPU and address-space caps,
each applied before the command starts, with a wall-clock timeout."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from recmg import config as cfgmod

MAX_LOG_TAIL = 2000  # characters of the command's output kept for a reason
TOOLS = ("chrt", "nice", "ionice", "prlimit")  # util-linux and coreutils


def trainer_command(lcfg: cfgmod.Learning, python_args: list[str]) -> list[str]:
    """The trainer's argv: chrt(1) SCHED_IDLE (it should run only on CPU time nothing
    else wants), nice(1), ionice(1) idle class, prlimit(1) CPU and address-space caps,
    then the command (each holds before it starts; the uid change comes first, in
    Popen, so every tool already runs as the user)."""
    tools = {t: shutil.which(t, path="/usr/bin:/bin:/usr/sbin:/sbin") for t in TOOLS}
    missing = [t for t, p in tools.items() if p is None]
    if missing:
        raise OSError(f"{', '.join(missing)} not found (util-linux, coreutils)")
    return [tools["chrt"], "--idle", "0", tools["nice"], "-n", str(lcfg.nice),
            tools["ionice"], "-c", "3",
            tools["prlimit"], f"--cpu={lcfg.cpu_s}", f"--as={lcfg.memory_mib << 20}", "--",
            *python_args]


def spawn(lcfg: cfgmod.Learning, argv: list[str], cwd: Path, out) -> subprocess.Popen:
    """Start a confined command as ``lcfg.user`` (as ourselves when not root)."""
    kw = {}
    if os.geteuid() == 0 and lcfg.user != "root":
        pw = pwd.getpwnam(lcfg.user)
        kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    # one thread (PyTorch, OpenMP, OpenBLAS, MKL): the trainer takes one CPU at most
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    return subprocess.Popen(trainer_command(lcfg, argv), cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True, close_fds=True, **kw)


def tail(path: Path) -> str:
    try:
        text = path.read_bytes()[-MAX_LOG_TAIL:].decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return text.splitlines()[-1] if text else ""


def run_confined(lcfg: cfgmod.Learning, argv: list[str], cwd: Path, timeout_s: float,
                 stop: threading.Event | None = None) -> tuple[int | None, str]:
    """Run ``argv`` confined in ``cwd``; (exit status or None on timeout, last line of
    its output)."""
    logf = cwd / "trainer.log"
    with open(logf, "wb") as out:
        p = spawn(lcfg, argv, cwd, out)
    deadline = time.monotonic() + timeout_s
    while p.poll() is None:
        if time.monotonic() > deadline or (stop is not None and stop.is_set()):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return None, tail(logf)
        time.sleep(0.05)
    return p.returncode, tail(logf)


def ids(user: str) -> tuple[int, int]:
    """The uid and gid the confined command runs as (ours when we are not root)."""
    if os.geteuid() != 0 or user == "root":
        return os.geteuid(), os.getegid()
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid
