"""Policies, written once for the simulator and the daemon.

Caching policies (``recmg.engine.policy.cache``) keep vectors in the fast tier; prefetchers
(``recmg.engine.policy.prefetch``) propose vectors to bring in.  Registries map the config
names to classes; an unknown name is a configuration error.
"""
