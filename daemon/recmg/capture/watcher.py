"""Process exec/exit events, so recmgd attaches and detaches without polling.

``ProcessWatcher`` listens on the kernel's proc connector (NETLINK_CONNECTOR,
CN_IDX_PROC; needs CAP_NET_ADMIN in the initial network namespace).  Messages are
decoded by pyroute2's ProcEventMarshal; the socket is a plain datagram socket of our
own, because pyroute2 0.9's socket object buffers datagrams internally, so select()
on its descriptor misses the exec and exit events that follow a fork (seen with
pyroute2 0.9.7).  Where netlink is not permitted (containers, no privilege) the
watcher falls back to polling the pid list with psutil and says so in ``mode``.

``poll(timeout)`` returns events as (kind, pid) tuples, kind "exec" or "exit".
Only thread-group leaders are reported (a thread exiting is not a process exit).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time

import psutil

NETLINK_CONNECTOR = 11
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2
NLMSG_DONE = 3


def _control(action: int) -> bytes:
    """nlmsghdr + cn_msg + u32 op (include/uapi/linux/cn_proc.h)."""
    cn = struct.pack("<IIIIHHI", CN_IDX_PROC, CN_VAL_PROC, 0, 0, 4, 0, action)
    return struct.pack("<IHHII", 16 + len(cn), NLMSG_DONE, 0, 0, os.getpid()) + cn


class ProcessWatcher:
    def __init__(self, prefer_netlink: bool = True, poll_interval_s: float = 0.5):
        self.mode = "psutil"
        self.overruns = 0  # netlink buffer overruns: events were lost, rescan targets
        self._sock = None
        self._interval = poll_interval_s
        if prefer_netlink:
            try:
                from pyroute2.netlink.connector.cn_proc import ProcEventMarshal

                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                     NETLINK_CONNECTOR)
                try:
                    sock.bind((0, CN_IDX_PROC))
                    sock.send(_control(PROC_CN_MCAST_LISTEN))
                except OSError:
                    sock.close()
                    raise
                self._sock, self._marshal, self.mode = sock, ProcEventMarshal(), "netlink"
            except (OSError, ImportError) as e:
                self.fallback_reason = str(e)
        self._known = set(psutil.pids())
        self._last_poll = time.monotonic()

    def fileno(self) -> int | None:
        return self._sock.fileno() if self._sock else None

    def poll(self, timeout: float = 0.0) -> list[tuple[str, int]]:
        if self._sock is not None:
            return self._poll_netlink(timeout)
        return self._poll_psutil(timeout)

    def _poll_netlink(self, timeout: float) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._sock], [], [], left if not out else 0)
            if not ready:
                return out
            try:
                data = self._sock.recv(1 << 16)
            except OSError:  # ENOBUFS: the kernel dropped events; the caller rescans
                self.overruns += 1
                data = b""
            for msg in self._marshal.parse(data):
                event = msg.get("event")
                pid, tgid = msg.get("process_pid"), msg.get("process_tgid")
                if event == "PROC_EVENT_EXEC":
                    out.append(("exec", tgid))
                elif event == "PROC_EVENT_EXIT" and pid == tgid:
                    out.append(("exit", tgid))

    def _poll_psutil(self, timeout: float) -> list[tuple[str, int]]:
        wait = self._last_poll + self._interval - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout))
            if wait > timeout:
                return []
        self._last_poll = time.monotonic()
        now = set(psutil.pids())
        events = [("exit", p) for p in sorted(self._known - now)]
        events += [("exec", p) for p in sorted(now - self._known)]
        self._known = now
        return events

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.send(_control(PROC_CN_MCAST_IGNORE))
            except OSError:
                pass
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
