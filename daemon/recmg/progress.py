"""Progress bars for long offline work (sim, trace conversion): tqdm on stderr.

tqdm comes with the `daemon` extra; the light client install has no long work to
report, and without tqdm (or with ``enabled=False``, or stderr not wanted) the bar
does nothing.
"""

from __future__ import annotations

import sys


class _Null:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def bar(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True):
    """A progress bar with update(n), set_postfix_str(s), close() and `with` support."""
    if not enabled:
        return _Null()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Null()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                leave=True)
