"""Guest tests (marker `guest`) run only inside the two-node guest that the harness
boots (RECMG_IN_GUEST=1); host tests (marker `vm`) boot that guest."""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    in_guest = os.environ.get("RECMG_IN_GUEST") == "1"
    skip = pytest.mark.skip(reason="needs the two-node guest: run `make vm-test`")
    for item in items:
        if "guest" in item.keywords and not in_guest:
            item.add_marker(skip)
