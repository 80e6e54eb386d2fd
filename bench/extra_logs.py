"""The logs the result benches read besides the synthetic presets: the Criteo and
Avazu excerpts in ../shared/real_traces where present (research use only: read there,
never committed) and any --trace FILE.rtrace given.  A module the benches import; run
alone it does nothing."""

from __future__ import annotations

from pathlib import Path

from recmg.trace import format as tf
from recmg.trace import readers

EXCERPTS = (("criteo", readers.read_criteo, "criteo_kaggle_train_first10k.tsv"),
            ("avazu", readers.read_avazu, "avazu_train_first8999.csv"))


def loaders(shared: str | Path, extra: list[str]) -> list[tuple[str, object]]:
    """(name, () -> Trace) for each excerpt present and each extra .rtrace file."""
    rt = Path(shared) / "real_traces"
    out = [(name, lambda f=f, reader=reader: reader(rt / f))
           for name, reader, f in EXCERPTS if (rt / f).exists()]
    return out + [(Path(p).stem, lambda p=p: tf.read(p)) for p in extra]


def half(trace: tf.Trace, second: bool) -> tf.Trace:
    """The first or the second half of a trace's batches (a time split)."""
    nb = trace.n_batches
    return trace.batches(nb // 2, nb) if second else trace.batches(0, nb // 2)
