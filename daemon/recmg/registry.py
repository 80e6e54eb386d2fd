"""The registries, one per role, in one place: which names a config may use, what
each one can do, and where its class lives.

Each role maps config names to entries: caching policies (profile ``caching``,
``recmg sim --policies``), prefetchers (profile ``prefetcher``, ``--prefetchers``) and
movers (``migration.backend``).  An entry names its class by module path and carries
its capabilities (``online``: recmgd can run it; ``needs_model``: it runs an ONNX
model; ``family``: the model family it runs; ``prefetches``: a prefetcher that proposes
keys; ``real``: a mover that moves real pages), so the config layer checks names
without importing any implementation (no C shim, no model runtime, no movers: a test
checks that importing recmg.config loads none of them, and that every entry's
capabilities are its class's).  ``make`` constructs: the only place a name becomes an
object.  ``recmg sim --help``, ``recmgctl policy list`` and the tables in
docs/policies.md are generated from here (``python -m recmg.registry --update
docs/policies.md``; a test checks the doc).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One registered name: where its class is and what it can do."""

    name: str
    where: str  # "module:Class"
    online: bool = True  # recmgd can run it (False: needs the future, or ideal placement)
    needs_model: bool = False  # runs an ONNX model (profile key model / prefetch_model)
    family: str = ""  # the model family it runs ("" : the MLP, or none)
    prefetches: bool = True  # a prefetcher that proposes keys (False: "none")
    real: bool = False  # a mover that moves real pages (the host's safety brakes apply)

    def load(self) -> type:
        module, cls = self.where.split(":")
        return getattr(importlib.import_module(module), cls)


_CACHE, _PF, _MV = "recmg.engine.policy.cache", "recmg.engine.policy.prefetch", "recmg.movers"
_SEQ = "recmg.engine.policy.sequence_prefetch"


def _role(*entries: Entry) -> dict[str, Entry]:
    return {e.name: e for e in entries}


ROLES: dict[str, dict[str, Entry]] = {
    "caching": _role(
        Entry("lru", f"{_CACHE}:LRU"), Entry("lfu", f"{_CACHE}:LFU"),
        Entry("s3fifo", f"{_CACHE}:S3FIFO"), Entry("belady", f"{_CACHE}:Belady", online=False),
        Entry("learned", "recmg.engine.policy.learned:Learned", needs_model=True)),
    "prefetcher": _role(
        Entry("none", f"{_PF}:NoPrefetch", prefetches=False), Entry("nextn", f"{_PF}:NextN"),
        Entry("stride", f"{_PF}:Stride"), Entry("bestoffset", f"{_PF}:BestOffset"),
        Entry("sms", f"{_PF}:SMS"), Entry("bingo", f"{_PF}:Bingo"),
        Entry("stms", f"{_PF}:STMS"), Entry("domino", f"{_PF}:Domino"),
        Entry("isb", f"{_PF}:ISB"), Entry("oracle", f"{_PF}:Oracle", online=False),
        Entry("oracle-seen", f"{_PF}:OracleSeen", online=False),
        Entry("learned", "recmg.engine.policy.learned_prefetch:LearnedPrefetcher",
              needs_model=True),
        Entry("deltalstm", f"{_SEQ}:DeltaLSTM", needs_model=True, family="delta-lstm"),
        Entry("voyager", f"{_SEQ}:Voyager", needs_model=True, family="voyager"),
        Entry("artifact", f"{_SEQ}:ArtifactPrefetch", needs_model=True, family="artifact")),
    "mover": _role(
        Entry("move_pages", f"{_MV}:MovePagesMigrator", real=True),
        Entry("simulated", f"{_MV}:SimulatedMigrator"),
        Entry("dryrun", f"{_MV}:DryRunMigrator"),
        Entry("ideal", f"{_MV}:IdealPlacement", online=False)),
}


def entry(role: str, name: str) -> Entry:
    """The entry of ``name``; an unknown name is a ValueError listing the known ones."""
    known = ROLES[role]
    if name not in known:
        raise ValueError(f"unknown {role} {name!r}; known: {', '.join(known)}")
    return known[name]


def make(role: str, name: str, *args, **kw):
    """Construct the registered ``name`` of ``role`` with the class's arguments."""
    return entry(role, name).load()(*args, **kw)


def _summary(cls) -> str:
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


def online(role: str, name: str) -> bool:
    """Whether recmgd can run it (offline ones need the future: simulator only)."""
    return ROLES[role][name].online


def needs_model(role: str, name: str) -> bool:
    """Whether ``name`` runs an ONNX model (profile key ``model`` for caching,
    ``prefetch_model`` for a prefetcher)."""
    e = ROLES[role].get(name)
    return bool(e and e.needs_model)


def family(role: str, name: str) -> str:
    """The model family ``name`` runs ("" for the MLP or none)."""
    return ROLES[role][name].family


def prefetches(name: str) -> bool:
    """Whether prefetcher ``name`` proposes anything (a buffer is kept for it)."""
    return ROLES["prefetcher"][name].prefetches


def moves_pages(backend: str) -> bool:
    """Whether mover ``backend`` moves real pages (False for a name that is not a
    mover, such as "auto" before it is resolved)."""
    e = ROLES["mover"].get(backend)
    return bool(e and e.real)


def names(role: str, daemon_only: bool = False) -> list[str]:
    return [n for n, e in ROLES[role].items() if not daemon_only or e.online]


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
    return "; ".join(f"{n}{'' if e.online else ' (sim only)'}" for n, e in ROLES[role].items())


def rows(role: str) -> list[tuple[str, str, str]]:
    offline = "no (simulator only)" if role == "mover" else "no (needs the future)"
    return [(n, "yes" if e.online else offline, _summary(e.load()))
            for n, e in ROLES[role].items()]


BEGIN, END = "<!-- registry: generated, do not edit -->", "<!-- registry: end -->"


def markdown() -> str:
    out = [BEGIN]
    for role in ROLES:
        out += ["", f"**{role}** (`recmg.registry.ROLES[{role!r}]`)", "",
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
