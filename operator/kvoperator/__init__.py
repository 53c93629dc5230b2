"""kvoperator: the Kubernetes operator for kvstore (``KVStore`` and ``KVBackup`` resources).

Run it with ``kvstore-operator`` (see docs/operator.md).
"""

__version__ = "0.1.0"
