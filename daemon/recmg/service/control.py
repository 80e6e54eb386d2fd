"""The control socket: newline-delimited JSON over a unix stream socket.

Request:  {"cmd": "status"} or {"cmd": "policy", "action": "set", "name": "lru"} ...
Reply:    {"ok": true, "result": ...}  or  {"ok": false, "error": "...", "code": "EPERM"}

Authorization by SO_PEERCRED: read commands for root and members of the configured
read group; commands that change anything for root only.  Each connection is limited
to ``max_request_bytes`` per line and ``max_requests_per_s`` (token bucket); a
violation gets an error reply and the connection is closed.
"""

from __future__ import annotations

import grp
import json
import os
import selectors
import socket
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path

READ_COMMANDS = {"status", "stats", "metrics", "check", "version", "policy:list", "policy:show",
                 "record:status"}
CHANGE_COMMANDS = {"reload", "pause", "resume", "policy:set", "record:start"}


class ControlError(Exception):
    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer (SO_PEERCRED, socket(7))."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", data)


def peer_groups(pid: int, gid: int) -> set[int]:
    groups = {gid}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                groups.update(int(g) for g in line.split()[1:])
    except OSError:
        pass
    return groups


def command_key(req: dict) -> str:
    cmd = req.get("cmd")
    if not isinstance(cmd, str):
        raise ControlError("EINVAL", "request needs a string 'cmd'")
    action = req.get("action")
    return f"{cmd}:{action}" if isinstance(action, str) else cmd


class _Conn:
    def __init__(self, sock: socket.socket, creds, rate: float):
        self.sock, self.creds = sock, creds
        self.buf = b""
        self.tokens, self.rate, self.last = rate, rate, time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ControlServer:
    """Serve requests with ``handler(key, request, creds) -> result`` (may raise
    ControlError).  Runs inside the caller's loop: ``poll(timeout)``."""

    def __init__(self, path: str, handler: Callable, read_group: str = "",
                 max_request_bytes: int = 65536, max_requests_per_s: float = 50.0):
        self.path, self.handler = path, handler
        self.max_bytes, self.rate = max_request_bytes, max_requests_per_s
        self.read_gid = grp.getgrnam(read_group).gr_gid if read_group else None
        d = os.path.dirname(path)
        os.makedirs(d, mode=0o750, exist_ok=True)
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise OSError(f"{path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                probe.close()
                raise OSError(f"{path}: another recmgd is listening")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)  # stale socket of a dead daemon
            finally:
                probe.close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o117)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        if self.read_gid is not None:
            os.chown(path, 0, self.read_gid)
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)

    def poll(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            if key.data is None:
                self._accept()
            else:
                self._read(key.data)

    def _accept(self) -> None:
        try:
            s, _ = self.sock.accept()
        except BlockingIOError:
            return
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, _Conn(s, peer_credentials(s), self.rate))

    def _close(self, c: _Conn) -> None:
        self.sel.unregister(c.sock)
        c.sock.close()

    def _send(self, c: _Conn, obj: dict) -> bool:
        data = (json.dumps(obj, default=str) + "\n").encode()
        try:
            c.sock.setblocking(True)
            c.sock.settimeout(2.0)
            c.sock.sendall(data)
            c.sock.setblocking(False)
            return True
        except OSError:
            return False

    def _read(self, c: _Conn) -> None:
        try:
            chunk = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(c)
            return
        c.buf += chunk
        while b"\n" in c.buf:
            line, c.buf = c.buf.split(b"\n", 1)
            if len(line) > self.max_bytes:
                self._send(c, {"ok": False, "code": "E2BIG",
                               "error": f"request larger than {self.max_bytes} bytes"})
                self._close(c)
                return
            if not c.allow():
                self._send(c, {"ok": False, "code": "EAGAIN",
                               "error": f"more than {self.rate:g} requests per second"})
                self._close(c)
                return
            if not self._send(c, self._handle(line, c.creds)):
                self._close(c)
                return
        if len(c.buf) > self.max_bytes:
            self._send(c, {"ok": False, "code": "E2BIG",
                           "error": f"request larger than {self.max_bytes} bytes"})
            self._close(c)

    def _handle(self, line: bytes, creds) -> dict:
        try:
            try:
                req = json.loads(line)
            except ValueError as e:
                raise ControlError("EINVAL", f"not JSON: {e}") from None
            if not isinstance(req, dict):
                raise ControlError("EINVAL", "request must be a JSON object")
            key = command_key(req)
            self.authorize(key, creds)
            return {"ok": True, "result": self.handler(key, req, creds)}
        except ControlError as e:
            return {"ok": False, "code": e.code, "error": str(e)}

    def authorize(self, key: str, creds) -> None:
        pid, uid, gid = creds
        if key in CHANGE_COMMANDS:
            if uid != 0:
                raise ControlError("EPERM", f"'{key.replace(':', ' ')}' changes recmgd: root only")
        elif key in READ_COMMANDS:
            if uid != 0 and (self.read_gid is None or self.read_gid not in peer_groups(pid, gid)):
                raise ControlError("EPERM", "read commands need root or the configured "
                                   "control.read_group")
        else:
            raise ControlError("EINVAL", f"unknown command {key.replace(':', ' ')!r}")

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            if key.data is not None:
                key.data.sock.close()
        self.sel.close()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def request(path: str, req: dict, timeout: float = 10.0) -> dict:
    """Client side: send one request, return the reply object."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    if not buf:
        raise ConnectionError("recmgd closed the connection without a reply")
    return json.loads(buf)
