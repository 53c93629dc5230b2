"""kopf handlers. Importing this package registers them all with kopf's default registry."""

from kvoperator.handlers import kvbackup, kvstore, pods, startup

__all__ = ["kvbackup", "kvstore", "pods", "startup"]
