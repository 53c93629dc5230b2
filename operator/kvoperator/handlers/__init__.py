"""kopf handlers. Importing this package registers them all with kopf's default registry."""

from kvoperator.handlers import child_events, kvbackup, kvstore, startup

__all__ = ["child_events", "kvbackup", "kvstore", "startup"]
