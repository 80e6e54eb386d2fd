"""One stats model for recmgd's targets and every simulator run.

Definitions (the same in the daemon and the simulator):
- ``accesses``: vector keys read; ``hits``: those whose unit (vector or page) was in
  fast memory when read (in the paper's access mode: found in the cache or prefetch
  buffer); ``hit_ratio`` = hits / accesses.
- ``ondemand``: on-demand fetches in the mode's own unit: distinct vectors per batch
  read from slow memory (batch mode, daemon mode and recmgd: a vector read from a slow
  page is one fetch, as nothing is brought in on demand), distinct pages per batch
  brought in (page mode), every access found in neither buffer (access mode).
- ``slow_reads``: the one unit every mode reports: distinct vectors per batch read
  from slow memory (access mode: every access found in neither buffer).  In page mode
  it counts the vectors a batch read from the pages it brought in.
- prefetches: ``prefetch_issued``; ``prefetch_useful`` (read while in fast memory
  before the caching policy held it); ``prefetch_late`` (read while still in flight).
- moves (planned placement): ``promoted``, ``demoted`` pages; ``pingpong`` (demoted
  within four hysteresis windows of the promotion); ``bytes_moved``;
  ``refused_by_admission`` (promotions the admission test dropped: not hotter than the
  page they would displace).
- ``stall_ns``: modelled stall (simulated tier or page mode's cost model).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields

_SUMMED = ("batches", "accesses", "hits", "ondemand", "slow_reads", "prefetch_issued",
           "prefetch_useful", "prefetch_late", "promoted", "demoted", "pingpong",
           "refused_by_admission", "bytes_moved", "stall_ns", "dropped_batches",
           "invalid_keys", "seconds")


@dataclass
class Stats:
    batches: int = 0
    accesses: int = 0
    hits: int = 0
    ondemand: int = 0
    slow_reads: int = 0
    prefetch_issued: int = 0
    prefetch_useful: int = 0
    prefetch_late: int = 0
    promoted: int = 0
    demoted: int = 0
    pingpong: int = 0
    refused_by_admission: int = 0
    bytes_moved: int = 0
    stall_ns: float = 0.0
    dropped_batches: int = 0  # capture: batches the client dropped (ring full)
    invalid_keys: int = 0  # capture: keys removed by validation
    seconds: float = 0.0  # wall time spent (simulator runs)
    errors: Counter = field(default_factory=Counter)  # errno name -> pages failed
    per_table_ondemand: dict = field(default_factory=dict)  # table name -> fetches

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.accesses if self.accesses else 0.0

    @property
    def accuracy(self) -> float:
        return self.prefetch_useful / self.prefetch_issued if self.prefetch_issued else 0.0

    @property
    def coverage(self) -> float:
        d = self.prefetch_useful + self.ondemand
        return self.prefetch_useful / d if d else 0.0

    @property
    def timeliness(self) -> float:
        d = self.prefetch_useful + self.prefetch_late
        return self.prefetch_useful / d if d else 0.0

    def add(self, other: Stats) -> None:
        """Add another's counts into this one (a detached target into the totals)."""
        for f in _SUMMED:
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.errors.update(other.errors)
        for k, v in other.per_table_ondemand.items():
            self.per_table_ondemand[k] = self.per_table_ondemand.get(k, 0) + v

    def to_dict(self) -> dict:
        d = asdict(self)
        d["errors"] = dict(self.errors)
        d.update(hit_ratio=self.hit_ratio, accuracy=self.accuracy, coverage=self.coverage,
                 timeliness=self.timeliness)
        return d


assert set(_SUMMED) | {"errors", "per_table_ondemand"} == {f.name for f in fields(Stats)}
