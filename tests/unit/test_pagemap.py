"""The planned placement's page map: state for the pages met only, bounded, and
forgetting only what changes no decision."""

import numpy as np
import pytest

from recmg.engine.pagemap import NEVER, PageMap, PlacementView


def test_meet_holds_new_pages_sorted_with_their_located_node():
    pm = PageMap(100)
    asked = []

    def locate(pages):
        asked.append(pages.tolist())
        return np.where(pages % 2 == 0, 0, 1)

    pos = pm.meet(np.array([50, 7, 50, 3]), locate, tick=5, unwanted=9)
    assert pm.page.tolist() == [3, 7, 50] and asked == [[3, 7, 50]]
    assert pm.page[pos].tolist() == [50, 7, 50, 3]
    assert pm.node.tolist() == [1, 1, 0] and pm.unwanted.tolist() == [9, 9, 9]
    assert (pm.last_moved == NEVER).all() and (pm.last_met == 5).all()
    pm.meet(np.array([7, 8]), locate, tick=6, unwanted=10)
    assert asked[-1] == [8] and pm.page.tolist() == [3, 7, 8, 50]
    assert pm.positions(np.array([8, 9])).tolist() == [2, -1]
    assert pm.node_of(np.array([50, 9]), default=1).tolist() == [0, 1]


def test_meet_returns_each_pages_position_after_its_inserts():
    """meet derives the positions after inserting new pages (not a second search):
    they must be where positions() finds each page, repeats and all."""
    rng = np.random.default_rng(2)
    pm = PageMap(1 << 20)
    for tick in range(30):
        pages = rng.integers(0, rng.integers(10, 5000), rng.integers(0, 3000))
        pos = pm.meet(pages, lambda p: np.zeros(len(p), np.int16), tick, 0)
        assert np.array_equal(pos, pm.positions(pages)) and (pos >= 0).all()
        assert np.array_equal(pm.page[pos], pages)
        assert (np.diff(pm.page) > 0).all() and (pm.last_met[pos] == tick).all()


def test_heat_stays_with_its_page_through_inserts_and_trims():
    pm = PageMap(3)
    pm.meet(np.array([10, 30]), lambda p: np.ones(len(p)), tick=0, unwanted=100)
    pm.heat[:] = [1.5, 3.0]
    pm.meet(np.array([20, 5]), lambda p: np.ones(len(p)), tick=1, unwanted=100)
    assert pm.page.tolist() == [5, 10, 20, 30] and pm.heat.tolist() == [0, 1.5, 0, 3.0]
    pm.last_met[:] = [0, 5, 5, 5]  # page 5 was met longest ago: forgotten
    assert pm.trim([0], tick=10, residency=1) == 1
    assert pm.page.tolist() == [10, 20, 30] and pm.heat.tolist() == [1.5, 0, 3.0]


def test_trim_forgets_only_pages_whose_state_is_that_of_a_page_never_met():
    pm = PageMap(3)
    pm.meet(np.arange(6), lambda p: np.ones(len(p)), tick=0, unwanted=100)
    pm.last_met[:] = [5, 4, 3, 2, 1, 0]
    pm.node[0] = 0  # fast: kept
    pm.unwanted[1] = 0  # wanted: kept
    pm.last_moved[2] = 9  # moved within the hysteresis window: kept
    assert pm.trim([0], tick=10, residency=3) == 3
    assert pm.page.tolist() == [0, 1, 2] and pm.forced == 0
    pm.meet(np.array([10]), lambda p: np.ones(len(p)), tick=11, unwanted=0)
    assert pm.trim([0], tick=11, residency=3) == 1  # nothing like new: a slow one forced
    assert pm.forced == 1 and 0 in pm.page.tolist()  # never a fast page


def test_the_placement_view_reads_defaults_and_refuses_writes_to_pages_not_held():
    pm = PageMap(10)
    pm.meet(np.array([4]), lambda p: np.ones(len(p)), tick=0, unwanted=0)
    view = PlacementView(pm, default=1)
    view[np.array([4])] = 0
    assert view[np.array([4, 5])].tolist() == [0, 1]
    with pytest.raises(IndexError):
        view[np.array([5])] = 0
