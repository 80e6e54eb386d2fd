"""recmg: a memory-tiering daemon for DLRM inference on tiered memory (RecMG)."""

__version__ = "0.1.0"
