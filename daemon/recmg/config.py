"""recmgd configuration: /etc/recmg/recmgd.toml parsed into frozen dataclasses.

Every key has a default (packaging/recmgd.toml documents each one).  Unknown keys,
wrong types and out-of-range values are errors naming their dotted key path; all of
them are collected so an operator fixes everything in one pass.  Units are in key
names (``tick_ms``, ``rate_mib_s``).

Policy profiles (``[policy] profile = "default"``) are TOML files: the package's
``policies/`` (installed under <prefix>/share/recmg/policies and, by packaging,
/usr/share/recmg/policies), overridden by files of the same name in
/etc/recmg/policies.
"""

from __future__ import annotations

import grp
import math
import os
import socket
import sys
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from recmg.safefile import read_regular
from recmg.capture import segment as seg
from recmg import registry

DEFAULT_PATH = "/etc/recmg/recmgd.toml"
ADMIN_POLICY_DIR = "/etc/recmg/policies"
MIGRATORS = ("auto", *registry.names("mover", daemon_only=True))  # auto: see recmgd.py


class ConfigError(ValueError):
    """One or more configuration problems; ``problems`` lists (key path, message)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source, self.problems = source, problems
        # a key that is the source itself ("policy.profile") is not said twice
        text = "; ".join(m if k == source else f"{k}: {m}" for k, m in problems)
        super().__init__(text if all(k == source for k, _ in problems)
                         else f"{source}: {text}")


@dataclass(frozen=True)
class Target:
    """Which processes recmgd manages: segment names, pids, executable names."""

    # segments by the client's name, or one file recmg.<name>.<pid>; "*" = any
    segments: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    exe: tuple[str, ...] = ()  # process names (psutil name) whose segments to attach
    allowed_uids: tuple[int, ...] = ()  # empty: any uid that owns its segment
    # above this ingest rate recmgd asks the client to record 1 batch in N (the ring's
    # sampling word), keeping a tick within one core; 0 = never sample
    max_accesses_per_s: float = 5_000_000.0
    # what one segment can make recmgd allocate or loop over: pages its tables span
    # (16 TiB of 4 KiB pages; nothing is allocated per page of the tables), pages it
    # keeps state for (the ones read, wanted, moved or found fast: 26 B each, the
    # least recently read forgotten first), keys and batches taken from its ring per
    # tick (the rest waits for the next tick)
    max_pages: int = 1 << 32
    max_tracked_pages: int = 1 << 22
    max_keys_per_read: int = 1 << 24
    max_batches_per_read: int = 1 << 14
    # the worker's time for reading and deciding in one tick, all targets together (ms;
    # 0: half of tick_ms): each target's share bounds the keys it reads and steps
    # (batches of more are thinned, and counted), targets left when it runs out wait
    # for the next tick (rotating, so each is served), and the watchdog is fed after
    # every target
    work_ms_per_tick: int = 0
    # all targets together: the state their engines may hold (page maps when full,
    # policies, prefetchers, features); a target that would go beyond is refused
    max_state_mib: int = 1024


@dataclass(frozen=True)
class Tiers:
    fast_nodes: tuple[int, ...] = ()  # empty: from topology
    slow_nodes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Budget:
    fast_mib_per_target: int = 1024  # DRAM each target's tables may occupy
    max_fast_node_share: float = 0.8  # never fill more of a fast node than this


@dataclass(frozen=True)
class Migration:
    # auto: move_pages where the host has a slow tier, else simulated (said loudly)
    backend: str = "auto"  # auto | move_pages | simulated | dryrun
    rate_mib_s: float = 256.0  # cap on pages moved per second, both directions
    batch_pages: int = 1024  # pages per move_pages call
    tick_deadline_ms: int = 200  # migration stops for this tick when it runs out
    min_residency_ticks: int = 5  # hysteresis: a moved page stays put this long
    # the closed loop (recmg.service.feedback): every this many ticks, compare the
    # target's batch interval after moving ticks with after still ones (the window's
    # last quarter moves nothing); slower by more than feedback_slowdown halves its rate
    feedback_window_ticks: int = 20  # 0: off
    feedback_slowdown: float = 0.05
    simulated_slow_ns: float = 300.0  # simulated backend: modelled latencies
    simulated_fast_ns: float = 100.0


@dataclass(frozen=True)
class Safety:
    free_floor_mib: int = 512  # no promotion when a fast node has less free memory
    psi_some_avg10_max: float = 20.0  # memory PSI "some avg10" (%) above which moves pause
    on_conflict: str = "warn"  # warn | refuse (NUMA balancing tiering, DAMON migrate)


@dataclass(frozen=True)
class Control:
    socket: str = "/run/recmg/control.sock"
    read_group: str = ""  # group allowed read commands (changes are root only)
    max_request_bytes: int = 65536
    max_requests_per_s: float = 50.0
    max_connections: int = 64  # more are refused (EBUSY): idle ones cannot use up fds
    idle_timeout_s: float = 60.0  # a connection silent this long is closed


@dataclass(frozen=True)
class Metrics:
    textfile: str = ""  # atomically rewritten Prometheus textfile; "" = off
    http_port: int = 0  # opt-in loopback HTTP exposition; 0 = off


@dataclass(frozen=True)
class Policy:
    profile: str = "default"


@dataclass(frozen=True)
class Learning:
    """Models retrained on the host's own traffic (recmg.service.learning): per target
    a bounded window of the newest accesses; every ``interval_s`` a separate process,
    niced, in the idle I/O class, under CPU and memory caps and as ``user``, trains on
    the window's earlier part and replays its later part; only a model with fewer
    fetches than both the serving model and S3-FIFO is swapped in."""

    enabled: bool = False
    state_dir: str = "/var/lib/recmg"  # models, cards and validation figures
    interval_s: float = 3600.0  # a target's rounds start at most this often
    window_accesses: int = 4_000_000  # the newest accesses kept per target (8 B each)
    min_window_accesses: int = 1_000_000  # a round waits until the window holds this many
    max_window_mib: int = 256  # all targets' windows together
    validate_frac: float = 0.3  # the window's later share that judges, never trains
    margin: float = 0.0  # a candidate needs fewer than (1 - margin) x the best fetches
    epochs: int = 4
    user: str = "nobody"  # the trainer runs as this user (recordings are untrusted)
    nice: int = 19
    cpu_s: int = 1800  # RLIMIT_CPU of the trainer
    memory_mib: int = 4096  # RLIMIT_AS of the trainer
    timeout_s: float = 3600.0  # wall clock; the trainer is killed past it
    keep_models: int = 5  # per target; the serving and previous ones are always kept


@dataclass(frozen=True)
class Config:
    tick_ms: int = 500
    shm_dir: str = ""  # "": $RECMG_SHM_DIR, /dev/shm/recmg if present, else /dev/shm
    target: Target = field(default_factory=Target)
    tiers: Tiers = field(default_factory=Tiers)
    budget: Budget = field(default_factory=Budget)
    migration: Migration = field(default_factory=Migration)
    safety: Safety = field(default_factory=Safety)
    control: Control = field(default_factory=Control)
    metrics: Metrics = field(default_factory=Metrics)
    policy: Policy = field(default_factory=Policy)
    learning: Learning = field(default_factory=Learning)


@dataclass(frozen=True)
class Profile:
    """A policy profile: what caches and what prefetches."""

    name: str
    caching: str = "s3fifo"
    prefetcher: str = "none"
    prefetch_budget_pages: int = 256
    # at most this many missed pages per tick reach the prefetcher: the temporal
    # prefetchers index misses in Python, so this bounds their cost per tick
    prefetch_observe_max: int = 4096
    # prefetcher = "learned": at most this many candidates a tick are scored (the
    # most recently missed first; 0: the model card's max_candidates, 32,768 for the
    # shipped models).  The budget is 256 pages; scoring 32,768 cost recmg 6-29% of
    # its CPU on the guest's workload for no fetch measured (docs/results.md,
    # "The learned prefetcher's candidates, bounded per tick")
    prefetch_candidates: int = 0
    # lfu: frequencies halve after this many page accesses (0: 8 x capacity, the
    # simulator's default); the daemon sees every access, so a long half-life keeps
    # the hot set stable across ticks
    lfu_aging_accesses: int = 0
    # caching = "learned": its ONNX model (a path relative to the profile's directory,
    # its card beside it) and onnxruntime's intra-op threads
    model: str = ""
    model_threads: int = 1
    # the fallback: a shadow S3-FIFO sees every access; every model_check_window
    # accesses, a window where the model missed more than (1 + model_fetch_margin) x
    # the shadow's misses is lost, and after model_fallback_windows lost in a row the
    # shadow decides, until as many windows in a row the model would have won
    # (model_fetch_margin < 0: off).  The online accuracy against delayed OPT labels is
    # reported, and below model_accuracy_floor (0: never) is a second reason.
    model_check_window: int = 65536
    # what the shadow runs and what takes over: s3fifo, lfu (aging lfu_aging_accesses)
    # or lru
    model_fallback: str = "s3fifo"
    model_fetch_margin: float = 0.02
    model_accuracy_floor: float = 0.6
    model_fallback_windows: int = 3
    # a learned prefetcher (learned, deltalstm, voyager, artifact): its ONNX model (a
    # path as for model; onnxruntime runs it with model_threads too)
    prefetch_model: str = ""
    # ingest sampling for this profile's targets: above this many offered accesses per
    # second the client records 1 batch in N (0: never sample; -1: target's own
    # max_accesses_per_s; else the lower of the two, and target's 0 turns sampling
    # off: sampling_limit).  A profile whose tick costs more per access (the learned
    # ones) samples earlier than the cheap ones.
    max_accesses_per_s: float = -1.0
    # admission: a page is promoted in place of a fast one only if it is hotter (its
    # accesses, halving every this many accesses; 0: no test, the policy's set is
    # followed).  It keeps a recency policy from trading warm pages for colder ones
    # every tick (recmg.engine.planner; docs/results.md, "Placement stability").
    admission_half_life_accesses: int = 0
    # what the caching policy sees: "access" (every page read, in order) or "counted"
    # (each batch's distinct pages once, in the order of their last reads, with how
    # often the batch read each: the policy's work per distinct page, not per access;
    # a learned model must have been trained so: its card says observe "counted").
    # The prefetcher sees every read either way.
    observe: str = "access"
    description: str = ""


# ----------------------------------------------------------------------- validation
MAX_NODE = 1023  # MAX_NUMNODES of x86_64 distribution kernels (CONFIG_NODES_SHIFT=10)


def _nodes(v):
    return all(0 <= n <= MAX_NODE for n in v) and len(set(v)) == len(v) or \
        f"must be distinct NUMA node ids in 0..{MAX_NODE}"


_CHECKS = {
    "tick_ms": lambda v: 10 <= v <= 60000 or "must be between 10 and 60000",
    "target.max_accesses_per_s": lambda v: 0 <= v <= 1e10 or "must be in 0..1e10 "
    "(0 = never sample)",
    "target.max_pages": lambda v: 1 <= v <= 1 << 40 or "must be in 1..2^40",
    "target.max_tracked_pages": lambda v: 1024 <= v <= 1 << 28 or "must be in 1024..2^28",
    "target.max_state_mib": lambda v: 16 <= v <= 1 << 20 or "must be in 16..2^20",
    "target.work_ms_per_tick": lambda v: 0 <= v <= 60000 or "must be in 0..60000 "
    "(0: half of tick_ms)",
    "target.max_keys_per_read": lambda v: 1 <= v <= 1 << 30 or "must be in 1..2^30",
    "target.max_batches_per_read": lambda v: 1 <= v <= 1 << 24 or "must be in 1..2^24",
    "target.pids": lambda v: all(1 <= p < 1 << 22 for p in v) or "must be pids in 1..4194303",
    "target.allowed_uids": lambda v: all(0 <= u < 1 << 32 for u in v) or "must be uids",
    "tiers.fast_nodes": _nodes,
    "tiers.slow_nodes": _nodes,
    "target.segments": lambda v: all(seg.valid_selector(x) for x in v) or (
        "each must be \"*\", a client's segment name (letters, digits, '_', '-') or a "
        "segment file name recmg.<name>.<pid>"),
    "budget.fast_mib_per_target": lambda v: 0 < v <= 1 << 30 or "must be in 1..2^30",
    "budget.max_fast_node_share": lambda v: 0 < v <= 1 or "must be in (0, 1]",
    "migration.backend": lambda v: v in MIGRATORS or f"must be one of {', '.join(MIGRATORS)}",
    "migration.rate_mib_s": lambda v: 0 < v <= 1e6 or "must be in (0, 1000000] MiB/s",
    "migration.batch_pages": lambda v: 1 <= v <= 1 << 20 or "must be in 1..1048576",
    "migration.tick_deadline_ms": lambda v: 1 <= v <= 60000 or "must be in 1..60000",
    "migration.min_residency_ticks": lambda v: 0 <= v <= 1 << 20 or "must be in 0..1048576",
    "migration.feedback_window_ticks": lambda v: v == 0 or 4 <= v <= 100000 or
    "must be 0 (off) or in 4..100000",
    "migration.feedback_slowdown": lambda v: 0 < v <= 10 or "must be in (0, 10]",
    "migration.simulated_slow_ns": lambda v: 0 <= v <= 1e9 or "must be in 0..1e9 ns",
    "migration.simulated_fast_ns": lambda v: 0 <= v <= 1e9 or "must be in 0..1e9 ns",
    "safety.free_floor_mib": lambda v: 0 <= v <= 1 << 30 or "must be in 0..2^30",
    "safety.psi_some_avg10_max": lambda v: 0 <= v <= 100 or "must be in 0..100",
    "safety.on_conflict": lambda v: v in ("warn", "refuse") or "must be warn or refuse",
    "control.max_request_bytes": lambda v: 256 <= v <= 1 << 24 or "must be in 256..16777216",
    "control.max_requests_per_s": lambda v: 1 <= v <= 1e6 or "must be in 1..1000000",
    "control.max_connections": lambda v: 1 <= v <= 512 or "must be in 1..512",
    "control.idle_timeout_s": lambda v: 1 <= v <= 86400 or "must be in 1..86400",
    "metrics.http_port": lambda v: 0 <= v <= 65535 or "must be a port number (0 = off)",
    "learning.state_dir": lambda v: v.startswith("/") and "\0" not in v or
    "must be an absolute path",
    "learning.interval_s": lambda v: 1 <= v <= 1e7 or "must be in 1..1e7 s",
    "learning.window_accesses": lambda v: 1024 <= v <= 1 << 28 or "must be in 1024..2^28",
    "learning.min_window_accesses": lambda v: 1024 <= v <= 1 << 28 or "must be in 1024..2^28",
    "learning.max_window_mib": lambda v: 1 <= v <= 1 << 20 or "must be in 1..2^20",
    "learning.validate_frac": lambda v: 0.05 <= v <= 0.9 or "must be in 0.05..0.9",
    "learning.margin": lambda v: 0 <= v < 1 or "must be in [0, 1)",
    "learning.epochs": lambda v: 1 <= v <= 100 or "must be in 1..100",
    "learning.user": lambda v: 0 < len(v) <= 64 or "must name a user",
    "learning.nice": lambda v: 0 <= v <= 19 or "must be in 0..19",
    "learning.cpu_s": lambda v: 1 <= v <= 1 << 24 or "must be in 1..2^24 s",
    "learning.memory_mib": lambda v: 64 <= v <= 1 << 22 or "must be in 64..2^22",
    "learning.timeout_s": lambda v: 1 <= v <= 1e6 or "must be in 1..1e6 s",
    "learning.keep_models": lambda v: 1 <= v <= 1000 or "must be in 1..1000",
}


def _type_ok(value, typ) -> bool:
    if typ in ("int", int):
        return isinstance(value, int) and not isinstance(value, bool)
    if typ in ("float", float):  # TOML has inf and nan: never a valid setting here
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
    if typ in ("str", str):
        return isinstance(value, str)
    if typ in ("bool", bool):
        return isinstance(value, bool)
    return True


def _build(cls, data: dict, path: str, problems: list) -> object:
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        kp = f"{path}{key}"
        if key not in known:
            problems.append((kp, f"unknown key (known: {', '.join(sorted(known))})"))
            continue
        typ = known[key].type
        if isinstance(typ, str) and typ.startswith("tuple"):
            inner = typ[typ.index("[") + 1:typ.index(",")]
            if not isinstance(value, list) or not all(_type_ok(v, inner) for v in value):
                problems.append((kp, f"must be a list of {inner}"))
                continue
            value = tuple(value)
        elif isinstance(typ, str) and typ[0].isupper():  # a nested section
            if not isinstance(value, dict):
                problems.append((kp, "must be a table (section)"))
                continue
            value = _build(_SECTIONS[typ], value, kp + ".", problems)
        elif not _type_ok(value, typ):
            problems.append((kp, f"must be a finite {typ}" if typ == "float" else
                             f"must be of type {typ}, got {type(value).__name__}"))
            continue
        check = _CHECKS.get(kp)
        if check is not None:
            res = check(value)
            if res is not True:
                problems.append((kp, res))
                continue
        kwargs[key] = value
    return cls(**kwargs)


_SECTIONS = {c.__name__: c for c in (Target, Tiers, Budget, Migration, Safety, Control,
                                     Metrics, Policy, Learning)}


def _toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, [("(syntax)", str(e))]) from None
    except RecursionError:
        raise ConfigError(source, [("(syntax)", "nested too deeply")]) from None


MAX_CONFIG_BYTES = 1 << 20


def _read_text(p: Path) -> str:
    data = read_regular(p, MAX_CONFIG_BYTES, "config file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), [("(file)", f"not UTF-8 at byte {e.start}")]) from None


def parse(text: str, source: str = "<config>") -> Config:
    data = _toml(text, source)
    problems: list[tuple[str, str]] = []
    cfg = _build(Config, data, "", problems)
    overlap = set(cfg.tiers.fast_nodes) & set(cfg.tiers.slow_nodes)
    if overlap:
        problems.append(("tiers", f"nodes {sorted(overlap)} are both fast and slow"))
    if cfg.migration.simulated_slow_ns < cfg.migration.simulated_fast_ns:
        problems.append(("migration.simulated_slow_ns", "must be >= simulated_fast_ns"))
    budget_pages = cfg.budget.fast_mib_per_target * (1 << 20) // os.sysconf("SC_PAGE_SIZE")
    if cfg.target.work_ms_per_tick > cfg.tick_ms:
        problems.append(("target.work_ms_per_tick", f"{cfg.target.work_ms_per_tick} ms is "
                         f"longer than the {cfg.tick_ms} ms tick"))
    if 2 * budget_pages > cfg.target.max_tracked_pages:
        problems.append(("target.max_tracked_pages", f"{cfg.target.max_tracked_pages} pages "
                         f"cannot hold twice the {budget_pages}-page budget "
                         "(budget.fast_mib_per_target)"))
    if cfg.learning.min_window_accesses > cfg.learning.window_accesses:
        problems.append(("learning.min_window_accesses", "must be at most "
                         "learning.window_accesses"))
    if problems:
        raise ConfigError(source, problems)
    return cfg


def from_dict(data: dict, source: str = "<config>") -> Config:
    """A Config from ``dataclasses.asdict`` of one (a learning job's copy), checked as
    a file is."""
    problems: list[tuple[str, str]] = []
    cfg = _build(Config, data, "", problems)
    if problems:
        raise ConfigError(source, problems)
    return cfg


def _has_cap_chown() -> bool:
    """Whether this process holds CAP_CHOWN (bit 0 of CapEff, /proc/self/status)."""
    try:
        for line in read_regular("/proc/self/status", 1 << 16).decode().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def check_host(cfg: Config, node_ids: list[int]) -> list[tuple[str, str]]:
    """What a config names on this host that is not there: NUMA nodes, the shm
    directory, the control socket's read group, a free metrics port.  Returns the
    problems (key path, message); `recmgd --check-config` and startup report them."""
    problems = []
    for key, nodes in (("tiers.fast_nodes", cfg.tiers.fast_nodes),
                       ("tiers.slow_nodes", cfg.tiers.slow_nodes)):
        missing = [n for n in nodes if n not in node_ids]
        if missing:
            problems.append((key, f"nodes {missing} do not exist on this host (nodes: "
                             f"{node_ids})"))
    shm_dir = cfg.shm_dir or seg.default_dir()
    if not os.path.isdir(shm_dir):
        problems.append(("shm_dir", f"{shm_dir} is not a directory"))
    if cfg.control.read_group:
        try:
            gid = grp.getgrnam(cfg.control.read_group).gr_gid
        except KeyError:
            problems.append(("control.read_group", f"no group {cfg.control.read_group!r}"))
        else:
            # chown(2): without CAP_CHOWN a process may give its file only to a group
            # it is a member of; the shipped unit drops CAP_CHOWN and adds group recmg
            if not _has_cap_chown() and gid not in os.getgroups() and gid != os.getegid():
                problems.append(("control.read_group", (
                    f"recmgd cannot give its socket to group {cfg.control.read_group!r}: "
                    "without CAP_CHOWN (the shipped unit drops it) the group must be one "
                    "of recmgd's own (SupplementaryGroups= in the unit, which ships "
                    "with 'recmg')")))
    if cfg.metrics.http_port:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", cfg.metrics.http_port))
            except OSError as e:
                problems.append(("metrics.http_port", f"cannot listen on 127.0.0.1:"
                                 f"{cfg.metrics.http_port}: {e.strerror}"))
    return problems


def load(path: str | None) -> Config:
    """Load a config file.  The default path may be missing (built-in defaults); an
    explicitly given path must exist."""
    p = Path(path or DEFAULT_PATH)
    try:
        text = _read_text(p)
    except FileNotFoundError:
        if path is None:
            return Config()
        raise ConfigError(str(p), [("(file)", "does not exist")]) from None
    except OSError as e:
        raise ConfigError(str(p), [("(file)", e.strerror)]) from None
    return parse(text, str(p))


# ------------------------------------------------------------------------ profiles
def policy_dirs() -> list[Path]:
    """Vendor directories first, the admin directory last (it overrides)."""
    dirs = [Path(sys.prefix) / "share/recmg/policies", Path("/usr/share/recmg/policies")]
    here = Path(__file__).resolve().parents[2] / "policies"  # a source checkout
    if here.is_dir():
        dirs.insert(0, here)
    return dirs + [Path(ADMIN_POLICY_DIR)]


def list_profiles(dirs: list[Path] | None = None) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in dirs or policy_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found[f.stem] = f  # later directories override earlier ones
    return found


def load_profile(name: str, dirs: list[Path] | None = None) -> Profile:
    files = list_profiles(dirs)
    if name not in files:
        raise ConfigError("policy.profile", [("policy.profile", f"unknown profile {name!r} "
                                             f"(found: {', '.join(sorted(files)) or 'none'})")])
    path = files[name]
    try:
        data = _toml(_read_text(path), str(path))
    except OSError as e:
        raise ConfigError(str(path), [("(file)", str(e))]) from None
    problems = []
    if data.pop("schema", None) != 1:
        problems.append(("schema", "must be 1"))
    if "name" in data:
        data.pop("name")
        problems.append(("name", "a profile is named by its file name, not by a key"))
    prof = _build(Profile, {"name": name, **data}, "", problems)
    for role in ("caching", "prefetcher"):
        problem = registry.check(role, getattr(prof, role), daemon_only=True)
        if problem:
            problems.append((role, problem))
    if prof.prefetch_budget_pages < 0:
        problems.append(("prefetch_budget_pages", "must be >= 0"))
    if not 0 <= prof.lfu_aging_accesses < 1 << 62:
        problems.append(("lfu_aging_accesses", "must be in 0..2^62"))
    if not 0 <= prof.admission_half_life_accesses < 1 << 62:
        problems.append(("admission_half_life_accesses", "must be in 0..2^62 (0: no "
                         "admission test)"))
    if prof.observe not in ("access", "counted"):
        problems.append(("observe", "must be \"access\" or \"counted\""))
    if prof.prefetch_budget_pages > 1 << 24:
        problems.append(("prefetch_budget_pages", "must be at most 2^24"))
    if prof.prefetch_observe_max > 1 << 24:
        problems.append(("prefetch_observe_max", "must be at most 2^24"))
    if prof.prefetch_observe_max < 1:
        problems.append(("prefetch_observe_max", "must be >= 1"))
    if not 0 <= prof.prefetch_candidates <= 1 << 24:
        problems.append(("prefetch_candidates", "must be in 0..2^24 (0: the model's)"))
    if not 1 <= prof.model_threads <= 64:
        problems.append(("model_threads", "must be in 1..64"))
    if not 1024 <= prof.model_check_window <= 1 << 24:
        problems.append(("model_check_window", "must be in 1024..2^24 accesses"))
    if not 0 <= prof.model_accuracy_floor <= 1:
        problems.append(("model_accuracy_floor", "must be in 0..1 (0: never fall back)"))
    if not -1 <= prof.model_fetch_margin <= 10:
        problems.append(("model_fetch_margin", "must be in -1..10 (< 0: no fetch judge)"))
    if prof.model_fallback not in ("s3fifo", "lfu", "lru"):
        problems.append(("model_fallback", "must be \"s3fifo\", \"lfu\" or \"lru\""))
    if not 1 <= prof.model_fallback_windows <= 1000:
        problems.append(("model_fallback_windows", "must be in 1..1000"))
    if not (prof.max_accesses_per_s == -1 or 0 <= prof.max_accesses_per_s <= 1e12):
        problems.append(("max_accesses_per_s", "must be in 0..1e12 accesses/s (0: never "
                         "sample), or -1 for target.max_accesses_per_s"))
    for role, key, kind in (("caching", "model", "caching"),
                            ("prefetcher", "prefetch_model", "prefetch")):
        file = getattr(prof, key)
        if registry.needs_model(role, getattr(prof, role)):
            found = check_model(key, file, kind, path, getattr(prof, role),
                                observe=prof.observe)
            problems += found
            if not found:
                prof = replace(prof, **{key: str((path.parent / file).resolve())})
        elif file:
            problems.append((key, f"only the learned {role} takes {key}"))
    if problems:
        raise ConfigError(str(path), problems)
    return prof


def check_model(key: str, file: str, kind: str, path: Path,
                 name: str, probe: bool = True, observe: str = "access"
                 ) -> list[tuple[str, str]]:
    """A learned policy's model (profile key ``key``) and its card, checked now (a
    reload that names a bad model keeps the old one).  ``probe``: also load it in
    onnxruntime and call it once (the learning loop does that in another process).
    ``observe``: the profile's; a caching model must have been trained so."""
    from recmg.engine.models.card import ModelError, load_card, observe_of

    role = "caching" if kind == "caching" else "prefetcher"
    if not file:
        return [(key, f"{role} = \"{name}\" needs {key} = \"FILE.onnx\"")]
    try:
        card = load_card(path.parent / file, kind)
    except ModelError as e:
        return [(key, str(e))]
    try:  # what recmgd will run: loaded by onnxruntime and called once on zeros
        from recmg.engine.models.card import OnnxModel

        if probe:
            OnnxModel(path.parent / file, kind).probe()
    except ImportError as e:
        return [(key, f"cannot check {file}: {e} (install recmg[daemon])")]
    except ModelError as e:
        return [(key, str(e))]
    family = (card.get("model") or {}).get("family")
    want = registry.family(role, name) or None
    if kind == "prefetch" and family != (want or "mlp"):
        return [(key, f"{file} is a {family!r} model; prefetcher {name!r} runs "
                 f"{want or 'mlp'!r} models")]
    if kind == "caching" and observe_of(card) != observe:
        return [(key, f"{file} was trained on {observe_of(card)} observation; the profile "
                 f"says observe = \"{observe}\" (train it with recmg train cache "
                 f"--observe {observe}, or set observe = \"{observe_of(card)}\")")]
    gran = (card.get("label") or {}).get("granularity")
    if gran != "page":  # recmgd caches and prefetches pages
        return [(key, f"{file} was trained on {gran} labels; recmgd manages pages: "
                 f"train it with recmg train {'cache' if kind == 'caching' else 'prefetch'} "
                 "--granularity page")]
    return []


def with_socket(cfg: Config, socket: str) -> Config:
    return replace(cfg, control=replace(cfg.control, socket=socket))


def with_profile(cfg: Config, name: str) -> Config:
    return replace(cfg, policy=Policy(profile=name))


def sampling_limit(cfg: Config, profile: Profile) -> float:
    """Offered accesses per second above which a target is sampled (0: never).  0 on
    either side wins (the operator's target.max_accesses_per_s = 0 turns sampling off
    whatever the profile says, and a profile may turn it off for itself); otherwise the
    lower of the two, the profile's only where it sets one (-1: it does not)."""
    t, p = cfg.target.max_accesses_per_s, profile.max_accesses_per_s
    if p < 0:
        return t
    return 0.0 if t == 0 or p == 0 else min(t, p)
