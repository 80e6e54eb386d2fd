"""recmgd's configuration -> an engine (the one place that reads a Config for it).

recmgd's pipeline and ``recmg sim --config`` both build their engines here, so a
replay runs exactly the configuration the daemon runs.
"""

from __future__ import annotations

from dataclasses import replace


from recmg.config import Config, Profile
from recmg import registry
from recmg.engine.layout import Layout
from recmg.engine.policy import cache as cache_mod
from recmg.engine.policy import prefetch as pf_mod
from recmg.engine.step import Engine, EngineConfig
from recmg.movers import Migrator


def budget_pages(cfg: Config, layout: Layout, override: int | None = None) -> int:
    """The target's fast-memory budget in pages (at least 1, at most its pages)."""
    b = override or max(1, cfg.budget.fast_mib_per_target * (1 << 20) // layout.page_size)
    return max(1, min(b, layout.n_pages))


def planned_config(cfg: Config, profile: Profile, layout: Layout, real: bool,
                   override: int | None = None) -> EngineConfig:
    """recmgd's engine configuration: pages, every access observed (the profile's
    ``observe``: in order, or counted per distinct page of a batch), planned moves;
    stall is modelled only where the mover does not move real pages."""
    mig = cfg.migration
    rate = int(mig.rate_mib_s * (1 << 20) * cfg.tick_ms / 1000 // layout.page_size)
    return EngineConfig(
        granularity="page", observe=profile.observe, observe_max=profile.prefetch_observe_max,
        # prefetched pages stay wanted until read or pushed out by newer prefetches
        prefetch_buffer=(profile.prefetch_budget_pages if registry.prefetches(profile.prefetcher)
                         else 0),
        budget=budget_pages(cfg, layout, override), rate_pages=max(rate, 1),
        min_residency_ticks=mig.min_residency_ticks,
        admission_half_life=profile.admission_half_life_accesses,
        tracked_pages=cfg.target.max_tracked_pages,
        stall_ns_per_ondemand=0.0 if real else mig.simulated_slow_ns - mig.simulated_fast_ns)


def make_cache(profile: Profile, budget: int, layout: Layout | None = None) -> cache_mod.Cache:
    if registry.needs_model("caching", profile.caching):
        # features for at most every page of the target (a small table stays in cache)
        keys = min(1 << 22, max(1024, layout.n_pages)) if layout is not None else 1 << 22
        return cache_mod.make(profile.caching, budget, model=profile.model, max_feature_keys=keys,
                              threads=profile.model_threads,
                              check_window=profile.model_check_window,
                              accuracy_floor=profile.model_accuracy_floor,
                              fallback_windows=profile.model_fallback_windows,
                              fetch_margin=profile.model_fetch_margin,
                              fallback=profile.model_fallback,
                              fallback_aging=profile.lfu_aging_accesses)
    return cache_mod.make(profile.caching, budget, aging=profile.lfu_aging_accesses)


def make_prefetcher(profile: Profile, layout: Layout, budget: int) -> pf_mod.Prefetcher:
    """The profile's prefetcher over the target's pages, per table (``budget``: the
    target's fast pages)."""
    kw = {}
    if registry.needs_model("prefetcher", profile.prefetcher):
        kw = {"model": profile.prefetch_model, "threads": profile.model_threads,
              "max_feature_keys": min(1 << 22, max(1024, layout.n_pages)),
              "capacity": budget, "max_candidates": profile.prefetch_candidates}
    return pf_mod.make(profile.prefetcher, layout.pages_per_table(),
                       budget=profile.prefetch_budget_pages, **kw)


FALLBACK_CACHING = "s3fifo"  # what serves when a learned caching model cannot


def without_models(profile: Profile) -> Profile:
    """The profile with each role that needs a model replaced by a policy that needs
    none (caching: S3-FIFO; prefetcher: none): what a target runs when its model fails
    to load or run, rather than being rejected."""
    changes = {}
    if registry.needs_model("caching", profile.caching):
        changes.update(caching=FALLBACK_CACHING, model="")
    if registry.needs_model("prefetcher", profile.prefetcher):
        changes.update(prefetcher="none", prefetch_model="", prefetch_budget_pages=0)
    return replace(profile, **changes)


def planned(cfg: Config, profile: Profile, layout: Layout, mover: Migrator,
            fast: list[int], slow: list[int], pid: int = 0,
            override: int | None = None) -> Engine:
    ec = planned_config(cfg, profile, layout, mover.real, override)
    cache, pre = make_cache(profile, ec.budget, layout), make_prefetcher(profile, layout,
                                                                         ec.budget)
    _share(cache, pre)
    return Engine(ec, cache, pre,
                  mover,
                  layout=layout, fast=fast, slow=slow, pid=pid)


def _share(cache, pre) -> None:
    """Both learned: the prefetcher reads the caching policy's features (recmgd feeds
    both every access of the target, in order) instead of computing them again; with
    another caching policy, or one that observes counted (its features are not the
    prefetch model's), it keeps its own."""
    counted = getattr(cache, "counted", False)
    pre.share_features(None if counted else getattr(cache, "features", None))


def reconfigure(engine: Engine, old: Profile, cfg: Config, profile: Profile,
                override: int | None = None) -> None:
    """Reload: swap the configuration; keep learned state that still fits (the cache
    when its policy, budget and aging are unchanged, with the new model where only
    the model changed; the prefetcher when its name and model are)."""
    ec = planned_config(cfg, profile, engine.layout, engine.mover.real, override)
    kept = lambda p, budget: (p.caching, p.lfu_aging_accesses, p.model_fallback,  # noqa: E731
                              budget)
    same_cache = kept(old, engine.cfg.budget) == kept(profile, ec.budget) and \
        old.model == profile.model
    if not same_cache and kept(old, engine.cfg.budget) == kept(profile, ec.budget) and \
            hasattr(engine.cache, "use_model"):  # only the model changed: keep the cache
        same_cache = engine.cache.use_model(profile.model, profile.model_threads)
    cache = None if same_cache else make_cache(profile, ec.budget, engine.layout)
    same_pre = (old.prefetcher, old.prefetch_model, old.prefetch_candidates) == (
        profile.prefetcher, profile.prefetch_model, profile.prefetch_candidates)
    pre = None if same_pre else make_prefetcher(profile, engine.layout, ec.budget)
    if cache is not None or pre is not None:  # (not `or`: an empty cache is falsy)
        _share(engine.cache if cache is None else cache,
               engine.prefetcher if pre is None else pre)
    engine.reconfigure(ec, cache, pre, prefetch_budget=profile.prefetch_budget_pages)
