from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from kvnode.api.v1 import kv_pb2_grpc
from kvnode.config import NodeConfig
from kvnode.node import Node
from kvnode.testing.processes import free_port

NodeFactory = Callable[..., Awaitable[Node]]


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """Start in-process nodes (real gRPC on loopback, real LMDB); all are stopped afterwards."""
    nodes: list[Node] = []

    async def make(node_id: str = "n1", **settings: Any) -> Node:
        settings.setdefault("partitions", 64)
        config = NodeConfig(
            node_id=node_id, data_dir=tmp_path / node_id, listen=f"127.0.0.1:{free_port()}", **settings
        )
        node = Node(config)
        await node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.stop(grace=1)


@pytest.fixture
async def node(make_node: NodeFactory) -> Node:
    return await make_node()


@pytest.fixture
async def kv(node: Node) -> AsyncIterator[kv_pb2_grpc.KVAsyncStub]:
    async with grpc.aio.insecure_channel(node.config.listen) as channel:
        yield kv_pb2_grpc.KVStub(channel)
