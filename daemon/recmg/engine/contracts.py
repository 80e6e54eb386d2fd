"""Typed contracts between the engine's stages (typing.Protocol), and the frozen
dataclasses that flow between them.

    source.read()            -> AccessBatch   (recmg.capture.reader; frozen)
    cache policy             <- observes keys; -> scores(keys), resident()
    prefetcher.observe()     -> candidate keys, best first
    planner (pure function)  -> Plan          (recmg.engine.planner; frozen)
    mover.apply()            -> Outcome       (here; movers in recmg.movers)
    Engine.step()            -> StepResult    (frozen)

Keys are per table everywhere: a vector key is ``table << 40 | row`` and a page key
``table << 40 | page within the table`` (tables by position in the target's or the
trace's table list).  A score is a float, higher = more valuable in fast memory,
0 = not wanted there.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from recmg.capture.reader import AccessBatch
    from recmg.engine.layout import Layout
    from recmg.engine.planner import Plan


@dataclass
class Outcome:
    """What one mover call did: pages moved and attempted, seconds it took, whether
    it stopped at the deadline, and errors by name (errno names, "node_full" ...)."""

    moved: int = 0
    attempted: int = 0
    seconds: float = 0.0
    deadline_hit: bool = False
    errors: Counter = field(default_factory=Counter)


@runtime_checkable
class Source(Protocol):
    """Where batches come from: a capture ring (SegmentReader) or a trace (TraceSource)."""

    def read(self, max_batches: int | None = None, max_keys: int | None = None,
             want_keys: int | None = None) -> AccessBatch: ...

    def set_sampling(self, one_in: int) -> None: ...


@runtime_checkable
class CachePolicy(Protocol):
    """Keeps at most ``capacity`` keys; its scores rank them (1 = next victim)."""

    name: str
    capacity: int
    online: bool  # False: access() needs next-use times (the future)

    def access(self, keys: np.ndarray, next_use: np.ndarray | None = None) -> np.ndarray: ...

    # counted observation: distinct keys, each read counts[i] times; misses per key
    def access_counted(self, keys: np.ndarray, counts: np.ndarray,
                       next_use: np.ndarray | None = None) -> np.ndarray: ...

    def contains(self, keys: np.ndarray) -> np.ndarray: ...

    def insert(self, keys: np.ndarray, next_use: np.ndarray | None = None) -> int: ...

    def remove(self, keys: np.ndarray) -> int: ...

    def scores(self, keys: np.ndarray) -> np.ndarray: ...

    def resident(self) -> np.ndarray: ...

    def access_two(self, pf: CachePolicy | None, keys: np.ndarray,
                   next_use: np.ndarray | None = None) -> np.ndarray: ...

    def state_bytes(self) -> int: ...

    def status(self) -> dict | None: ...


@runtime_checkable
class Prefetcher(Protocol):
    """Sees a window's keys and its on-demand misses; proposes distinct keys, best first
    (the engine drops resident ones and keeps ``budget``).  ``resident``: the engine's
    predicate on keys (in fast memory or already prefetched), for a prefetcher that
    wants to choose among the others."""

    name: str
    budget: int
    needs_future: bool  # the oracle: observe() takes the next window's keys
    prefetches: bool  # False: proposes nothing (the engine keeps no buffer, calls nothing)

    def observe(self, keys: np.ndarray, misses: np.ndarray,
                future: np.ndarray | None = None, resident=None) -> np.ndarray: ...

    def state_bytes(self) -> int: ...

    def status(self) -> dict | None: ...

    def share_features(self, features) -> None: ...


class Planner(Protocol):
    """A pure function from page scores to page moves (recmg.engine.planner.plan)."""

    def __call__(self, placement: np.ndarray, scores: np.ndarray, fast_nodes: list[int],
                 slow_nodes: list[int], *, budget_pages: int, rate_pages: int,
                 last_moved: np.ndarray, tick: int, min_residency_ticks: int,
                 allow_promote: bool = True, unwanted_ticks: np.ndarray | None = None,
                 ids: np.ndarray | None = None) -> Plan: ...


@runtime_checkable
class Mover(Protocol):
    """Applies page moves of one target (recmg.movers)."""

    name: str
    real: bool  # real pages move: the host's safety brakes apply
    ideal: bool  # instant placement: nothing to plan or move

    def locate(self, pid: int, pages: Layout, idx: np.ndarray, slow: int) -> np.ndarray: ...

    def apply(self, pid: int, pages: Layout, idx: np.ndarray, node: int,
              placement: np.ndarray, deadline: float) -> Outcome: ...


@dataclass(frozen=True)
class Controls:
    """What the caller allows this step (the daemon's pause and safety brakes)."""

    tick: int = 0  # the caller's tick number: hysteresis counts in it
    plan: bool = True  # False (paused): observe only, plan and move nothing
    allow_promote: bool = True  # False: a brake allows demotions only
    # True: the fast pages held may not grow; promotions only into the room this step's
    # own demotions free (a fast node answered ENOMEM: swaps keep the hot set current)
    no_growth: bool = False
    allow_moves: bool = True  # False: a brake stops every move (the plan is still made)
    deadline: object = None  # () -> monotonic time at which moving must stop


@dataclass(frozen=True)
class StepResult:
    """What one step did (counts for this step only)."""

    accesses: int = 0
    hits: int = 0  # accesses whose unit was in fast memory when read
    ondemand: int = 0  # distinct units per batch read from slow memory
    prefetch_issued: int = 0
    promoted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    demoted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pingpong: int = 0
    refused_by_admission: int = 0  # promotions not hotter than the page they displace
    cut_by_rate: int = 0
    deadline_hit: bool = False
    errors: dict = field(default_factory=dict)  # errno name -> pages
    moved_bytes: int = 0
