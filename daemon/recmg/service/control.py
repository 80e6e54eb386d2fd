"""The control socket: newline-delimited JSON over a unix stream socket.

Request:  {"cmd": "status"} or {"cmd": "policy", "action": "set", "name": "lru"} ...
Reply:    {"ok": true, "result": ...}  or  {"ok": false, "error": "...", "code": "EPERM"}

Authorization by SO_PEERCRED: read commands for root and members of the configured
read group; commands that change anything for root only.  Each connection is limited
to ``max_request_bytes`` per line and ``max_requests_per_s`` (token bucket); a
violation gets an error reply and the connection is closed.

Anyone who can reach the socket is untrusted, and nothing they send may stop or stall
the loop that also feeds the watchdog:
- JSON nesting is limited (``MAX_DEPTH``) before it is parsed, and each command's
  arguments are checked against ``ARGS`` (names and types) before it runs;
- at most ``max_connections`` at once, a quarter of them per uid, with
  ``ROOT_RESERVED`` more for root alone (more are answered EBUSY and closed, so idle
  connections cannot exhaust the file-descriptor limit, and a read_group member
  holding its connections open locks out neither root nor other members), and a
  connection idle for ``idle_timeout_s`` is closed;
- replies are written without blocking: a reader that does not read gets no further
  requests served and is closed when ``MAX_PENDING_BYTES`` of replies pile up;
- a handler that fails with anything but ControlError answers EIO and is logged.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import re
import selectors
import socket
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

READ_COMMANDS = {"status", "stats", "metrics", "check", "version", "policy:list", "policy:show",
                 "record:status", "models"}
CHANGE_COMMANDS = {"reload", "pause", "resume", "policy:set", "record:start", "models:rollback"}
# arguments each command takes besides "cmd" and "action": name -> (type, required)
ARGS: dict[str, dict[str, tuple[type, bool]]] = {
    "policy:show": {"name": (str, False)},
    "policy:set": {"name": (str, True)},
    "record:start": {"output": (str, True), "batches": (int, False),
                     "segment": (str, False)},
    "models:rollback": {"segment": (str, False)},
}
MAX_DEPTH = 8  # requests are flat objects; nesting beyond this is refused unparsed
MAX_PENDING_BYTES = 16 << 20  # replies a client has not read yet
ROOT_RESERVED = 4  # connections only root may open beyond max_connections
log = logging.getLogger("recmgd")


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
    if action is not None and not isinstance(action, str):
        raise ControlError("EINVAL", "'action' must be a string")
    return f"{cmd}:{action}" if action is not None else cmd


def check_args(key: str, req: dict) -> None:
    """Every argument known to the command and of its type; required ones present."""
    spec = ARGS.get(key, {})
    for name, value in req.items():
        if name in ("cmd", "action"):
            continue
        if name not in spec:
            raise ControlError("EINVAL", f"'{key.replace(':', ' ')}' takes no argument "
                               f"{name!r}" + (f" (takes: {', '.join(spec)})" if spec else ""))
        typ = spec[name][0]
        if not isinstance(value, typ) or isinstance(value, bool):
            raise ControlError("EINVAL", f"argument {name!r} must be a {typ.__name__}")
    for name, (_, required) in spec.items():
        if required and name not in req:
            raise ControlError("EINVAL", f"'{key.replace(':', ' ')}' needs {name!r}")


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def nesting_depth(line: bytes) -> int:
    """Deepest [ or { nesting of a JSON text, brackets inside strings ignored; counted
    without parsing (vectorized), so a hostile line cannot exhaust the parser's
    recursion or the loop's time."""
    a = np.frombuffer(_JSON_STRING.sub(b"", line), np.uint8)
    if not len(a):
        return 0
    step = np.isin(a, (0x5B, 0x7B)).astype(np.int64) - np.isin(a, (0x5D, 0x7D))
    return int(np.cumsum(step).max(initial=0))


class _Conn:
    def __init__(self, sock: socket.socket, creds, rate: float):
        self.sock, self.creds = sock, creds
        self.buf = b""
        self.out = bytearray()  # replies not yet written
        self.closing = False  # close once ``out`` is written
        self.tokens, self.rate, self.last = rate, rate, time.monotonic()
        self.active = time.monotonic()

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
                 max_request_bytes: int = 65536, max_requests_per_s: float = 50.0,
                 max_connections: int = 64, idle_timeout_s: float = 60.0):
        self.path, self.handler = path, handler
        self.max_bytes, self.rate = max_request_bytes, max_requests_per_s
        self.max_conns, self.idle_s = max_connections, idle_timeout_s
        self.per_uid = max(1, max_connections // 4)
        self.conns: dict[int, _Conn] = {}
        self.read_gid = grp.getgrnam(read_group).gr_gid if read_group else None
        d = os.path.dirname(path)
        os.makedirs(d, mode=0o755, exist_ok=True)  # searchable: read_group reaches the socket
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
        # bound and listening under a temporary name, then renamed into place: the
        # socket appears only when it accepts (a client that finds the path never gets
        # ECONNREFUSED from a daemon still starting)
        tmp = path + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)  # a start that died between bind and rename
        old = os.umask(0o117)
        try:
            self.sock.bind(tmp)
        finally:
            os.umask(old)
        if self.read_gid is not None:
            os.chown(tmp, 0, self.read_gid)
        self.sock.listen(16)
        os.rename(tmp, path)
        self.sock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)

    def poll(self, timeout: float) -> None:
        for key, events in self.sel.select(timeout):
            if key.data is None:
                self._accept()
                continue
            c = key.data
            if events & selectors.EVENT_WRITE:
                self._flush(c)
            if events & selectors.EVENT_READ and c.sock.fileno() >= 0:
                self._read(c)
        now = time.monotonic()
        for c in [c for c in self.conns.values() if now - c.active > self.idle_s]:
            self._close(c)

    def _accept(self) -> None:
        try:
            s, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:  # EMFILE/ENFILE: the cap below should keep us short of it
            log.warning("control socket: cannot accept: %s", e)
            return
        creds = peer_credentials(s)
        mine = sum(1 for c in self.conns.values() if c.creds[1] == creds[1])
        if creds[1] == 0:  # root has slots of its own: no user can lock it out
            full = len(self.conns) >= self.max_conns + ROOT_RESERVED
        else:  # and no one user can take every slot from the others
            full = len(self.conns) >= self.max_conns or mine >= self.per_uid
        if full:
            try:
                s.send(b'{"ok": false, "code": "EBUSY", "error": "too many connections"}\n',
                       socket.MSG_DONTWAIT)
            except OSError:
                pass
            s.close()
            return
        s.setblocking(False)
        c = _Conn(s, creds, self.rate)
        self.conns[s.fileno()] = c
        self.sel.register(s, selectors.EVENT_READ, c)

    def _close(self, c: _Conn) -> None:
        if self.conns.pop(c.sock.fileno(), None) is not None:
            self.sel.unregister(c.sock)
            c.sock.close()

    def _send(self, c: _Conn, obj: dict, close: bool = False) -> None:
        """Queue a reply and write what the socket takes now, never blocking."""
        c.out += (json.dumps(obj, default=str) + "\n").encode()
        c.closing |= close
        if len(c.out) > MAX_PENDING_BYTES:
            self._close(c)  # a client that does not read its replies
            return
        self._flush(c)

    def _flush(self, c: _Conn) -> None:
        try:
            while c.out:
                n = c.sock.send(c.out, socket.MSG_DONTWAIT)
                del c.out[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(c)
            return
        if not c.out and c.closing:
            self._close(c)
            return
        # wait for writability while replies are pending; read no more requests then
        want = selectors.EVENT_WRITE if c.out else selectors.EVENT_READ
        if self.sel.get_key(c.sock).events != want:
            self.sel.modify(c.sock, want, c)
            if not c.out:
                self._process(c)  # requests that arrived while replies were pending

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
        c.active = time.monotonic()
        c.buf += chunk
        self._process(c)

    def _process(self, c: _Conn) -> None:
        """Serve the complete request lines buffered, while replies go out at once."""
        while b"\n" in c.buf and not c.out and c.sock.fileno() >= 0:
            line, c.buf = c.buf.split(b"\n", 1)
            if len(line) > self.max_bytes:
                self._send(c, {"ok": False, "code": "E2BIG",
                               "error": f"request larger than {self.max_bytes} bytes"}, True)
                return
            if not c.allow():
                self._send(c, {"ok": False, "code": "EAGAIN",
                               "error": f"more than {self.rate:g} requests per second"}, True)
                return
            self._send(c, self._handle(line, c.creds))
        if len(c.buf) > self.max_bytes and c.sock.fileno() >= 0:
            self._send(c, {"ok": False, "code": "E2BIG",
                           "error": f"request larger than {self.max_bytes} bytes"}, True)

    def _handle(self, line: bytes, creds) -> dict:
        try:
            if nesting_depth(line) > MAX_DEPTH:
                raise ControlError("EINVAL", f"request nested deeper than {MAX_DEPTH}")
            try:
                req = json.loads(line)
            except (ValueError, RecursionError) as e:
                raise ControlError("EINVAL", f"not JSON: {e}") from None
            if not isinstance(req, dict):
                raise ControlError("EINVAL", "request must be a JSON object")
            key = command_key(req)
            self.authorize(key, creds)
            check_args(key, req)
            return {"ok": True, "result": self.handler(key, req, creds)}
        except ControlError as e:
            return {"ok": False, "code": e.code, "error": str(e)}
        except Exception as e:  # a bug in a handler: answer and log, keep serving
            log.exception("control command failed")
            return {"ok": False, "code": "EIO", "error": f"internal error: {e}"}

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
        for c in list(self.conns.values()):
            self._close(c)
        self.sel.close()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def request(path: str, req: dict, timeout: float = 10.0) -> dict:
    """Client side: send one request, return the reply object.  A reply that is not
    a JSON object with a boolean "ok" raises ValueError."""
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
    try:
        reply = json.loads(buf)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"malformed reply from recmgd: {e}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool) or \
            (reply["ok"] and "result" not in reply):
        raise ValueError(f"malformed reply from recmgd: {buf[:200]!r}")
    return reply
