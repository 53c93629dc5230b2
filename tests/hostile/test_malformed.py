"""Bytes that are not a request, sent to every method of every service."""

from __future__ import annotations

import os
import random

import grpc

from kvnode.server.serving import SERVICES
from kvnode.testing.processes import ProcessCluster
from tests.hostile.conftest import call_status, good_traffic

# Bytes that protobuf cannot parse: a field with wire type 7 (no such type), then junk.
GARBAGE = [b"\x0f" + os.urandom(40), b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x0a\xff\xff\xff\x0f"]
Raw = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]


def raw(channel: grpc.aio.Channel, service: str, method: str) -> Raw:
    """A method called with raw bytes, as a hostile client would."""
    return channel.unary_unary(f"/{service}/{method}", request_serializer=None, response_deserializer=None)


def every_method(channel: grpc.aio.Channel) -> list[tuple[str, Raw]]:
    return [
        (f"{service.name}.{method.name}", raw(channel, service.full_name, method.name))
        for service in SERVICES
        for method in service.methods
    ]


async def test_unparseable_requests_are_invalid_argument_and_logged_briefly(single: ProcessCluster) -> None:
    """Before: UNKNOWN "Unexpected DecodeError", and a full traceback logged for every request."""
    log_before = single[0].log_path.read_text(errors="replace")
    sent = 0
    async with good_traffic(single, "malformed/"), grpc.aio.insecure_channel(single[0].address) as channel:
        for name, call in every_method(channel):
            for junk in GARBAGE * 10:
                code = await call_status(call(junk, timeout=10))
                assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {code}"
                sent += 1
    new_log = single[0].log_path.read_text(errors="replace")[len(log_before) :]
    assert sent >= 300
    assert "Traceback" not in new_log
    assert len(new_log.splitlines()) < 20, new_log[-2000:]


# Random bytes that happen to parse are ordinary requests: these would write, delete or install
# whatever they name (which of their callers may do so is the security work of issue 12).
WRITES_FILES_OR_MEMBERSHIP = {"Admin.Backup", "Admin.DeleteBackup", "Admin.Restore", "Admin.SetMembership"}


async def test_random_bytes_never_crash_or_hang_a_method(single: ProcessCluster) -> None:
    """Whatever the bytes, every call ends with a status within its deadline (random bytes may
    parse as a valid message, and are then an ordinary request)."""
    rng = random.Random(7)
    async with grpc.aio.insecure_channel(single[0].address) as channel:
        for name, call in every_method(channel):
            if name in WRITES_FILES_OR_MEMBERSHIP:
                continue
            for _ in range(20):
                code = await call_status(call(rng.randbytes(rng.randrange(1, 200)), timeout=10))
                assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED), (
                    f"{name}: {code}"
                )
    assert single[0].running
