"""The planner: a pure function from page scores to page moves.

Inputs are arrays over a target's pages (global page index = position): where each
page is now, each page's score (its value in fast memory: higher is more valuable,
> 0 means wanted there, 0 not), and when each page last moved.  Output is which pages
to demote and which to promote this tick, most valuable promotions first and least
valuable demotions first, within:

- the target's fast-memory budget (pages), demoting pages the policy no longer wants
  to make room, and never keeping more promotions than the room left;
- the rate cap (pages this tick, demotions first: they free the room);
- hysteresis: a page that moved fewer than ``min_residency_ticks`` ago stays put,
  which damps ping-pong;
- safety: ``allow_promote=False`` (free-memory floor or pressure) plans demotions only;
- admission (when ``heat`` is given): a promotion that needs room is kept only if the
  page is hotter than the fast page it displaces (TinyLFU's rule, Einziger et al.,
  ToS 2017): promotions hottest first are paired with demotions coldest first, and
  the pairs where the newcomer is not hotter are dropped, so a recency policy's
  eviction of a warm page for a colder one does not become two moves.

Ties (equal scores) are broken by a fixed pseudo-random order of page indices
(splitmix64 of the index), so no address range is favoured under the rate cap or the
budget.  No clock, no syscalls: golden tests pin its output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNKNOWN = -1  # page not present yet (never touched) or not queried


@dataclass(frozen=True)
class Plan:
    promote: np.ndarray  # page indices, to ``fast_node``
    demote: np.ndarray  # page indices, to ``slow_node``
    fast_node: int
    slow_node: int
    held_by_hysteresis: int = 0
    cut_by_budget: int = 0
    cut_by_rate: int = 0
    blocked_promotions: int = 0  # safety said no promotions
    refused_by_admission: int = 0  # wanted, but not hotter than the page it displaces

    def to_dict(self) -> dict:
        return {"promote": self.promote.tolist(), "demote": self.demote.tolist(),
                "fast_node": self.fast_node, "slow_node": self.slow_node,
                "held_by_hysteresis": self.held_by_hysteresis,
                "cut_by_budget": self.cut_by_budget, "cut_by_rate": self.cut_by_rate,
                "blocked_promotions": self.blocked_promotions,
                "refused_by_admission": self.refused_by_admission}


def tie_order(pages: np.ndarray) -> np.ndarray:
    """splitmix64 of each page index: the planner's tie-break among equal scores."""
    with np.errstate(over="ignore"):
        z = pages.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _by_value(pages: np.ndarray, scores: np.ndarray, descending: bool,
              ids: np.ndarray | None = None) -> np.ndarray:
    """pages sorted by score (descending: most valuable first), ties by tie_order of
    their ids (the positions themselves unless ``ids`` maps positions to pages)."""
    s = scores[pages]
    tie = tie_order(pages if ids is None else ids[pages])
    return pages[np.lexsort((tie, -s if descending else s))]


def plan(placement: np.ndarray, scores: np.ndarray, fast_nodes: list[int],
         slow_nodes: list[int], *, budget_pages: int, rate_pages: int,
         last_moved: np.ndarray, tick: int, min_residency_ticks: int,
         allow_promote: bool = True, unwanted_ticks: np.ndarray | None = None,
         ids: np.ndarray | None = None, heat: np.ndarray | None = None) -> Plan:
    """placement: int node per page (UNKNOWN allowed); scores: float per page (a bool
    wanted-mask also works: True scores 1).  unwanted_ticks: for how many consecutive
    ticks each page has been outside the wanted set; a fast page is demoted only after
    ``min_residency_ticks`` of them, so a page that flickers at the policy's margin
    stays put (hysteresis on the decision, not only on the last move).  ``ids``: the
    page index of each position, when the arrays hold a subset of a target's pages
    (recmg.engine.pagemap); ties are broken by page index either way, and the plan
    names positions.  ``heat``: each page's decayed access count, for the admission
    test; None: no test."""
    fast_node, slow_node = fast_nodes[0], slow_nodes[0]
    scores = np.asarray(scores, np.float64)
    want_fast = scores > 0
    is_fast = np.isin(placement, fast_nodes)
    eligible = (tick - last_moved) >= min_residency_ticks
    settled = eligible if unwanted_ticks is None else \
        eligible & (unwanted_ticks >= min_residency_ticks)
    promote = _by_value(np.flatnonzero(want_fast & ~is_fast & eligible), scores, True, ids)
    want_but_held = int(np.count_nonzero(want_fast & ~is_fast & ~eligible))
    candidates = _by_value(np.flatnonzero(is_fast & ~want_fast & settled), scores, False,
                           ids)
    held = want_but_held + int(np.count_nonzero(is_fast & ~want_fast & ~settled))
    blocked = 0
    if not allow_promote:
        blocked, promote = len(promote), promote[:0]
    n_fast = int(np.count_nonzero(is_fast))
    refused = 0
    if heat is not None and len(promote):
        promote, candidates, refused = _admit(promote, candidates, heat,
                                              budget_pages - n_fast)
    # room: demote unwanted fast pages only as far as the budget needs
    need = max(0, n_fast + len(promote) - budget_pages)
    demote = candidates[:need]
    cut_budget = 0
    room = budget_pages - (n_fast - len(demote))
    if len(promote) > room:
        cut_budget = len(promote) - max(room, 0)
        promote = promote[:max(room, 0)]
    # over budget already (e.g. budget lowered): demote the rest of the unwanted pages
    if n_fast - len(demote) > budget_pages:
        demote = candidates[:n_fast - budget_pages]
    # rate: demotions first, then promotions
    cut_rate = 0
    if len(demote) > rate_pages:
        cut_rate += len(demote) - rate_pages
        demote = demote[:rate_pages]
    left = rate_pages - len(demote)
    if len(promote) > left:
        cut_rate += len(promote) - left
        promote = promote[:left]
    return Plan(promote=promote, demote=demote, fast_node=fast_node, slow_node=slow_node,
                held_by_hysteresis=held, cut_by_budget=cut_budget, cut_by_rate=cut_rate,
                blocked_promotions=blocked, refused_by_admission=refused)


def _admit(promote: np.ndarray, candidates: np.ndarray, heat: np.ndarray,
           free: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Admission: (promotions kept, demotion candidates, how many refused).  The
    ``free`` hottest promotions take free room; the rest, hottest first, are paired
    with the candidates coldest first, and a pair stands only where the promotion is
    hotter.  Both orders are stable sorts of the policy's order, so equal heat keeps
    the policy's preference; hotter-first against colder-first makes the pairs that
    stand a prefix."""
    promote = promote[np.argsort(-heat[promote], kind="stable")]
    candidates = candidates[np.argsort(heat[candidates], kind="stable")]
    free = max(free, 0)
    rest = promote[free:]
    k = min(len(rest), len(candidates))
    wins = heat[rest[:k]] > heat[candidates[:k]]
    if wins.all():  # every pair stands; any rest finds no room (the budget cuts it)
        return promote, candidates, 0
    kept = free + int(np.argmin(wins))
    return promote[:kept], candidates, len(promote) - kept
