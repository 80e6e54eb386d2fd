"""recmgd's status as typed objects: what the pipeline and the daemon fill in, what
``to_dict`` sends over the control socket (JSON; docs/operations.md lists the fields)
and what ``from_dict`` gives back to a renderer (recmgctl status), which reads fields,
not string keys.  A field a component owns (a learned model's quality, the prefetcher,
perf counts, the closed loop, the row layout) stays that component's dict.

Units are in the names: ``_s`` seconds, ``_ms`` milliseconds, ``_ns`` nanoseconds;
``pages`` are pages of the target's tables; ratios are shares in 0..1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields


@dataclass
class Work:
    """A target's share of the tick: how far it lags its writer and what it cost."""

    lag_batches: int = 0
    lag_s: float = 0.0
    tick_wall_ms: float = 0.0
    tick_cpu_ms: float = 0.0
    ns_per_key: float = 0.0
    keys_thinned: int = 0
    ticks_deferred: int = 0


@dataclass
class TargetStatus:
    segment: str
    name: str
    pid: int
    tables: int
    sampling: int  # the client records 1 batch in this many
    offered_accesses_s: int
    work: Work
    pages: int
    fast_pages: int
    budget_pages: int
    batches: int
    accesses: int
    hit_ratio: float
    ondemand: int
    promoted: int
    demoted: int
    pingpong: int
    dropped_batches: int
    errors: dict = field(default_factory=dict)
    refused_by_admission: int = 0  # promotions the admission test refused
    layout: dict | None = None  # recmg.service.layoutwatch
    model: dict | None = None  # the learned caching policy's (None: not learned)
    learning: dict | None = None  # recmg.service.learning: the loop's state for it
    prefetch: dict = field(default_factory=dict)
    perf: dict | None = None
    feedback: dict = field(default_factory=dict)


@dataclass
class Totals:
    """All targets together, detached ones included."""

    accesses: int = 0
    hit_ratio: float = 0.0
    ondemand: int = 0
    promoted: int = 0
    demoted: int = 0
    pingpong: int = 0
    modelled_stall_ms: float = 0.0
    errors: dict = field(default_factory=dict)


@dataclass
class Brake:
    reason: str
    stops: str  # "promotions" or "all moves"
    detail: str


@dataclass
class Status:
    targets: list[TargetStatus]
    rejected: dict  # segment -> why
    totals: Totals
    tick: int
    last_tick_ms: float
    internal_errors: int
    paused: bool
    brake: Brake | None
    backend: str
    real_migration: bool
    profile: str
    caching: str
    prefetcher: str
    fast_nodes: list[int]
    slow_nodes: list[int]
    # the daemon's, filled in when status is asked for
    uptime_s: float = 0.0
    version: str = ""
    tier_basis: str = ""
    backend_auto: bool = False
    config: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def with_daemon(self, **kw) -> Status:
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_dict(cls, d: dict) -> Status:
        """What a renderer reads (keys this version does not know are left out)."""
        return _build(cls, d)


_NESTED = {"work": Work, "totals": Totals, "brake": Brake}


def _build(cls, d: dict):
    kw = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if f.name == "targets":
            v = [_build(TargetStatus, t) for t in v]
        elif f.name in _NESTED and v is not None:
            v = _build(_NESTED[f.name], v)
        kw[f.name] = v
    return cls(**kw)
