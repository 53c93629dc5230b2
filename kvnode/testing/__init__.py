"""Helpers for tests, benchmarks and chaos runs that need real kvnode processes."""
