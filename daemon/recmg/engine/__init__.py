"""The decision engine: one step from batches of vector keys to placement changes.

client -> capture -> **engine** (policy, planner) -> movers.  recmgd's worker and every
``recmg sim`` mode run the same ``recmg.engine.step.Engine`` with different parts
plugged in (docs/architecture.md): a source (a capture ring or a trace), a caching
policy and a prefetcher from their registries, and a mover (move_pages, the simulated
tier, a dry run, or ideal instant placement).  Stage contracts are in
``recmg.engine.contracts``; the registries in ``recmg.registry``.
"""
