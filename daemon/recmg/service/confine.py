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
    # a session of its own: no controlling terminal to inject input into (TIOCSTI)
    p = subprocess.Popen(trainer_command(lcfg, argv), cwd=cwd, env=env,
                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True, close_fds=True, **kw)
    lower_autogroup(p.pid, lcfg.nice)
    return p


def lower_autogroup(pid: int, nice: int) -> bool:
    """Give the autogroup ``pid`` leads the nice value ``nice``; False where the kernel
    keeps none (no CONFIG_SCHED_AUTOGROUP) or refuses.

    Why: setsid(2) puts the trainer in an autogroup of its own (sched(7), "The
    autogroup feature", Linux 2.6.38+, in effect with kernel.sched_autogroup_enabled
    = 1 while the cpu cgroup is the root one, as in a login session; a systemd
    service's cgroup has none).  CFS shares CPU time between autogroups first, so
    SCHED_IDLE and nice inside one do not stop it taking an equal share from recmgd's
    autogroup: with a trainer running, recmgd's threads waited 307 ms a second for a
    CPU against 28 without (bench/learning_tick_cost.py).  The group's nice applies
    between groups.  Root may set it at any time; others at most once a tenth of a
    second, hence one retry."""
    for _ in range(2):
        try:
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))
            return True
        except BlockingIOError:  # EAGAIN: the rate limit for the unprivileged
            time.sleep(0.11)
        except OSError:
            return False
    return False


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
