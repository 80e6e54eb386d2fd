"""Offline training of the learned models: Belady labels (``labels``), the caching
model (``train``), the prefetch model (``train_prefetch``) and the sequence
prefetchers (``train_sequence``), exported to ONNX with cards.  Needs the ``train``
extra (torch, onnx) for training itself; recmgd never imports it."""
