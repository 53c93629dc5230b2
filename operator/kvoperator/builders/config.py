"""The store's ConfigMap: the seed peer list that new pods start from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvoperator import constants as c
from kvoperator import names
from kvoperator.builders.common import Body, child_metadata, stamp_hash
from kvoperator.config import OperatorConfig
from kvoperator.spec import StoreSpec


def seed_peers(
    store: str, namespace: str, replicas: int, port: int, peer_port: int, config: OperatorConfig
) -> str:
    """``--peers`` for the node: every pod of the StatefulSet by its stable DNS name, as
    ``ID=HOST:PORT/PEERPORT`` (the client port, and the peer port on the same host).

    The list only seeds a node's first start: a node with data uses the membership it stored, and a
    new one learns the current membership (epoch >= 1) from whichever seed answers. It is read when a
    pod starts, so updating it never restarts pods.
    """
    return ",".join(
        f"{names.pod(store, i)}={names.dns_address(store, i, namespace, port, config)}/{peer_port}"
        for i in range(replicas)
    )


def build_configmap(owner: Mapping[str, Any], spec: StoreSpec, replicas: int, config: OperatorConfig) -> Body:
    meta = owner["metadata"]
    data = {
        c.CONFIG_KEY_PEERS: seed_peers(
            meta["name"], meta["namespace"], replicas, spec.port, spec.peer_port, config
        ),
        "replicationFactor": str(spec.replication_factor),
        "partitions": str(spec.partitions),
    }
    body: Body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(owner, names.configmap(meta["name"])),
        "data": data,
    }
    return stamp_hash(body, data)
