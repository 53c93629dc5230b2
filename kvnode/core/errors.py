"""The error types of the store, shared by the server and the client.

Each maps to exactly one gRPC status code. The server raises them and the RPC layer turns them into
that status with the message; the client turns a status back into the same type. So a caller catches
``kvnode.client.Unavailable`` whether it came from its own node or across the network.
"""

from __future__ import annotations

import grpc


class KVError(Exception):
    """Base class; ``code`` is the gRPC status the error travels as."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(KVError):
    """The request is malformed or over a limit. Retrying it cannot succeed."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class Unavailable(KVError):
    """Too few replicas answered, or the node is not serving. Retry, perhaps at another node."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(KVError):
    """The call ran out of time. A write may or may not have been applied."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class StorageFull(KVError):
    """The disk or the configured maximum map size is full. Stored data is intact."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class StorageError(KVError):
    """The storage engine failed for a reason other than space."""

    code = grpc.StatusCode.INTERNAL


class FailedPrecondition(KVError):
    """The node's state does not allow the request, e.g. a stale membership epoch."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class DataLoss(KVError):
    """Stored data failed its checksum and no intact copy could be had. Nothing wrong was served."""

    code = grpc.StatusCode.DATA_LOSS


class NotFound(KVError):
    """A named object (a backup, a member) does not exist. Missing keys are not errors."""

    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(KVError):
    """The node does not know who is calling: no client certificate or bearer token, or an
    unknown token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(KVError):
    """The caller is known, but none of its roles allows the call; the message names the role."""

    code = grpc.StatusCode.PERMISSION_DENIED


class StartupError(Exception):
    """A node cannot start (data dir taken, port in use, bad settings). Not a gRPC error: the
    message is printed for the person who started it."""


_BY_CODE: dict[grpc.StatusCode, type[KVError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        Unavailable,
        DeadlineExceeded,
        StorageFull,
        StorageError,
        FailedPrecondition,
        DataLoss,
        NotFound,
        Unauthenticated,
        PermissionDenied,
    )
}


def from_status(code: grpc.StatusCode, message: str) -> KVError:
    """The error type for a gRPC status; unknown codes become a plain KVError."""
    cls = _BY_CODE.get(code)
    if cls is None:
        err = KVError(f"{code.name}: {message}")
        err.code = code
        return err
    return cls(message)
