"""Hostile inputs against recmg, as an attacker would send them.  For each input class
it prints how many inputs were tried and how each ended: handled (accepted, or
refused with a clear error), traceback (an unexpected exception), crash (the process
died of a signal: SIGSEGV, SIGBUS), hang (no answer within the time limit).  A table,
never a pass or fail.

    python bench/robustness.py [--n 300] [--baseline REV]

--baseline REV runs the same inputs against the code of a git revision as well (a
worktree in a temporary directory, given this build's native modules), for a before
and after table.  Inputs are seeded: the same --n gives the same inputs.

Classes: trace files (byte mutations of a valid file of each format), control
requests (random JSON, nesting, wrong types, random bytes) sent to a running recmgd,
config files (mutations of packaging/recmgd.toml) given to `recmgd --check-config`,
capture segments (random words written over a live segment's header, cursors and
descriptors, and truncations) read by recmgd's pipeline, and model cards (1-3 values
of a shipped page model's card replaced by hostile ones, or removed: the learning
loop's unprivileged trainer writes cards) loaded by the learned policies and run for
a step; a card refused with ModelError is handled, any other exception a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
HANG_S = 5

# --------------------------------------------------------------- runner (a child)
# Each class runs in a child process that resumes after a crash: it records the index
# it is on, so the parent counts the crash and starts it again at the next input.
RUNNER = r'''
import json, os, random, signal, sys, traceback
from pathlib import Path
kind, seed_dir, start, n, progress = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
inject = sys.argv[6] if len(sys.argv) > 6 else ""
counts = {"handled": 0, "traceback": 0, "hang": 0}
class Hang(BaseException): pass  # not an Exception: no handler under test can swallow it
def alarm(*_): raise Hang
signal.signal(signal.SIGALRM, alarm)

def mutate(data, rnd):
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        if not buf: break
        i = rnd.randrange(len(buf)); k = rnd.random()
        if k < 0.4: buf[i] ^= 1 << rnd.randrange(8)
        elif k < 0.8: buf[i:i + 8] = rnd.choice([0, 1, 255, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1, 2**40]).to_bytes(8, "little")
        elif k < 0.9: del buf[i:]
        else: j = min(len(buf), i + rnd.randint(1, 64)); buf[j:j] = buf[i:j]
    return bytes(buf)

if kind.startswith("trace:"):
    from recmg.trace import format as tf, readers
    fmt = kind[6:]
    reader = {"rtrace": tf.read, "pt-zip": readers.read_meta_pt, "pt-legacy": readers.read_meta_pt,
              "criteo": readers.read_criteo, "avazu": readers.read_avazu,
              "talkingdata": getattr(readers, "read_talkingdata", None),
              "recmg-text": readers.read_recmg_text}[fmt]
    if reader is None:  # a format this revision does not read
        print(json.dumps({"na": 1})); sys.exit(0)
    seed = (seed_dir / f"seed.{fmt}").read_bytes()
    path = seed_dir / f"fuzz.{fmt}"
    for i in range(start, n):
        Path(progress).write_text(str(i))
        path.write_bytes(mutate(seed, random.Random(i)))
        signal.alarm(5)
        try:
            try: reader(path)
            finally: signal.alarm(0)
            counts["handled"] += 1
        except tf.TraceError: counts["handled"] += 1
        except Hang: counts["hang"] += 1
        except BaseException: counts["traceback"] += 1
elif kind == "segment":
    import numpy as np
    from recmg.client import Client
    from recmg import config as cfgmod
    from recmg.service.pipeline import Pipeline
    cfg = cfgmod.parse('[migration]\nbackend = "simulated"\n')
    prof = cfgmod.load_profile("lru")
    if inject:  # a bug planted in the engine, to prove this class can report one
        import time
        from recmg.engine.step import Engine
        def bug(self, *a, **kw):
            if inject == "keyerror": raise KeyError("planted")
            if inject == "memoryerror": raise MemoryError("planted")
            time.sleep(30)
        Engine.step = bug
    for i in range(start, n):
        Path(progress).write_text(str(i))
        rnd = random.Random(i)
        c = Client(f"fz{i}", [("a", 5000, 64), ("b", 300, 16)], shm_dir=str(seed_dir), key_capacity=4096, batch_capacity=64)
        before = [t.copy() for t in c.tables.values()]
        pipe = Pipeline(cfg, prof, [0], [1])
        pipe.attach(Path(c.path))
        for _ in range(3):
            c.record([np.arange(rnd.randint(0, 50)), np.arange(rnd.randint(0, 20))])
        with open(c.path, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            if rnd.random() < 0.15:
                os.ftruncate(f.fileno(), rnd.choice([0, 100, 512, 4096, size // 2]))
            else:
                f.seek(56); batches_off = int.from_bytes(f.read(8), "little")
                aims = [8, 16, 24, 32, 40, 48, 56, 64, 128, 136, 192, 200, 256, 264, 320, 384,
                        512 + 72, 512 + 80, 512 + 88, 512 + 96, 640 + 72, 640 + 88]
                aims += [batches_off + 8 * j for j in range(12)]
                for _ in range(rnd.randint(1, 4)):
                    off = rnd.choice([rnd.choice(aims), rnd.choice(aims), rnd.randrange(0, size - 8, 8)])
                    f.seek(off); f.write(rnd.choice([0, 1, 2**32, 2**63 - 1, 2**64 - 1, 2**20, rnd.getrandbits(64)]).to_bytes(8, "little"))
        signal.alarm(5)
        try:
            try:
                for _ in range(2): pipe.tick()
            finally: signal.alarm(0)
            # the pipeline isolates every target error; one that was not a bad segment
            # or an exit is a bug it counted (revisions before the count: not seen)
            counts["traceback" if getattr(pipe, "internal_errors", 0) else "handled"] += 1
        except Hang: counts["hang"] += 1
        except BaseException: counts["traceback"] += 1
        counts.setdefault("tables_changed", 0)
        counts["tables_changed"] += any(not np.array_equal(a, b) for a, b in zip(before, c.tables.values()))
        pipe.close()
        try: os.unlink(c.path)
        except FileNotFoundError: pass
elif kind.startswith("card:"):
    import math
    import numpy as np
    from recmg.engine.models import card as cardmod
    what = kind[5:]
    name = {"caching": "caching-page-v1", "prefetch": "prefetch-page-v1"}[what]
    base = json.loads((seed_dir / f"{name}.card.json").read_text())
    hostile = ["x", "", 1e300, -1e300, 1e-300, -1, 0, 2**70, -(2**70), None, True, [], {},
               [1, 2, 3], [3, 2, 1], {"a": 1}, math.nan, math.inf, 0.5, 2**22, 2**40]
    def leaves(node, path=()):
        if isinstance(node, dict) and node:
            for k, v in node.items(): yield from leaves(v, path + (k,))
        elif isinstance(node, list) and node:
            for i, v in enumerate(node[:8]): yield from leaves(v, path + (i,))
        else:
            yield path
    paths = list(leaves(base))
    model = seed_dir / f"fuzz-{what}.onnx"
    model.write_bytes((seed_dir / f"{name}.onnx").read_bytes())
    keys = np.arange(5000, dtype=np.uint64) * np.uint64(7919) % np.uint64(3000)
    for i in range(start, n):
        Path(progress).write_text(str(i))
        rnd = random.Random(i)
        card = json.loads(json.dumps(base))
        for _ in range(rnd.randint(1, 3)):
            path = rnd.choice(paths)
            node = card
            try:
                for k in path[:-1]: node = node[k]
                if rnd.random() < 0.15 and isinstance(node, dict): node.pop(path[-1], None)
                else: node[path[-1]] = rnd.choice(hostile)
            except (KeyError, IndexError, TypeError):
                pass  # an earlier mutation changed the path's shape
        cardmod.card_path(model).write_text(json.dumps(card))
        signal.alarm(10)
        try:
            try:
                if what == "caching":
                    from recmg.engine.policy.learned import Learned
                    pol = Learned(1000, model=str(model))
                    pol.access(keys)
                else:
                    from recmg.engine.policy.learned_prefetch import LearnedPrefetcher
                    pf = LearnedPrefetcher([3000], budget=64, model=str(model), capacity=1000)
                    pf.observe(keys, keys[::3])
            finally: signal.alarm(0)
            counts["handled"] += 1
        except cardmod.ModelError: counts["handled"] += 1  # refused, naming the problem
        except Hang: counts["hang"] += 1
        except BaseException: counts["traceback"] += 1
print(json.dumps(counts))
'''


def run_class(kind: str, seed_dir: Path, n: int, env: dict, inject: str = "") -> dict:
    """Run one class to completion, restarting the runner after each crash."""
    total = {"handled": 0, "traceback": 0, "crash": 0, "hang": 0}
    start = 0
    progress = seed_dir / f"progress.{kind.replace(':', '_')}"
    while start < n:
        res = subprocess.run([PY, "-c", RUNNER, kind, str(seed_dir), str(start), str(n),
                              str(progress), inject], capture_output=True, text=True,
                             env=env, timeout=3600)
        if res.returncode == 0:
            counts = json.loads(res.stdout.strip().splitlines()[-1])
            if "na" in counts:
                return {"tried": 0}
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
            break
        if res.returncode < 0:  # died of a signal at the input it recorded
            at = int(progress.read_text())
            total["crash"] += 1
            start = at + 1
        else:
            raise RuntimeError(f"{kind} runner failed: {res.stderr[-2000:]}")
    # inputs handled before a crash are not reported by the crashed runner: what was
    # not a crash, traceback or hang was handled
    total["handled"] = n - total["crash"] - total["traceback"] - total["hang"]
    total["tried"] = n
    return total


# ---------------------------------------------------------------------- seed files
def write_seeds(d: Path) -> None:
    import torch

    from recmg.trace import format as tf

    t = tf.Trace(tables=[tf.TableInfo(0, "a", 100, 64), tf.TableInfo(1, "b", 50, 64)],
                 keys=np.concatenate([tf.make_keys(0, np.arange(5)),
                                      tf.make_keys(1, np.arange(3))]),
                 batch_offsets=np.array([0, 4, 8], np.uint64))
    tf.write(d / "seed.rtrace", t)
    for zipped, name in ((True, "pt-zip"), (False, "pt-legacy")):
        torch.save((torch.arange(6), torch.tensor([0, 1, 3, 5, 6]),
                    torch.tensor([[1, 2], [2, 1]], dtype=torch.int32)), d / f"seed.{name}",
                   _use_new_zipfile_serialization=zipped)
    cats = "\t".join(f"{i:08x}" for i in range(26))
    (d / "seed.criteo").write_text(f"0\t1\t\t3\t4\t5\t6\t7\t8\t9\t10\t11\t12\t13\t{cats}\n" * 3)
    (d / "seed.avazu").write_text("id,click,hour,C1,site_id\n1,0,14102100,1005,1fbe01fe\n"
                                  "2,1,14102100,1002,85f751fd\n")
    (d / "seed.talkingdata").write_text(
        "ip,app,device,os,channel,click_time,attributed_time,is_attributed\n"
        "87540,12,1,13,497,2017-11-07 09:30:38,,0\n105560,25,1,17,259,2017-11-07 13:40:27,,0\n")
    (d / "seed.recmg-text").write_text("720 8626720\n721 5721\n720 720\n")
    for name in ("caching-page-v1", "prefetch-page-v1"):  # the shipped models, cards mutated
        for suffix in (".onnx", ".card.json"):
            shutil.copy(ROOT / "policies" / f"{name}{suffix}", d / f"{name}{suffix}")


# --------------------------------------------------------------- control requests
def control_inputs(n: int) -> list[bytes]:
    rnd = random.Random(0)
    out = []
    for i in range(n):
        k = i % 5
        if k == 0:
            out.append(b"[" * rnd.randint(100, 3000) + b"\n")
        elif k == 1:
            bad = rnd.choice([[1], {"a": 1}, 3.5, None, True, "x" * 10])
            req = {"cmd": rnd.choice(["policy", "record", "status"]),
                   "action": rnd.choice(["show", "set", "start", "status", 7]),
                   rnd.choice(["name", "output", "batches", "segment"]): bad}
            out.append(json.dumps(req).encode() + b"\n")
        elif k == 2:
            out.append(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 200)))
                       .replace(b"\n", b" ") + b"\n")
        elif k == 3:
            out.append(json.dumps({"cmd": "status", "x": [[{}] * 3] * 3}).encode() + b"\n")
        else:
            out.append(b'{"cmd": "version"}\n')
    return out


def run_control(n: int, env: dict, work: Path) -> dict:
    res = {"tried": n, "handled": 0, "traceback": 0, "crash": 0, "hang": 0}
    sock = work / "ctl.sock"
    cfg = work / "ctl.toml"
    cfg.write_text(f'tick_ms = 100\n[migration]\nbackend = "simulated"\n'
                   f'[control]\nsocket = "{sock}"\nmax_requests_per_s = 1000.0\n')

    def start():
        p = subprocess.Popen([PY, "-m", "recmg.cli.recmgd", "-c", str(cfg)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        while not sock.exists() and p.poll() is None and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        return p

    d = start()
    for line in control_inputs(n):
        reply = b""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(HANG_S)
                s.connect(str(sock))
                s.sendall(line)
                reply = s.makefile("rb").readline()
        except (TimeoutError, socket.timeout):
            res["hang"] += 1
            d.kill()
            d.wait()
            d = start()
            continue
        except OSError:
            pass  # no socket or refused: the daemon is dead or dying
        try:
            json.loads(reply)
            res["handled"] += 1
            continue
        except ValueError:
            pass
        # no reply: a clean refusal closes the connection, a dying daemon too; wait
        # for its teardown (the worker's join) before deciding which
        try:
            d.wait(timeout=15)
        except subprocess.TimeoutExpired:
            res["handled"] += 1  # still serving: it closed this connection on purpose
            continue
        res["crash" if d.returncode < 0 else "traceback"] += 1
        d = start()
    d.send_signal(signal.SIGTERM)
    try:
        d.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        d.kill()
    return res


# ---------------------------------------------------------------------- configs
def run_configs(n: int, env: dict, work: Path) -> dict:
    res = {"tried": n, "handled": 0, "traceback": 0, "crash": 0, "hang": 0}
    base = (ROOT / "packaging/recmgd.toml").read_bytes()
    rnd = random.Random(0)
    values = [b"inf", b"nan", b"-1", b"1e308", b"18446744073709551616", b"\"\"", b"[[[[[[",
              b"\xff\xfe", b"[" * 2000, b"{}", b"0", b"true"]
    for _ in range(n):
        lines = base.split(b"\n")
        j = rnd.randrange(len(lines))
        if b"=" in lines[j] and rnd.random() < 0.8:
            lines[j] = lines[j].split(b"=")[0] + b"= " + rnd.choice(values)
        else:
            lines[j] = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 20)))
        f = work / "fuzz.toml"
        f.write_bytes(b"\n".join(lines))
        try:
            r = subprocess.run([PY, "-m", "recmg.cli.recmgd", "--check-config", str(f)],
                               capture_output=True, text=True, env=env, timeout=HANG_S * 4)
        except subprocess.TimeoutExpired:
            res["hang"] += 1
            continue
        if r.returncode < 0:
            res["crash"] += 1
        elif "Traceback" in r.stderr:
            res["traceback"] += 1
        else:
            res["handled"] += 1
    return res


# ------------------------------------------------------------------------ driver
CLASSES = ("trace", "segment", "control", "config", "card")


def campaign(n: int, env: dict, work: Path, classes=CLASSES, inject: str = "") -> dict:
    out = {}
    if "trace" in classes:
        for fmt in ("rtrace", "pt-zip", "pt-legacy", "criteo", "avazu", "talkingdata",
                    "recmg-text"):
            out[f"trace file: {fmt}"] = run_class(f"trace:{fmt}", work, n, env)
    if "segment" in classes:
        out["capture segment"] = run_class("segment", work, max(n // 3, 1), env, inject)
    if "control" in classes:
        out["control request"] = run_control(n, env, work)
    if "config" in classes:
        out["config file"] = run_configs(max(n // 5, 1), env, work)
    if "card" in classes:
        for what in ("caching", "prefetch"):
            out[f"model card: {what}"] = run_class(f"card:{what}", work, n, env)
    return out


def baseline_env(rev: str, tmp: Path) -> dict:
    """PYTHONPATH to the revision's daemon/ package, with its own native modules built
    in place (their C signatures change between revisions)."""
    tree = tmp / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                   check=True, capture_output=True)
    subprocess.run([PY, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree, check=True,
                   capture_output=True)  # (into daemon/recmg: the package's directory)
    return {**os.environ, "PYTHONPATH": str(tree / "daemon")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="inputs per class (fewer for "
                    "segments and configs, which are slower)")
    ap.add_argument("--baseline", help="git revision to compare with")
    ap.add_argument("--classes", default=",".join(CLASSES),
                    help=f"input classes to run (default: all of {', '.join(CLASSES)})")
    ap.add_argument("--inject", choices=("keyerror", "memoryerror", "sleep"), default="",
                    help="plant a bug in the engine's step (the segment class must then "
                    "report tracebacks or hangs: a check that the bench can fail)")
    a = ap.parse_args()
    classes = a.classes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seeds = tmp / "seeds"
        seeds.mkdir()
        write_seeds(seeds)
        runs = {"now": campaign(a.n, dict(os.environ), seeds, classes, a.inject)}
        if a.baseline:
            env = baseline_env(a.baseline, tmp)
            try:
                base_seeds = tmp / "base-seeds"
                shutil.copytree(seeds, base_seeds)
                runs[a.baseline[:10]] = campaign(a.n, env, base_seeds, classes, a.inject)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(tmp / "baseline")], capture_output=True)
    print("| input class | code | tried | handled | tracebacks | crashes | hangs |")
    print("|---|---|---|---|---|---|---|")
    for cls in runs["now"]:
        for name, run in runs.items():
            r = run[cls]
            if not r["tried"]:
                print(f"| {cls} | {name} | n/a (no such reader) | | | | |")
                continue
            print(f"| {cls} | {name} | {r['tried']} | {r['handled']} | {r['traceback']} | "
                  f"{r['crash']} | {r['hang']} |")
    seg = runs["now"].get("capture segment")
    if seg:
        print(f"\ntable contents changed by a hostile segment (now): "
              f"{seg.get('tables_changed', 0)}")


if __name__ == "__main__":
    main()
