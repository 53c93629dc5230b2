"""The Python client for a kvnode cluster.

    from kvnode.client import KVClient

    with KVClient("127.0.0.1:7000,127.0.0.1:7001") as kv:
        kv.put("greeting", "hello")
        entry = kv.get("greeting")          # Entry(key=b"greeting", value=b"hello", version=...)

:class:`AsyncKVClient` is the asyncio twin. Errors are the types in :mod:`kvnode.core.errors`,
re-exported here. See docs/client.md.
"""

from kvnode.client.admin import AsyncAdmin, EndpointStatus
from kvnode.client.aio import AsyncKVClient
from kvnode.client.credentials import Credentials
from kvnode.client.retry import RetryPolicy
from kvnode.client.sync import Admin, KVClient
from kvnode.client.types import (
    Attempt,
    ClientClosed,
    ConsistencyLike,
    DeleteResult,
    Entry,
    KeyLike,
    PutResult,
    ScanPage,
    WriteResult,
)
from kvnode.core.errors import (
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    KVError,
    NotFound,
    PermissionDenied,
    StorageError,
    StorageFull,
    Unauthenticated,
    Unavailable,
)
from kvnode.core.levels import Level
from kvnode.core.records import Version

__all__ = [
    "Admin",
    "AsyncAdmin",
    "AsyncKVClient",
    "Attempt",
    "ClientClosed",
    "ConsistencyLike",
    "Credentials",
    "DataLoss",
    "DeadlineExceeded",
    "DeleteResult",
    "EndpointStatus",
    "Entry",
    "FailedPrecondition",
    "InvalidArgument",
    "KVClient",
    "KVError",
    "KeyLike",
    "Level",
    "NotFound",
    "PermissionDenied",
    "PutResult",
    "RetryPolicy",
    "ScanPage",
    "StorageError",
    "StorageFull",
    "Unauthenticated",
    "Unavailable",
    "Version",
    "WriteResult",
]
