"""Admin calls that would lock the operator out or break the membership protocol."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest

from kvnode.api.v1 import admin_pb2, admin_pb2_grpc
from kvnode.client.reconfig import Reconfigurer
from kvnode.core.membership import Member, MemberState
from kvnode.testing.processes import ProcessCluster
from tests.hostile.conftest import good_traffic


async def _set(address: str, request: admin_pb2.SetMembershipRequest) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin_pb2_grpc.AdminStub(channel).SetMembership(request)
    return refused.value


async def test_only_the_next_epoch_by_one_protocol_step_is_taken(trio: ProcessCluster) -> None:
    """Before: SetMembership with epoch 2^64-1 locked the operator out for good."""
    async with good_traffic(trio, "admin/"), Reconfigurer.connect(trio.endpoints) as reconfig:
        current = await reconfig.bootstrap()
        a, b, c = current.members
        bad = {
            "far epoch": replace(current, epoch=2**64 - 1),
            "skipped epoch": replace(current, epoch=current.epoch + 2),
            "two changes at once": replace(
                current,
                epoch=current.epoch + 1,
                members=(replace(a, state=MemberState.LEAVING), replace(b, state=MemberState.LEAVING), c),
            ),
            "a newcomer straight to ACTIVE": replace(
                current, epoch=current.epoch + 1, members=(a, b, c, Member("kv-9", "127.0.0.1:1"))
            ),
            "another replication factor": replace(current, epoch=current.epoch + 1, replication_factor=2),
        }
        for what, membership in bad.items():
            error = await _set(
                trio[0].address, admin_pb2.SetMembershipRequest(membership=membership.to_proto())
            )
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, what
            assert "refused" in (error.details() or ""), what
        # The real next step still works: the operator is not locked out.
        assert (await reconfig.bootstrap()).epoch == current.epoch
        moved = replace(current, epoch=current.epoch + 1, members=(replace(a, address=a.address), b, c))
        await reconfig.install(moved)
        assert (await reconfig.current()).epoch == current.epoch + 1


async def test_an_invalid_member_list_is_refused(trio: ProcessCluster) -> None:
    async with Reconfigurer.connect(trio.endpoints) as reconfig:
        current = (await reconfig.current()).to_proto()
    current.epoch += 1
    current.members[1].id = current.members[0].id
    error = await _set(trio[0].address, admin_pb2.SetMembershipRequest(membership=current))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "duplicate member id" in (error.details() or "")
