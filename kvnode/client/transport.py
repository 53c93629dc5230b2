"""Sending one call: the RPCs the client knows, and the failover and retry loop every call goes
through.

The loop is written once for every RPC (KV and Admin alike) so that timeouts, retries, failover and
error translation behave the same everywhere, and so that no ``grpc.RpcError`` reaches a caller.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc
from grpc_health.v1 import health_pb2

from kvnode.api.v1 import admin_pb2, kv_pb2, types_pb2
from kvnode.client.channels import ChannelPool, Stubs
from kvnode.client.credentials import Credentials
from kvnode.client.retry import RETRYABLE, RetryPolicy, never_sent, overloaded
from kvnode.client.types import Attempt
from kvnode.core.errors import DeadlineExceeded, KVError, from_status

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True)
class Rpc(Generic[Req, Resp]):
    name: str
    select: Callable[[Stubs], grpc.aio.UnaryUnaryMultiCallable[Req, Resp]]
    write: bool = False
    """Writes are retried only when the retry policy allows it; everything else is idempotent."""


PUT: Rpc[kv_pb2.PutRequest, kv_pb2.PutResponse] = Rpc("Put", lambda s: s.kv.Put, write=True)
GET: Rpc[kv_pb2.GetRequest, kv_pb2.GetResponse] = Rpc("Get", lambda s: s.kv.Get)
DELETE: Rpc[kv_pb2.DeleteRequest, kv_pb2.DeleteResponse] = Rpc("Delete", lambda s: s.kv.Delete, write=True)
SCAN: Rpc[kv_pb2.ScanRequest, kv_pb2.ScanResponse] = Rpc("Scan", lambda s: s.kv.Scan)
BATCH_WRITE: Rpc[kv_pb2.BatchWriteRequest, kv_pb2.BatchWriteResponse] = Rpc(
    "BatchWrite", lambda s: s.kv.BatchWrite, write=True
)
BATCH_GET: Rpc[kv_pb2.BatchGetRequest, kv_pb2.BatchGetResponse] = Rpc("BatchGet", lambda s: s.kv.BatchGet)
HEALTH: Rpc[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse] = Rpc(
    "Health/Check",
    lambda s: s.health.Check,
)
# Admin calls are all safe to repeat (admin.proto says so), so they count as idempotent.
STATUS: Rpc[admin_pb2.StatusRequest, admin_pb2.StatusResponse] = Rpc("Admin/Status", lambda s: s.admin.Status)
GET_MEMBERSHIP: Rpc[admin_pb2.GetMembershipRequest, types_pb2.Membership] = Rpc(
    "Admin/GetMembership", lambda s: s.admin.GetMembership
)
SET_MEMBERSHIP: Rpc[admin_pb2.SetMembershipRequest, admin_pb2.SetMembershipResponse] = Rpc(
    "Admin/SetMembership", lambda s: s.admin.SetMembership
)
JOIN: Rpc[admin_pb2.JoinRequest, admin_pb2.TransferStatus] = Rpc("Admin/Join", lambda s: s.admin.Join)
DECOMMISSION: Rpc[admin_pb2.DecommissionRequest, admin_pb2.TransferStatus] = Rpc(
    "Admin/Decommission", lambda s: s.admin.Decommission
)
RUN_ANTI_ENTROPY: Rpc[admin_pb2.RunAntiEntropyRequest, admin_pb2.RunAntiEntropyResponse] = Rpc(
    "Admin/RunAntiEntropy", lambda s: s.admin.RunAntiEntropy
)
PARTITION_DIGESTS: Rpc[admin_pb2.PartitionDigestsRequest, admin_pb2.PartitionDigestsResponse] = Rpc(
    "Admin/PartitionDigests", lambda s: s.admin.PartitionDigests
)
BACKUP: Rpc[admin_pb2.BackupRequest, admin_pb2.BackupManifest] = Rpc("Admin/Backup", lambda s: s.admin.Backup)
VERIFY_BACKUP: Rpc[admin_pb2.VerifyBackupRequest, admin_pb2.VerifyBackupResponse] = Rpc(
    "Admin/VerifyBackup", lambda s: s.admin.VerifyBackup
)
LIST_BACKUPS: Rpc[admin_pb2.ListBackupsRequest, admin_pb2.ListBackupsResponse] = Rpc(
    "Admin/ListBackups", lambda s: s.admin.ListBackups
)
DELETE_BACKUP: Rpc[admin_pb2.DeleteBackupRequest, admin_pb2.DeleteBackupResponse] = Rpc(
    "Admin/DeleteBackup", lambda s: s.admin.DeleteBackup
)
RESTORE: Rpc[admin_pb2.RestoreRequest, admin_pb2.RestoreResponse] = Rpc(
    "Admin/Restore", lambda s: s.admin.Restore
)


def translate(
    exc: grpc.aio.AioRpcError, address: str, seconds: float, credentials: Credentials | None = None
) -> KVError:
    """The typed error for a failed RPC. Transport failures name the address (and, when TLS is the
    likely cause, say so plainly); errors the node raised keep the node's own message."""
    code = exc.code()
    details = (exc.details() or code.name).replace("\n", " ")
    if never_sent(code, details):
        reason = "connection refused" if "refused" in details.lower() else details
        if "resolv" in details.lower():
            reason = "the name does not resolve"
        elif credentials is not None:
            reason = credentials.explain(details) or reason
        return from_status(code, f"cannot reach {address}: {reason}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return from_status(code, f"{address} did not answer within {seconds:.3g}s")
    if code == grpc.StatusCode.UNAVAILABLE:
        return from_status(code, f"{address}: {details}")
    return from_status(code, details)


Sleep = Callable[[float], Awaitable[None]]
Observer = Callable[[Attempt], None]


class Caller:
    """Runs one call over a list of candidate addresses.

    Each attempt goes to the next candidate. Moving on to an address this call has not tried yet
    happens at once (another node is fresh evidence); coming back to one it already tried waits a
    jittered backoff first. A node that refused the call as overloaded did nothing: the call is
    sent again, writes too, and such tries do not count against the retry policy's attempts, only
    against the call's timeout. While another candidate remains, one attempt gets at most
    ``attempt_timeout`` (default: half the call's timeout), so that one frozen node cannot use up
    the whole budget.
    """

    def __init__(
        self,
        pool: ChannelPool,
        policy: RetryPolicy,
        *,
        timeout: float,
        attempt_timeout: float | None,
        sleep: Sleep,
        observe: Observer,
    ) -> None:
        self.pool = pool
        self.policy = policy
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.sleep = sleep
        self.observe = observe

    async def call(
        self, rpc: Rpc[Req, Resp], request: Req, targets: Sequence[str], *, timeout: float | None = None
    ) -> Resp:
        if not targets:
            raise ValueError("no address to send to")
        budget = self.timeout if timeout is None else timeout
        retry = not rpc.write or self.policy.retry_writes
        cap = self.attempt_timeout if self.attempt_timeout is not None else budget / 2
        deadline = time.monotonic() + budget
        tried: set[str] = set()
        waits = number = counted = 0
        last: KVError | None = None
        while counted < self.policy.attempts:
            number += 1
            address = targets[(number - 1) % len(targets)]
            if address in tried:
                pause = self.policy.delay(waits)
                waits += 1
                if time.monotonic() + pause >= deadline:
                    break
                await self.sleep(pause)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            final = counted + 1 == self.policy.attempts or len(targets) == 1 or not retry
            limit = remaining if final else min(remaining, cap)
            tried.add(address)
            started = time.monotonic()
            try:
                response = await rpc.select(self.pool.stubs(address))(request, timeout=limit)
            except grpc.aio.AioRpcError as exc:
                seconds = time.monotonic() - started
                error = translate(exc, address, seconds, self.pool.credentials)
                unreachable = never_sent(exc.code(), exc.details() or "")
                self.observe(Attempt(rpc.name, address, number, seconds, error, unreachable))
                last = error
                if overloaded(exc):
                    continue  # nothing was done: send it again after a pause, within the deadline
                counted += 1
                if exc.code() not in RETRYABLE or not (retry or unreachable):
                    raise error from None
                continue
            self.observe(Attempt(rpc.name, address, number, time.monotonic() - started))
            return response
        if last is None or time.monotonic() >= deadline:
            raise DeadlineExceeded(
                f"{rpc.name} got no answer within {budget:g}s"
                + (f" (last error: {last.message})" if last else "")
            )
        raise last
