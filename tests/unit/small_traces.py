"""Small synthetic traces for the learned models' tests (imported by them)."""

from pathlib import Path

from recmg.trace import synthetic

ROOT = Path(__file__).resolve().parents[2]


def small(seed, batches=8):
    """A 2% meta2021-small trace: quick to label and train on."""
    return synthetic.trace(synthetic.preset("meta2021-small", 0.02, seed=seed), batches)
