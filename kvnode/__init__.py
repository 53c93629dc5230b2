"""kvnode: a replicated key-value store node on LMDB, with its client and tools."""

__version__ = "0.1.0"
