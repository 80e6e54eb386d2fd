"""What the daemon runs of the learned models every tick: the ONNX runner and its
cards (``card``), online features (``features``), prefetch candidates
(``candidates``) and sequence tokens (``sequence``).  Training is in recmg.training,
which imports this, never the reverse."""
