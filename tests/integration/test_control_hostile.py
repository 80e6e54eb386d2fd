"""The control socket against hostile peers: deep nesting, wrong argument types, idle
and non-reading connections, handler bugs, random bytes.  The server is the real
ControlServer on a real unix socket, polled by a thread as recmgd's main loop does."""

import json
import os
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recmg.cli import recmgctl
from recmg.service import control

EXAMPLES = int(os.environ.get("RECMG_FUZZ_EXAMPLES", "150"))


class Served:
    """A ControlServer polled in a thread; ``calls`` records handled requests."""

    def __init__(self, path, **kw):
        self.calls = []
        self.server = control.ControlServer(str(path), self.handle, **kw)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def handle(self, key, req, creds):
        self.calls.append(key)
        if key == "policy:show" and req.get("name") == "boom":
            raise RuntimeError("a bug in a handler")
        if key == "metrics":
            return "x" * 200_000  # a large reply
        return {"key": key}

    def loop(self):
        while not self.stop.is_set():
            self.server.poll(0.02)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.server.close()


@pytest.fixture
def served(tmp_path):
    s = Served(tmp_path / "ctl.sock", max_connections=8, idle_timeout_s=1.0)
    yield s, tmp_path / "ctl.sock"
    s.close()


def ask(path, payload: bytes, timeout=5.0):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(payload)
        return json.loads(s.makefile().readline())


def test_deep_nesting_and_wrong_types_are_refused_and_the_server_lives(served):
    srv, path = served
    r = ask(path, b"[" * 2000 + b"\n")
    assert r["code"] == "EINVAL" and "nested deeper" in r["error"]
    r = ask(path, b'{"cmd": "policy", "action": "show", "name": [1, 2]}\n')
    assert r["code"] == "EINVAL" and "'name' must be a str" in r["error"]
    r = ask(path, b'{"cmd": "record", "action": "start", "output": "/x", "batches": "9"}\n')
    assert r["code"] == "EINVAL" and "'batches' must be a int" in r["error"]
    r = ask(path, b'{"cmd": "status", "extra": 1}\n')
    assert r["code"] == "EINVAL" and "takes no argument 'extra'" in r["error"]
    r = ask(path, b'{"cmd": "policy", "action": 7}\n')
    assert r["code"] == "EINVAL"
    assert ask(path, b'{"cmd": "version"}\n') == {"ok": True, "result": {"key": "version"}}


def test_a_handler_bug_answers_eio_and_serving_goes_on(served):
    srv, path = served
    r = ask(path, b'{"cmd": "policy", "action": "show", "name": "boom"}\n')
    assert r["code"] == "EIO" and "a bug in a handler" in r["error"]
    assert ask(path, b'{"cmd": "version"}\n')["ok"]


def test_idle_connections_are_capped_and_timed_out(served):
    srv, path = served
    idle = []
    for _ in range(8 + control.ROOT_RESERVED):  # root: its reserved slots too
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(path))
        idle.append(s)
    time.sleep(0.2)
    extra = socket.socket(socket.AF_UNIX)
    extra.connect(str(path))
    extra.settimeout(5)
    assert json.loads(extra.makefile().readline())["code"] == "EBUSY"
    extra.close()
    assert len(srv.server.conns) == 8 + control.ROOT_RESERVED
    time.sleep(1.5)  # idle_timeout_s = 1: all closed by the server
    assert len(srv.server.conns) == 0
    for s in idle:
        s.settimeout(5)
        assert s.recv(1) == b""
        s.close()
    assert ask(path, b'{"cmd": "version"}\n')["ok"]


def test_a_client_that_never_reads_does_not_stall_the_loop(served):
    srv, path = served
    hog = socket.socket(socket.AF_UNIX)
    hog.connect(str(path))
    hog.sendall(b'{"cmd": "metrics"}\n' * 40)  # 8 MB of replies it never reads
    time.sleep(0.3)
    t0 = time.monotonic()
    assert ask(path, b'{"cmd": "version"}\n', timeout=2)["ok"]
    assert time.monotonic() - t0 < 1.0
    hog.close()


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=st.one_of(st.binary(max_size=300),
                      st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                                   lambda c: st.lists(c, max_size=4)
                                   | st.dictionaries(st.text(max_size=6), c, max_size=4),
                                   max_leaves=20).map(lambda v: json.dumps(v).encode()),
                      st.fixed_dictionaries({"cmd": st.sampled_from(["status", "policy",
                                                                     "record", "version"])},
                                            optional={"action": st.sampled_from(
                                                ["show", "set", "start", "list", 3]),
                                                "name": st.integers() | st.text(max_size=4),
                                                "output": st.integers() | st.text(max_size=4),
                                                "batches": st.integers() | st.text(max_size=3)}
                                            ).map(lambda v: json.dumps(v).encode())))
def test_fuzz_control_requests_always_get_a_reply(served, line):
    srv, path = served
    line = line.replace(b"\n", b" ") + b"\n"
    r = ask(path, line)
    assert isinstance(r, dict) and isinstance(r["ok"], bool)
    assert r["ok"] or r["code"] in ("EINVAL", "EPERM", "EIO", "E2BIG")


def test_recmgctl_reports_a_malformed_reply_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "fake.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(4)
    replies = [b"not json\n", b"[1]\n", b'{"ok": true}\n', b'{"ok": "yes"}\n']

    def fake():
        for reply in replies:
            c, _ = srv.accept()
            c.recv(65536)
            c.sendall(reply)
            c.close()

    t = threading.Thread(target=fake, daemon=True)
    t.start()
    for _ in replies:
        assert recmgctl.main(["--socket", str(path), "status"]) == 76
        err = capsys.readouterr().err
        assert "malformed reply" in err and "Traceback" not in err
    t.join(5)
    srv.close()


def test_one_user_holding_connections_locks_out_neither_root_nor_other_users(
        served, monkeypatch):
    """A read_group member opened 64 idle connections and root could not connect."""
    srv, path = served
    real = control.peer_credentials
    uid = {"next": 1000}
    monkeypatch.setattr(control, "peer_credentials",
                        lambda s: (real(s)[0], uid["next"], real(s)[2]))
    held = []
    for _ in range(8):  # user 1000 tries to take every slot
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(path))
        held.append(s)
    time.sleep(0.3)
    assert sum(c.creds[1] == 1000 for c in srv.server.conns.values()) == srv.server.per_uid
    uid["next"] = 1001
    # another user is served (here: refused as no member of the read group, not EBUSY)
    assert ask(path, b'{"cmd": "version"}\n')["code"] == "EPERM"
    uid["next"] = 0
    assert ask(path, b'{"cmd": "version"}\n')["ok"]  # and root
    for s in held:
        s.close()
