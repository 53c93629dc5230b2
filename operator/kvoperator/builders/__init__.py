"""Pure functions that build the manifests of a store's child objects (no I/O; unit-tested)."""
