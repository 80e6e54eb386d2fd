"""The planner's golden cases: scores, budget, hysteresis, rate cap, safety."""

import numpy as np
import pytest

from recmg.engine.planner import UNKNOWN, plan

FAST, SLOW = [0], [1]


def run(placement, want, budget=4, rate=100, last=None, tick=10, residency=0, promote=True):
    placement = np.array(placement)
    return plan(placement, np.array(want, float), FAST, SLOW, budget_pages=budget,
                rate_pages=rate, last_moved=np.zeros(len(placement), np.int64)
                if last is None else np.array(last), tick=tick,
                min_residency_ticks=residency, allow_promote=promote)


@pytest.mark.parametrize("case", [
    # placement, scores (> 0 wanted), budget, rate -> promote (in order), demote (as a set:
    # unwanted pages all score 0 and go in the tie order)
    dict(p=[1, 1, 1, 1], w=[1, 2, 0, 0], b=4, r=100, promote=[1, 0], demote=[]),
    # full fast tier: demote only as many unwanted pages as the budget needs
    dict(p=[0, 0, 0, 1, 1], w=[0, 1, 1, 1, 0], b=3, r=100, promote=[3], demote=[0]),
    # unwanted fast pages stay while there is room (no needless moves)
    dict(p=[0, 0, 1], w=[0, 0, 1], b=3, r=100, promote=[2], demote=[]),
    # rate cap: demotions first, then the most valuable promotion
    dict(p=[0, 0, 1, 1], w=[0, 0, 1, 2], b=2, r=3, promote=[3], demote=[0, 1]),
    # over budget (budget lowered): demote down to it
    dict(p=[0, 0, 0, 0], w=[1, 0, 0, 0], b=1, r=100, promote=[], demote=[1, 2, 3]),
    # pages never touched (UNKNOWN) can be promoted
    dict(p=[UNKNOWN, 1], w=[1, 0], b=2, r=100, promote=[0], demote=[]),
])
def test_golden_plans(case):
    p = run(case["p"], case["w"], case["b"], case["r"])
    assert p.promote.tolist() == case["promote"] and sorted(p.demote.tolist()) == case["demote"]
    assert (p.fast_node, p.slow_node) == (0, 1)


def test_cut_counts():
    p = run([1] * 6, [1] * 6, budget=4, rate=2)
    assert p.cut_by_budget == 2 and p.cut_by_rate == 2 and len(p.promote) == 2


def test_hysteresis_holds_recently_moved_pages():
    p = run([0, 1, 1], [0, 1, 1], budget=2, last=[9, 9, 0], tick=10, residency=5)
    # page 0 (fast, unwanted) and page 1 (slow, wanted) moved 1 tick ago: held
    assert p.promote.tolist() == [2] and p.demote.tolist() == [] and p.held_by_hysteresis == 2


def test_safety_blocks_promotions_but_not_demotions():
    p = run([0, 0, 1], [0, 0, 1], budget=1, promote=False)
    assert p.promote.tolist() == [] and len(p.demote) == 1 and p.demote[0] in (0, 1)
    assert p.blocked_promotions == 1


def test_plan_to_dict_is_json_ready():
    d = run([1], [1]).to_dict()
    assert d["promote"] == [0] and d["cut_by_rate"] == 0


def test_decision_hysteresis_keeps_pages_that_flicker_out_of_the_wanted_set():
    # page 0 is fast and unwanted for 1 tick only; page 1 for 5 ticks: only 1 goes
    p = plan(np.array([0, 0, 1]), np.array([0, 0, 1], bool), FAST, SLOW, budget_pages=2,
             rate_pages=100, last_moved=np.zeros(3, np.int64), tick=100,
             min_residency_ticks=3, unwanted_ticks=np.array([1, 5, 0]))
    assert p.demote.tolist() == [1] and p.promote.tolist() == [2]


def test_most_valuable_pages_are_promoted_first_under_the_rate_cap():
    """With more wanted pages than the rate allows, the highest scores move first,
    not the lowest page numbers (a learned model's scores decide)."""
    scores = np.array([0.1, 5, 0.2, 9, 0, 7, 0.3, 8], float)
    p = run([1] * 8, scores, budget=8, rate=3)
    assert p.promote.tolist() == [3, 7, 5]


def test_ties_are_broken_by_a_fixed_pseudo_random_order_not_by_page_index():
    n = 2000
    p = run([0] * n, np.zeros(n), budget=n - 100, rate=10_000)  # demote 100 of 2000 ties
    assert len(p.demote) == 100
    assert 600 < p.demote.mean() < 1400  # the lowest indices would average 49.5
    assert np.array_equal(run([0] * n, np.zeros(n), budget=n - 100).demote, p.demote)


def test_admission_trades_a_fast_page_only_for_a_hotter_one():
    # fast pages 0, 1 (unwanted now, heat 5 and 1); slow pages 2, 3, 4 wanted (heat 9,
    # 3, 0.5); budget 2, full.  Hottest newcomer first against coldest resident first:
    # 9 > 1 stands, 3 > 5 does not, so one swap; without heat, two.
    placement, want = np.array([0, 0, 1, 1, 1]), np.array([0, 0, 3, 2, 1], float)
    heat = np.array([5, 1, 9, 3, 0.5])
    kw = dict(budget_pages=2, rate_pages=100, last_moved=np.zeros(5, np.int64), tick=10,
              min_residency_ticks=0)
    p = plan(placement, want, FAST, SLOW, heat=heat, **kw)
    assert p.promote.tolist() == [2] and p.demote.tolist() == [1]
    assert p.refused_by_admission == 2
    free = plan(placement, want, FAST, SLOW, **kw)
    assert sorted(free.promote.tolist()) == [2, 3] and sorted(free.demote.tolist()) == [0, 1]
    # free room admits without a test, hottest first
    p = plan(np.array([1, 1, 0]), np.array([1, 1, 0], float), FAST, SLOW,
             heat=np.array([0.0, 2.0, 7.0]), **{**kw, "budget_pages": 2,
                                                 "last_moved": np.zeros(3, np.int64)})
    assert p.promote.tolist() == [1] and p.demote.tolist() == [] \
        and p.refused_by_admission == 1
