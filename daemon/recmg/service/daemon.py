"""recmgd's lifecycle: two threads, signals, sd_notify, reload, shutdown.

- The main thread serves the control socket, handles signals and talks to systemd.
  sd_notify goes through systemd-python: READY=1 after the first tick;
  RELOADING=1 with MONOTONIC_USEC during a reload; STOPPING=1; and STATUS= lines.
- WATCHDOG=1 is sent only while the worker makes progress: a tick finished within the
  last half watchdog interval (WATCHDOG_USEC).
- The worker thread runs the pipeline once per ``tick_ms`` while holding the pipeline
  lock. The main thread takes the same lock for status, pause and reload, so a reload
  swaps between ticks.
- SIGHUP and ``recmgctl reload`` share one path, ``reload()``. It validates
  everything, then swaps. Any error keeps the old config and policy and is reported.
- SIGTERM or SIGINT: the worker finishes the current batch of moves (bounded by the
  tick deadline), then every target is detached cleanly, and recmgd exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil

from recmg import __version__, registry
from recmg.capture import segment as seg
from recmg.capture.reader import remove_stale
from recmg.capture.record import ticked_trace
from recmg.capture.watcher import ProcessWatcher
from recmg import config as cfgmod
from recmg.service import metrics as m
from recmg.service.control import ControlError, ControlServer
from recmg.service.learning import Learner
from recmg.service.pipeline import MSG_RELOAD, Pipeline, journal_fields
from recmg.service.status import Status
from recmg.host import topology
from recmg.trace import format as tf

log = logging.getLogger("recmgd")
MAX_RECORD_KEYS = 1 << 25  # keys all recordings in progress may hold (256 MiB)


class StartupError(Exception):
    def __init__(self, code: int, message: str):
        self.code = code
        super().__init__(message)


def notify(state: str) -> None:
    """sd_notify(3); a no-op outside systemd (no NOTIFY_SOCKET)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    from systemd import daemon as sd

    sd.notify(state)


def resolve_backend(cfg: cfgmod.Config, topo: topology.Topology) -> cfgmod.Config:
    """``backend = "auto"`` made concrete: move_pages where the host (or [tiers]) has a
    slow tier, else simulated."""
    if cfg.migration.backend != "auto":
        return cfg
    has_slow = bool(cfg.tiers.slow_nodes or topo.slow_nodes)
    return replace(cfg, migration=replace(cfg.migration,
                                          backend="move_pages" if has_slow else "simulated"))


def resolve_tiers(cfg: cfgmod.Config, topo: topology.Topology) -> tuple[list[int], list[int], str]:
    """(fast, slow, how).  The simulated and dryrun backends on a host without a slow
    tier model one: a virtual node numbered after the last real one."""
    fast = list(cfg.tiers.fast_nodes) or topo.fast_nodes or [0]
    slow = list(cfg.tiers.slow_nodes) or topo.slow_nodes
    if slow:
        return fast, slow, "configured" if cfg.tiers.slow_nodes else topo.tier_basis
    if registry.moves_pages(cfg.migration.backend):
        raise StartupError(os.EX_UNAVAILABLE, "no slow memory tier on this host: set "
                           "[migration] backend = \"simulated\" (or \"dryrun\"), or configure "
                           "[tiers] slow_nodes; `recmgctl check` explains")
    virtual = max([n.id for n in topo.nodes] + fast) + 1
    return fast, [virtual], f"simulated slow node {virtual}"


# settings a reload cannot change: the tiers and the socket are fixed at start, the
# migration backend owns the placement it started with, the HTTP port is bound once
RESTART_ONLY = ("tiers", "control", "metrics.http_port", "migration.backend", "shm_dir")


def keep_restart_only(old: cfgmod.Config, new: cfgmod.Config
                      ) -> tuple[cfgmod.Config, list[str]]:
    """``new`` with the running values of the restart-only keys, and which of them
    the new file changed (a reload says so instead of pretending to apply them)."""
    def get(cfg, path):
        for part in path.split("."):
            cfg = getattr(cfg, part)
        return cfg
    changed = [k for k in RESTART_ONLY if get(old, k) != get(new, k)]
    kept = replace(new, tiers=old.tiers, control=old.control, shm_dir=old.shm_dir,
                   metrics=replace(new.metrics, http_port=old.metrics.http_port),
                   migration=replace(new.migration, backend=old.migration.backend))
    return kept, changed


class Daemon:
    def __init__(self, cfg: cfgmod.Config, config_path: str | None, *,
                 sys_root: str = "/sys", proc_root: str = "/proc",
                 policy_dirs: list[Path] | None = None):
        self.config_path = config_path
        self.sys_root, self.proc_root = sys_root, proc_root
        self.policy_dirs = policy_dirs
        self.profile = cfgmod.load_profile(cfg.policy.profile, policy_dirs)
        self.topo = topology.probe(sys_root, proc_root)
        problems = cfgmod.check_host(cfg, [n.id for n in self.topo.nodes])
        if problems:
            raise cfgmod.ConfigError(config_path or cfgmod.DEFAULT_PATH, problems)
        self.auto_backend = cfg.migration.backend == "auto"
        self.socket_override: str | None = None  # recmgd --socket: kept across reloads
        cfg = self.cfg = resolve_backend(cfg, self.topo)
        conflicts = [f for f in self.topo.findings() if f.level == "conflict"]
        for f in conflicts:
            log.warning("conflict: %s (fix: %s)", f.what, f.fix)
        if conflicts and cfg.safety.on_conflict == "refuse" and \
                registry.moves_pages(cfg.migration.backend):
            raise StartupError(os.EX_UNAVAILABLE, "refusing to start: " + "; ".join(
                f.what for f in conflicts) + " (safety.on_conflict = \"refuse\")")
        self.fast, self.slow, self.tier_basis = resolve_tiers(cfg, self.topo)
        self.pipeline = Pipeline(cfg, self.profile, self.fast, self.slow, proc_root, sys_root)
        self.learner = Learner(cfg)  # [learning]: models retrained on each target's traffic
        self.pipeline.models_for = self.learner.serving_models
        if not registry.moves_pages(cfg.migration.backend):
            log.warning("migration backend is %r%s: placement is MODELLED, NO PAGES MOVE "
                        "(slow nodes %s)", cfg.migration.backend,
                        " (auto: this host has no slow memory tier)" if self.auto_backend
                        else "", self.slow)
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.last_progress = time.monotonic()
        self.started = time.monotonic()
        self.first_tick = threading.Event()
        self.worker_error: BaseException | None = None
        self.watcher = ProcessWatcher(poll_interval_s=cfg.tick_ms / 1000)
        self.recordings: dict[str, dict] = {}
        self.server: ControlServer | None = None
        self.snapshot: Status = self.pipeline.status()

    # -------------------------------------------------------------- target matching
    def _wanted(self, filename: str, pid: int) -> bool:
        t = self.cfg.target
        if pid in t.pids or any(seg.matches(s, filename) for s in t.segments):
            return True
        if t.exe:
            try:
                return psutil.Process(pid).name() in t.exe
            except psutil.Error:
                return False
        return False

    def _drop_unselected(self) -> None:
        """After a reload, detach targets the new [target] settings no longer select
        (a narrower allowed_uids, segments, pids or exe list)."""
        allowed = set(self.cfg.target.allowed_uids)
        for name, t in list(self.pipeline.targets.items()):
            if allowed and t.reader.uid not in allowed:
                self.pipeline.detach(name, f"uid {t.reader.uid} is no longer in "
                                     "target.allowed_uids")
            elif not self._wanted(name, t.pid):
                self.pipeline.detach(name, "no longer selected by [target]")

    def discover(self) -> None:
        """Attach wanted segments; remove stale ones (their process is gone) and forget
        rejections whose file is gone."""
        shm_dir = self.cfg.shm_dir or seg.default_dir()
        stale = remove_stale(shm_dir, self.proc_root)
        for path, err in stale:
            if path.name in self.pipeline.targets:
                # the file outlived its process and the exit event is not here yet:
                # the target goes with its file, in this tick
                self.pipeline.detach(path.name, "process exited")
            if err is None:
                log.info("removed stale segment %s: its process no longer exists", path)
            else:
                self.pipeline.reject(path.name, f"stale (process gone), cannot remove: {err}")
        try:
            entries = set(os.listdir(shm_dir))
        except OSError:
            entries = set()
        self.pipeline.forget(entries)
        for fn in sorted(entries - {path.name for path, _ in stale}):
            parsed = seg.parse_segment_name(fn)
            if parsed and fn not in self.pipeline.targets and self._wanted(fn, parsed[1]) \
                    and self.pipeline.may_attach(fn):
                self.pipeline.attach(Path(shm_dir) / fn)

    # ------------------------------------------------------------------- the worker
    def _worker(self) -> None:
        period = self.cfg.tick_ms / 1000
        next_tick = time.monotonic()
        try:
            while not self.stop_event.is_set():
                events = self.watcher.poll(0)
                with self.lock:
                    for kind, pid in events:
                        if kind == "exit":
                            for name, t in list(self.pipeline.targets.items()):
                                if t.pid == pid:
                                    self.pipeline.detach(name, "process exited")
                    self.discover()
                    self.pipeline.tick(progress=self._progress)
                    self.learner.tick(self.pipeline.targets)
                    self._record_step()
                    self.snapshot = self.pipeline.status()  # served without the lock
                    self._update_gauges()
                self.last_progress = time.monotonic()
                self.first_tick.set()
                if self.cfg.metrics.textfile:
                    try:
                        m.write_textfile(self.cfg.metrics.textfile)
                    except OSError as e:
                        log.warning("cannot write metrics textfile %s: %s",
                                    self.cfg.metrics.textfile, e)
                period = self.cfg.tick_ms / 1000
                next_tick = max(next_tick + period, time.monotonic())
                self.stop_event.wait(max(0.0, next_tick - time.monotonic()))
        except BaseException as e:  # a bug: report and stop (systemd restarts us)
            log.exception("worker failed")
            self.worker_error = e
            self.stop_event.set()
            self.first_tick.set()

    def _progress(self) -> None:
        """The worker finished a target: it is alive (the watchdog is fed on it, so a
        tick of many targets does not starve it)."""
        self.last_progress = time.monotonic()

    def _update_gauges(self) -> None:
        m.HIT_RATIO.set(self.snapshot.totals.hit_ratio)
        m.PAUSED.set(1 if self.pipeline.paused else 0)

    # --------------------------------------------------------------- recording
    def _record_step(self) -> None:
        """Finish recordings that have their batches.  The pipeline appends each
        target's batches to ``target.recorder`` as it reads them (the ring has one
        consumer, so a recording cannot read it itself).  All recordings together hold
        at most MAX_RECORD_KEYS keys in memory: past it, the largest is written with
        what it has (so memory is bounded by that and one tick's reads)."""
        held = {n: sum(len(b[0]) for b in r["batches"]) for n, r in self.recordings.items()
                if not r["done"]}
        for name, rec in list(self.recordings.items()):
            if rec["done"]:
                continue
            t = self.pipeline.targets.get(name)
            full = sum(held.values()) >= MAX_RECORD_KEYS and held[name] == max(held.values())
            if t is None or t.pid != rec["pid"]:  # detached: write what it has
                self._finish_recording(name, rec, f"target detached after "
                                       f"{len(rec['batches'])} of {rec['want']} batches; ")
            elif len(rec["batches"]) >= rec["want"] or full:
                self._finish_recording(name, rec, (
                    f"stopped at {held[name]} keys (recmgd holds at most {MAX_RECORD_KEYS} "
                    "keys of recordings); ") if full and len(rec["batches"]) < rec["want"]
                    else "")
                t.record_into(None)
            if rec["done"]:
                held.pop(name, None)

    def _finish_recording(self, name: str, rec: dict, note: str = "") -> None:
        parts = rec["batches"][: rec["want"]]
        ticks = {p[3] for p in parts}
        trace = ticked_trace(parts, rec["tables"], {
            "source": "recmgd", "segment": name, "pid": rec["pid"],
            "layout": rec.get("layout"),
            # perf counts of the target in each recorded tick (recmg.capture.perf)
            "perf_per_tick": [p for p in rec.get("perf", []) if p["tick"] in ticks]})
        try:
            tf.write(rec["output"], trace)  # recmg.safefile: follows no planted symlink
            rec["result"] = f"{note}wrote {len(parts)} batches to {rec['output']}"
        except Exception as e:  # whatever the path or the disk does, recmgd goes on
            rec["result"] = f"failed: {e}"
            log.warning("recording of %s to %s failed: %s", name, rec["output"], e)
        rec["done"], rec["written"] = True, len(parts)
        rec["batches"], rec["perf"] = [], []  # the file has them now

    # ------------------------------------------------------------------- commands
    def reload(self, new_profile: str | None = None) -> dict:
        """The one reload path (SIGHUP, `recmgctl reload`, `policy set`)."""
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            cfg = cfgmod.load(self.config_path) if self.config_path or new_profile is None \
                else self.cfg
            if new_profile is not None:
                cfg = cfgmod.with_profile(cfg, new_profile)
            if self.socket_override:
                cfg = cfgmod.with_socket(cfg, self.socket_override)
            cfg = resolve_backend(cfg, self.topo)
            problems = cfgmod.check_host(cfg, [n.id for n in self.topo.nodes])
            if problems:
                raise cfgmod.ConfigError(self.config_path or "config", problems)
            profile = cfgmod.load_profile(cfg.policy.profile, self.policy_dirs)
            cfg, not_applied = keep_restart_only(self.cfg, cfg)
            with self.lock:
                self.pipeline.reconfigure(cfg, profile)
                self.learner.reconfigure(cfg)
                self.cfg, self.profile = cfg, profile
                self._drop_unselected()
                self.pipeline.quarantine.clear()  # a new config may now accept them
                self.snapshot = self.pipeline.status()
        except (cfgmod.ConfigError, ValueError) as e:
            m.RELOADS.labels(result="failed").inc()
            log.error("reload failed, keeping the running config: %s", e,
                      extra=journal_fields(MSG_RELOAD))
            notify(f"READY=1\nSTATUS=reload failed: {e}")
            raise ControlError("EINVAL", f"reload failed, old config kept: {e}") from None
        m.RELOADS.labels(result="ok").inc()
        log.info("reloaded: profile %s (%s + %s)", profile.name, profile.caching,
                 profile.prefetcher, extra=journal_fields(MSG_RELOAD))
        if not_applied:
            log.warning("reload: %s changed but apply only at restart (the running values "
                        "stay)", ", ".join(not_applied))
        notify(f"READY=1\nSTATUS=profile {profile.name}")
        return {"profile": profile.name, "caching": profile.caching,
                "prefetcher": profile.prefetcher, "not_applied": not_applied}

    def handle(self, key: str, req: dict, creds) -> object:
        if key == "version":
            return {"version": __version__}
        if key in ("status", "stats"):
            # the worker's end-of-tick snapshot: status never waits for a tick
            st = self.snapshot.with_daemon(
                paused=self.pipeline.paused, uptime_s=round(time.monotonic() - self.started, 1),
                version=__version__, tier_basis=self.tier_basis, backend_auto=self.auto_backend,
                config=self.config_path or "(built-in defaults)").to_dict()
            if key == "stats":
                st["metrics"] = m.exposition()
            return st
        if key == "metrics":
            return m.exposition()
        if key == "check":
            return topology.probe(self.sys_root, self.proc_root).to_dict()
        if key == "policy:list":
            out = []
            for name, path in sorted(cfgmod.list_profiles(self.policy_dirs).items()):
                try:
                    p = cfgmod.load_profile(name, self.policy_dirs)
                    out.append({"name": name, "path": str(path), "description": p.description,
                                "active": name == self.profile.name})
                except cfgmod.ConfigError as e:
                    out.append({"name": name, "path": str(path), "error": str(e)})
            return out
        if key == "policy:show":
            name = req.get("name") or self.profile.name
            try:
                return cfgmod.load_profile(name, self.policy_dirs).__dict__
            except cfgmod.ConfigError as e:
                raise ControlError("ENOENT", str(e)) from None
        if key == "policy:set":
            name = req.get("name")
            if not isinstance(name, str):
                raise ControlError("EINVAL", "policy set needs a profile name")
            return self.reload(new_profile=name)
        if key == "reload":
            return self.reload()
        if key in ("pause", "resume"):
            with self.lock:
                self.pipeline.paused = key == "pause"
            m.PAUSED.set(1 if key == "pause" else 0)
            notify(f"STATUS={'paused' if key == 'pause' else 'running'}")
            return {"paused": key == "pause"}
        if key == "record:start":
            return self._start_recording(req)
        if key == "models":
            with self.lock:
                targets = {t.learn_key: t.name for t in self.pipeline.targets.values()}
            return {"enabled": self.cfg.learning.enabled,
                    "unavailable": self.learner.unavailable,
                    "state_dir": self.cfg.learning.state_dir,
                    "models": [m | {"attached": targets.get(m["target"])}
                               for m in self.learner.store.list()]}
        if key == "models:rollback":
            return self._rollback(req.get("segment"))
        if key == "record:status":
            return {n: {k: r[k] for k in ("output", "want", "done", "result", "pid")}
                    | {"have": r.get("written", len(r["batches"]))}
                    for n, r in self.recordings.items()}
        raise ControlError("EINVAL", f"unknown command {key!r}")

    def _rollback(self, name) -> dict:
        """``recmgctl models rollback``: the model before the serving one serves again,
        for the named attached target (or the only one)."""
        with self.lock:
            target = self._one_target(name, "models rollback")
            key = target.learn_key
            if key is None:
                raise ControlError("EINVAL", f"{target.name}: its name cannot key a model "
                                   "store, so no learned model serves it")
            try:
                self.learner.store.rollback(key)
            except LookupError as e:
                raise ControlError("ENOENT", str(e)) from None
            except OSError as e:
                raise ControlError("EIO", f"rollback failed, nothing changed: {e}") from None
            models = self.learner.rolled_back(key, self.pipeline.targets)
        serving = models["id"] if models else "the profile's own model"
        log.info("models rollback for %s: %s serves", target.name, serving)
        return {"segment": target.name, "serving": serving}

    def _one_target(self, name, what: str):
        """The attached target ``name`` (a short or file name) names, or the only one."""
        names = list(self.pipeline.targets)
        if name is None and len(names) == 1:
            return self.pipeline.targets[names[0]]
        if name is None:
            raise ControlError("EINVAL" if names else "ENOENT", (
                f"{what}: {len(names)} targets are attached ({', '.join(names)}); "
                "name one with --segment") if names else
                f"{what}: no target is attached yet (recmgctl status lists them)")
        found = [n for n in names if seg.matches(name, n)]
        if len(found) > 1:
            raise ControlError("EINVAL", f"{name!r} names {len(found)} attached "
                               f"segments ({', '.join(found)}); give the file name")
        if not found:
            raise ControlError("ENOENT", f"no attached target {name!r} "
                               f"(attached: {', '.join(names) or 'none'})")
        return self.pipeline.targets[found[0]]

    def _start_recording(self, req: dict) -> dict:
        name, out, want = req.get("segment"), req.get("output"), req.get("batches", 100)
        if not isinstance(out, str) or not out.startswith("/"):
            raise ControlError("EINVAL", "record needs an absolute 'output' path")
        directory, fname = os.path.split(out)
        if not fname or fname in (".", "..") or "\0" in out:
            raise ControlError("EINVAL", f"record: {out!r} does not name a file")
        if not os.path.isdir(directory):
            raise ControlError("ENOENT", f"record: directory {directory} does not exist")
        if not isinstance(want, int) or not 1 <= want <= 1_000_000:
            raise ControlError("EINVAL", "'batches' must be an integer in 1..1000000")
        with self.lock:
            target = self._one_target(name, "record")
            name = target.name
            rec = {"output": out, "want": want, "batches": [], "done": False, "result": None,
                   "pid": target.pid, "tables": [r.info for r in target.reader.tables],
                   # the row layout its keys are positions in (recmg.rowlayout)
                   "layout": target.reader.row_layout()[0]}
            rec["perf"] = []
            self.recordings[name] = rec
            target.record_into(rec["batches"], rec["perf"])
        return {"segment": name, "output": out, "batches": want}

    # ----------------------------------------------------------------- main loop
    def serve(self) -> int:
        c = self.cfg.control
        try:
            self.server = ControlServer(c.socket, self.handle, c.read_group,
                                        c.max_request_bytes, c.max_requests_per_s,
                                        c.max_connections, c.idle_timeout_s)
        except (OSError, KeyError) as e:
            raise StartupError(os.EX_CANTCREAT, f"cannot create control socket {c.socket}: "
                               f"{e}") from None
        if self.cfg.metrics.http_port:
            from prometheus_client import start_http_server

            try:
                start_http_server(self.cfg.metrics.http_port, addr="127.0.0.1",
                                  registry=m.REGISTRY)
            except OSError as e:
                self.server.close()
                raise StartupError(os.EX_CONFIG, f"metrics.http_port: cannot listen on "
                                   f"127.0.0.1:{self.cfg.metrics.http_port}: {e.strerror}"
                                   ) from None
        reload_flag = threading.Event()
        signal.signal(signal.SIGHUP, lambda *_: reload_flag.set())
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        worker = threading.Thread(target=self._worker, name="recmgd-worker", daemon=True)
        worker.start()
        self.first_tick.wait(timeout=60)
        notify(f"READY=1\nSTATUS=running: backend {self.pipeline.migrator.name}, profile "
               f"{self.profile.name}, fast {self.fast}, slow {self.slow}")
        log.info("recmgd %s ready: backend %s, fast nodes %s, slow nodes %s (%s), profile %s, "
                 "control %s", __version__, self.pipeline.migrator.name, self.fast, self.slow,
                 self.tier_basis, self.profile.name, c.socket)
        wd_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        last_wd = 0.0
        try:
            while not self.stop_event.is_set():
                self.server.poll(0.2)
                if reload_flag.is_set():
                    reload_flag.clear()
                    try:
                        self.reload()
                    except ControlError:
                        pass  # logged and reported to systemd by reload()
                if wd_usec:
                    now = time.monotonic()
                    half = wd_usec / 2e6
                    if now - last_wd >= half / 2 and now - self.last_progress < half:
                        notify("WATCHDOG=1")
                        last_wd = now
        finally:
            notify("STOPPING=1")
            self.stop_event.set()
            worker.join(timeout=self.cfg.migration.tick_deadline_ms / 1000 + 5)
            self.learner.close()
            with self.lock:
                self.pipeline.close()
            self.server.close()
            self.watcher.close()
            log.info("recmgd stopped")
        return 70 if self.worker_error else 0
