"""Benchmarks: scripts that print ratios measured side by side in one run (see bench/README.md)."""
