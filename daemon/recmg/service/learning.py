"""recmgd's learning loop: models retrained on each target's own traffic.

- **Window.** Each target whose profile serves a learned caching model keeps the newest
  ``window_accesses`` accesses it read, per tick (``Window``); all windows together
  stay under ``max_window_mib``.
- **Rounds.** When a window holds ``min_window_accesses`` (or is full) and
  ``interval_s`` has passed since the target's last round, the worker thread
  snapshots the window and queues a job; a separate thread (``recmgd-learning``, one
  job at a time) writes it to a job directory and starts ``python -m
  recmg.training.learn`` confined (recmg.service.confine: as ``user``, SCHED_IDLE,
  nice, its autogroup niced, the idle I/O class, CPU and address-space caps): the
  window holds what an unprivileged client wrote, so the trainer never runs with
  root's privileges, and it never runs in the tick.
- **Judging.** recmgd copies the candidate's files out of the trainer's directory
  into its store (recmg.service.modelstore) before checking them (card, sha256, page
  granularity: recmg.config's model check; onnxruntime's probe in a process of its
  own), then swaps it in, between ticks, keeping the cache, only if its replayed
  fetches on the window's later part are below ``(1 - margin)`` times both the
  serving models' and S3-FIFO's.  Where S3-FIFO's fetches were below the serving
  models' instead, the learned cache's S3-FIFO fallback decides from then on
  (``Learned.fall_back``; its fetch judge hands the decisions back once the model wins
  again).  A window that is corrupt, a trainer that crashes,
  runs out of memory or time, or a candidate that fails a check changes nothing: the
  round is logged once with its reason and the target keeps its model.
- **Store.** ``state_dir/models/<uid>-<name>/<id>/`` holds each judged candidate's
  files and ``validation.json``; ``serving.json`` names the serving model and the
  ones before it (``recmgctl models rollback`` goes back one).  At most
  ``keep_models`` candidates stay per target, the serving and previous ones always.
  Models are keyed by the client's uid and segment name, so one user's traffic never
  trains another user's model.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from recmg import config as cfgmod
from recmg.safefile import read_regular
from recmg.service.confine import ids, run_confined
from recmg.service.modelstore import ModelStore, card_suffix, check, nofollow
from recmg.trace import format as tf

log = logging.getLogger("recmgd")

KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_ROUND_KEYS = 4096  # clients whose round state is remembered (they choose names)
# a round's directory: what recmgd hands the trainer and what it reads back
WINDOW, JOB, RESULT = "window.rtrace", "job.json", "result.json"
TRAINER = "recmg.training.learn"  # python -m TRAINER ROUND_DIR


def wins(fetches: dict, margin: float) -> bool:
    """The rule: a candidate serves only with fewer than (1 - margin) x the held-out
    fetches of both the serving models and S3-FIFO."""
    return fetches["candidate"] < (1 - margin) * min(fetches["serving"], fetches["s3fifo"])


def falls_back(fetches: dict, margin: float) -> bool:
    """The other rule: where the candidate does not win but S3-FIFO had fewer than
    (1 - margin) x the serving models' fetches, S3-FIFO decides (the round's replay is
    more evidence than one window of the cache's fetch judge)."""
    return not wins(fetches, margin) and fetches["s3fifo"] < (1 - margin) * fetches["serving"]


def job_spec(cfg: cfgmod.Config, profile: cfgmod.Profile, serving: dict,
             seed: int = 0) -> dict:
    """job.json: the config and profile the target runs, the serving models' copies,
    the training settings (``cfg.learning``'s)."""
    lc = cfg.learning
    return {"config": asdict(cfg), "profile": asdict(profile), "serving": serving,
            "train": {"validate_frac": lc.validate_frac, "epochs": lc.epochs, "seed": seed}}


def learns(profile: cfgmod.Profile) -> bool:
    """Whether a profile serves a model the loop can retrain (the learned caching
    policy; with it, the learned prefetcher's model too)."""
    return profile.caching == "learned"


def model_key(uid: int, name: str) -> str | None:
    """The store's key for a client's models: its uid and segment name (None when the
    name could not be a directory name)."""
    return f"{uid}-{name}" if KEY_RE.fullmatch(name) else None


class Window:
    """The newest accesses a target read, a tick at a time: (keys, batch offsets, batch
    ids, timestamps, tick).  Holds at most ``limit`` keys (a tick larger than that
    alone is not kept); ``full`` once it has dropped its oldest to stay within it (it
    then holds as many as the ticks' sizes let it, which may be fewer than ``limit``)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.parts: deque = deque()
        self.keys = 0
        self.full = False

    def add(self, batch, tick: int) -> None:
        n = len(batch.keys)
        if not batch.n_batches or n > self.limit:
            return
        self.parts.append((batch.keys, batch.batch_offsets, batch.batch_ids,
                           batch.timestamps_ns, tick))
        self.keys += n
        while self.keys > self.limit:
            self.keys -= len(self.parts.popleft()[0])
            self.full = True

    def trace(self, tables: list[tf.TableInfo], meta: dict) -> tf.Trace:
        """The window as a trace, ticks kept in meta["tick_starts"]."""
        parts = list(self.parts)
        keys = np.concatenate([p[0] for p in parts]).astype(np.uint64, copy=False)
        sizes = [len(p[2]) for p in parts]
        base = np.cumsum([0] + [len(p[0]) for p in parts[:-1]], dtype=np.uint64)
        offs = np.concatenate([np.zeros(1, np.uint64)] + [
            p[1][1:].astype(np.uint64) + b for p, b in zip(parts, base)])
        starts = np.cumsum([0] + sizes[:-1])
        return tf.Trace(tables=tables, keys=keys, batch_offsets=offs,
                        batch_ids=np.concatenate([p[2] for p in parts]).astype(np.uint64),
                        timestamps_ns=np.concatenate([p[3] for p in parts]).astype(np.uint64),
                        meta={**meta, "tick_starts": [int(s) for s in starts]})


class Learner:
    """The loop's state and its thread.  ``tick`` runs in recmgd's worker (under the
    pipeline lock) and is cheap: it feeds nothing (the pipeline does), queues due
    rounds and swaps in what finished."""

    def __init__(self, cfg: cfgmod.Config):
        self.cfg = cfg
        self.store = ModelStore(Path(cfg.learning.state_dir), cfg.learning.keep_models)
        self.unavailable: str | None = None  # why the loop cannot run on this host
        self.checked = False  # the trainer's preflight ran
        self.rounds: dict[str, dict] = {}  # key -> its rounds' state (bounded by keys)
        self.jobs: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.cfg.learning.enabled

    def reconfigure(self, cfg: cfgmod.Config) -> None:
        if cfg.learning != self.cfg.learning:
            self.checked, self.unavailable = False, None  # checked again
        self.cfg = cfg
        self.store = ModelStore(Path(cfg.learning.state_dir), cfg.learning.keep_models)

    # ----------------------------------------------------------- worker side
    def tick(self, targets: dict) -> None:
        """Queue due rounds; swap finished winners into their targets; refresh each
        target's ``learning`` status."""
        while True:
            try:
                key, outcome = self.results.get_nowait()
            except queue.Empty:
                break
            self._finished(key, outcome, targets)
        if self.enabled and self.thread is None:
            self.thread = threading.Thread(target=self._run, name="recmgd-learning",
                                           daemon=True)
            self.thread.start()
        lc = self.cfg.learning
        if len(self.rounds) > MAX_ROUND_KEYS:  # forget clients that are gone
            attached = {t.learn_key for t in targets.values()}
            for k in [k for k, r in self.rounds.items() if k not in attached and not r["busy"]]:
                del self.rounds[k]
        # what the windows may grow to, not what they hold yet: together they stay under
        # max_window_mib however full they get
        held = sum(t.window.limit for t in targets.values() if t.window is not None)
        now = time.monotonic()
        for t in targets.values():
            why = self._why_not(t)
            if why:
                t.window = None
                t.learning = {"state": "off" if not self.enabled else "unavailable",
                              "why": why, "serving": self._serving_id(t)}
                continue
            if t.window is None:
                if (held + lc.window_accesses) * 8 > lc.max_window_mib << 20:
                    t.learning = {"state": "waiting", "serving": self._serving_id(t),
                                  "why": f"the windows of other targets hold "
                                  f"learning.max_window_mib ({lc.max_window_mib})"}
                    continue
                t.window = Window(lc.window_accesses)
                held += lc.window_accesses
            r = self.rounds.setdefault(t.learn_key, {"rounds": 0, "busy": False,
                                                      "last_end": None, "last": None})
            due = r["last_end"] is None or now - r["last_end"] >= lc.interval_s
            # a full window is as large as it gets: with min_window_accesses at (or
            # near) window_accesses, ticks that do not tile the limit never reach it
            if not r["busy"] and due and self.checked and (
                    t.window.keys >= lc.min_window_accesses or t.window.full):
                r["busy"] = True
                self.jobs.put((t.learn_key, self._job(t)))
            state = "training" if r["busy"] else "recording"
            t.learning = {
                "state": state if self.checked else "checking", "serving": self._serving_id(t),
                "window_accesses": t.window.keys, "rounds": r["rounds"], "last_round": r["last"],
                "next_round_s": None if r["busy"] or r["last_end"] is None else
                round(max(0.0, lc.interval_s - (now - r["last_end"])), 1)}

    def _why_not(self, t) -> str | None:
        if not self.enabled:
            return "learning.enabled is false"
        if self.checked and self.unavailable:
            return self.unavailable
        if not learns(t.profile):
            return f"profile {t.profile.name!r} serves no learned caching model"
        if t.learn_key is None:
            return "the segment's name cannot key a model store"
        return None

    def _serving_id(self, t) -> str:
        return (t.models or {}).get("id") or "profile"

    def _job(self, t) -> dict:
        """What the thread needs, snapshotted now (the window goes on filling)."""
        trace = t.window.trace([r.info for r in t.reader.tables],
                               {"source": "recmgd learning", "segment": t.name})
        served = t.served(t.profile)
        return {"trace": trace, "cfg": self.cfg, "profile": t.profile, "served": served,
                "name": t.name}

    def _finished(self, key: str, outcome: dict, targets: dict) -> None:
        r = self.rounds.setdefault(key, {"rounds": 0, "busy": False, "last_end": None,
                                         "last": None})
        r.update(busy=False, last_end=time.monotonic(), rounds=r["rounds"] + 1,
                 last=outcome["status"])
        for t in targets.values():
            if t.learn_key != key:
                continue
            if outcome.get("models") is not None:
                t.use_models(outcome["models"], self.cfg)
            elif outcome.get("fall_back"):
                t.fall_back(outcome["fall_back"])

    def _stored(self, key: str) -> dict | None:
        """The serving models the store names for ``key`` (None: the profile's)."""
        found = self.store.serving(key)
        return {"id": found[0], **found[1]} if found else None

    def rolled_back(self, key: str, targets: dict) -> dict | None:
        """After ``rollback``: the targets of ``key`` serve what the store names."""
        models = self._stored(key)
        for t in targets.values():
            if t.learn_key == key:
                t.use_models(models, self.cfg)
        return models

    def serving_models(self, key: str | None) -> dict | None:
        """A newly attached target's stored serving models (None: the profile's)."""
        if key is None or not self.enabled:
            return None
        try:
            return self._stored(key)
        except (OSError, ValueError) as e:
            log.warning("learned models of %s cannot be read (%s): the profile's serve", key, e)
            return None

    # ----------------------------------------------------------- thread side
    def _run(self) -> None:
        while not self.stop.is_set():
            if not self.checked:  # at start, and after a reload changed [learning]
                self._preflight()
            try:
                key, job = self.jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                outcome = self._round(key, job)
            except Exception as e:  # never the daemon's end: the round failed
                log.exception("learning round for %s failed", job["name"])
                outcome = {"status": {"verdict": "failed", "reason": f"{type(e).__name__}: {e}"}}
            outcome["status"]["at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            _count(outcome["status"]["verdict"])
            self.results.put((key, outcome))

    def _preflight(self) -> None:
        """Can the trainer run here: the tools, the user, the train extra."""
        lc = self.cfg.learning
        self.unavailable = None
        try:
            root = self._job_root()
            for stale in root.glob("round-*"):  # left by a recmgd that was killed
                shutil.rmtree(stale, ignore_errors=True)
            d = Path(_mkdtemp(root))
            try:
                code, last = run_confined(
                    lc, [sys.executable, "-c", f"import torch, onnx, {TRAINER}"], d, 300,
                    self.stop)
            finally:
                shutil.rmtree(d, ignore_errors=True)
            if code != 0:
                hint = (" (install the train extra: pip install 'recmg[train]')"
                        if "No module named" in last else
                        f" (set learning.user to a user that can run {sys.executable}, or "
                        "install recmg where this one can)" if "ermission denied" in last
                        else f" (check learning.memory_mib, {lc.memory_mib}, and cpu_s)")
                self.unavailable = (f"the trainer cannot start as user {lc.user!r}: "
                                    f"{last or f'exit status {code}'}{hint}")
        except (OSError, KeyError, subprocess.SubprocessError) as e:
            self.unavailable = f"the trainer cannot start as user {lc.user!r}: {e}"
        if self.unavailable:
            log.warning("learning is unavailable: %s", self.unavailable)
        self.checked = True

    def _job_root(self) -> Path:
        root = Path(self.cfg.learning.state_dir) / "jobs"
        root.mkdir(parents=True, exist_ok=True, mode=0o711)
        os.chmod(root.parent, 0o711)  # the trainer passes through, lists nothing
        os.chmod(root, 0o711)
        return root

    def _round(self, key: str, job: dict) -> dict:
        lc = job["cfg"].learning
        d = Path(_mkdtemp(self._job_root()))
        try:
            return self._round_in(key, job, lc, d)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def _round_in(self, key: str, job: dict, lc: cfgmod.Learning, d: Path) -> dict:
        # the job directory is root's (0711): the trainer reads what it is given and
        # writes only into out/, which is its own
        uid, gid = ids(lc.user)
        served, serving = job["served"], {}
        for role, attr in (("caching", "model"), ("prefetch", "prefetch_model")):
            src = getattr(served, attr)
            if src:
                serving[role] = f"serving-{role}.onnx"
                for a, b in ((src, d / serving[role]),
                             (_card(src), d / f"serving-{role}{card_suffix()}")):
                    shutil.copyfile(a, b)
                    os.chown(b, uid, gid)
        tf.write(d / WINDOW, job["trace"])
        spec = job_spec(job["cfg"], replace(job["profile"], model="", prefetch_model=""),
                        serving)
        (d / JOB).write_text(json.dumps(spec))
        for f in (WINDOW, JOB):
            os.chown(d / f, uid, gid)
            os.chmod(d / f, 0o400)
        (d / "out").mkdir(mode=0o700)
        os.chown(d / "out", uid, gid)
        t0 = time.monotonic()
        code, last = run_confined(lc, [sys.executable, "-m", TRAINER, str(d)],
                                  d, lc.timeout_s, self.stop)
        wall = round(time.monotonic() - t0, 1)
        if code != 0:
            why = (f"timed out after {lc.timeout_s:g} s" if code is None else
                   f"killed by {signal.Signals(-code).name}" if code < 0 else
                   f"exit status {code}")
            return self._failed(job, f"the trainer failed ({why}): {last}", wall)
        try:
            result = _result(read_regular(nofollow(d / "out" / RESULT), 1 << 20,
                                          "round result"))
        except (OSError, ValueError) as e:
            return self._failed(job, f"its result is unusable: {e}", wall)
        f = result["fetches"]
        accepted, fall_back = wins(f, lc.margin), falls_back(f, lc.margin)
        result["wall_s"] = wall
        try:
            mid = self.store.add(key, d / "out", result, accepted,
                                 lambda paths: check(paths, job["profile"], lc))
        except (OSError, ValueError) as e:  # ModelError is a ValueError
            return self._failed(job, f"the candidate failed its checks: {e}", wall)
        verdict = "accepted" if accepted else "rejected"
        status = {"verdict": verdict, "model": mid, "fetches": f, "wall_s": wall,
                  "reason": (f"{f['candidate']} fetches against {f['serving']} (serving) and "
                             f"{f['s3fifo']} (S3-FIFO) over {result['accesses']['validate']} "
                             "held-out accesses")}
        log.info("learning round for %s: candidate %s %s: %s", job["name"], mid, verdict,
                 status["reason"])
        models = {"id": mid, **self.store.files(key, mid)} if accepted else None
        status["fall_back"] = fall_back
        return {"status": status, "models": models, "fall_back": (
            f"the learning round replayed {f['serving']} held-out fetches for it against "
            f"S3-FIFO's {f['s3fifo']}") if fall_back else None}

    def _failed(self, job: dict, reason: str, wall: float) -> dict:
        log.warning("learning round for %s failed, the serving model stays: %s",
                    job["name"], reason)
        return {"status": {"verdict": "failed", "reason": reason, "wall_s": wall}}

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)


def _mkdtemp(root: Path) -> str:
    d = tempfile.mkdtemp(prefix="round-", dir=root)
    os.chmod(d, 0o711)
    return d


def _card(onnx: str) -> str:
    from recmg.engine.models.card import card_path

    return str(card_path(onnx))


def _result(data: bytes) -> dict:
    """result.json, checked: what recmgd decides on must be counts."""
    r = json.loads(data)
    f = r.get("fetches") if isinstance(r, dict) else None
    if not isinstance(f, dict) or not all(
            isinstance(f.get(k), int) and f[k] >= 0 for k in ("candidate", "serving", "s3fifo")):
        raise ValueError("fetches must be counts of candidate, serving and s3fifo")
    if r.get("caching") != "caching.onnx" or r.get("prefetch") not in (None, "prefetch.onnx"):
        raise ValueError("unexpected model file names")
    a = r.get("accesses")
    if not isinstance(a, dict) or not isinstance(a.get("validate"), int):
        raise ValueError("accesses must count the held-out part (accesses.validate)")
    return r


def _count(verdict: str) -> None:
    from recmg.service import metrics as m

    m.LEARNING_ROUNDS.labels(result=verdict).inc()
