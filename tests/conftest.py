"""Shared fixtures."""

import pytest

from recmg.experiments.pagedemo import RegionChild


@pytest.fixture
def region_child():
    """A live child process owning 8 MiB of filled memory (THP off)."""
    with RegionChild(8, thp=False) as child:
        yield child
