"""The registries, one per role, in one place for help texts and docs.

Each role maps config names to classes: caching policies (profile ``caching``,
``recmg sim --policies``), prefetchers (profile ``prefetcher``, ``--prefetchers``) and
movers (``migration.backend``).  ``recmg sim --help``, ``recmgctl policy list`` and
the tables in docs/policies.md are generated from here
(``python -m recmg.engine.registry --update docs/policies.md``; a test checks the doc).
"""

from __future__ import annotations

import sys

from recmg.engine.policy.cache import CACHE_POLICIES
from recmg.engine.policy.learned import Learned
from recmg.engine.policy.learned_prefetch import LearnedPrefetcher
from recmg.engine.policy.prefetch import PREFETCHERS
from recmg.engine.policy.sequence_prefetch import ArtifactPrefetch, DeltaLSTM, Voyager
from recmg.movers import MOVERS

ROLES = {"caching": {**CACHE_POLICIES, Learned.name: Learned},
         "prefetcher": {**PREFETCHERS, **{c.name: c for c in (
             LearnedPrefetcher, DeltaLSTM, Voyager, ArtifactPrefetch)}},
         "mover": MOVERS}
BEGIN, END = "<!-- registry: generated, do not edit -->", "<!-- registry: end -->"


def _summary(cls) -> str:
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


def online(role: str, cls) -> bool:
    """Whether recmgd can run it (offline ones need the future: simulator only)."""
    if role == "caching":
        return cls.online
    if role == "prefetcher":
        return not cls.needs_future
    return not cls.ideal


def needs_model(role: str, name: str) -> bool:
    """Whether ``name`` runs an ONNX model (profile key ``model`` for caching,
    ``prefetch_model`` for a prefetcher)."""
    cls = ROLES[role].get(name)
    return bool(getattr(cls, "needs_model", False))


def names(role: str, daemon_only: bool = False) -> list[str]:
    return [n for n, c in ROLES[role].items() if not daemon_only or online(role, c)]


def check(role: str, name: str, daemon_only: bool = False) -> str | None:
    """None if ``name`` is a known (and, for the daemon, online) ``role``; else the
    problem, listing the known names."""
    known = names(role, daemon_only)
    if name in known:
        return None
    why = " (simulator only: it needs the future)" if name in ROLES[role] else ""
    return f"unknown {role} {name!r}{why}; known: {', '.join(known)}"


def help_text(role: str) -> str:
    """One line per entry for argparse help."""
    return "; ".join(f"{n}{'' if online(role, c) else ' (sim only)'}"
                     for n, c in ROLES[role].items())


def rows(role: str) -> list[tuple[str, str, str]]:
    offline = "no (simulator only)" if role == "mover" else "no (needs the future)"
    return [(n, "yes" if online(role, c) else offline, _summary(c))
            for n, c in ROLES[role].items()]


def markdown() -> str:
    out = [BEGIN]
    for role in ROLES:
        out += ["", f"**{role}** (`recmg.engine.registry.ROLES[{role!r}]`)", "",
                "| name | recmgd | what it does |", "|---|---|---|"]
        out += [f"| `{n}` | {d} | {s} |" for n, d, s in rows(role)]
    return "\n".join(out + ["", END])


def update(path: str) -> bool:
    """Rewrite the generated block of a doc; True if it changed."""
    with open(path) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path}: no generated registry block ({BEGIN} ... {END})")
    new = text[:text.index(BEGIN)] + markdown() + text[text.index(END) + len(END):]
    if new != text:
        with open(path, "w") as f:
            f.write(new)
    return new != text


if __name__ == "__main__":
    if sys.argv[1:2] == ["--update"] and len(sys.argv) == 3:
        print("updated" if update(sys.argv[2]) else "up to date")
    else:
        print(markdown())
