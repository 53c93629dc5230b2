"""Backups of a node: snapshots on disk (:mod:`.snapshots`) and the service that takes, checks and
restores them (:mod:`.service`)."""
