"""The learned models' tooling: Belady labels (``labels``), online features
(``features``), and, with the ``train`` extra, training and ONNX export."""
