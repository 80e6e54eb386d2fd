"""One tick of one target around an engine step, for recmgd's pipeline and for the
replay (``recmg sim --config``) alike: read from the source, the closed loop (the
rate cap's share and its probe ticks), ingest sampling, thinning to the tick's work
share, and the step under the caller's controls.

The caller keeps what is its own: recmgd its safety brakes, pause, move deadline,
metrics, logs and recordings; the replay its per-tick record.  Whatever the driver
decides is in the ``Tick`` it returns, so both can report it.
"""

from __future__ import annotations

from dataclasses import dataclass

from recmg.capture.reader import AccessBatch
from recmg.engine.contracts import Controls, Source, StepResult
from recmg.engine.feedback import Feedback
from recmg.engine.sampling import Sampler
from recmg.engine.step import Engine


@dataclass(frozen=True)
class Tick:
    """What one target's tick did."""

    batch: AccessBatch  # what was read
    stepped: AccessBatch  # what the engine stepped: the read, thinned to the work share
    thinned: int  # accesses of the read left out of the step
    result: StepResult
    sampling: int | None  # 1 in N asked of the source from now on (None: unchanged)
    verdict: str | None  # the closed loop's ("backoff", "restore"; None: no change)
    probe: bool  # a probe tick of the closed loop: nothing was allowed to move


class TickDriver:
    """The code around one target's engine step.

    ``sampler`` None: the source is not sampled (a recording holds what its client
    recorded already).  The closed loop reads the batch timestamps with the sampling
    they were recorded under (the one in force before this tick's change)."""

    def __init__(self, engine: Engine, sampler: Sampler | None, feedback: Feedback):
        self.engine, self.sampler, self.feedback = engine, sampler, feedback
        self.base_rate = engine.cfg.rate_pages  # the configured rate cap, pages per tick
        self.moved_last = False  # whether the previous tick moved pages

    @property
    def sampling(self) -> int:
        """The source records 1 batch in this many."""
        return self.sampler.one_in if self.sampler is not None else 1

    def reconfigured(self, feedback: Feedback | None = None) -> None:
        """After the engine was reconfigured (reload): its rate cap is the new base;
        ``feedback`` replaces the closed loop where its settings changed."""
        self.base_rate = self.engine.cfg.rate_pages
        if feedback is not None:
            self.feedback = feedback

    def tick(self, source: Source, tick: int, *, max_batches: int | None = None,
             max_keys: int | None = None, want_keys: int | None = None, plan: bool = True,
             allow_promote: bool = True, allow_moves: bool = True,
             no_growth: bool = False, deadline=None) -> Tick:
        """Read, adapt, step.  ``want_keys``: the tick's work share in keys (the read
        stops there, and one larger batch is thinned to it); the rest are the
        caller's controls (pause, brakes, the move deadline)."""
        batch = source.read(max_batches, max_keys, want_keys)
        verdict = self.feedback.before_step(self.engine, self.base_rate, self.moved_last,
                                            batch.timestamps_ns, self.sampling)
        new = None
        if self.sampler is not None:
            new = self.sampler.observe(batch.timestamps_ns, batch.batch_offsets,
                                       batch.batch_ids)
            if new is not None:
                source.set_sampling(new)
        stepped, thinned = batch.thinned(want_keys) if want_keys else (batch, 0)
        probe = self.feedback.probe()
        ctl = Controls(tick=tick, plan=plan, allow_promote=allow_promote,
                       allow_moves=allow_moves and not probe, no_growth=no_growth,
                       deadline=deadline)
        r = self.engine.step(stepped, ctl)
        self.moved_last = bool(len(r.promoted) or len(r.demoted))
        return Tick(batch, stepped, thinned, r, new, verdict, probe)
