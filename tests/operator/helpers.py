"""Waiting on a store's status, and reading and writing keys through the real nodes."""

from __future__ import annotations

import urllib.request
from typing import Any

import grpc
from kvoperator import kube
from prometheus_client.parser import text_string_to_metric_families

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, types_pb2
from kvnode.testing.processes import wait_for
from tests.operator.kubectl import Kubectl

NS = "kv-test"


def store(kubectl: Kubectl, name: str) -> dict[str, Any]:
    body = kubectl.get(kube.KVSTORES, NS, name)
    assert body is not None, f"KVStore {name} is gone"
    return body


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def wait_status(kubectl: Kubectl, name: str, check: Any, what: str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until ``check(status)`` holds for the store; returns the store."""
    result: dict[str, Any] = {}

    def ok() -> bool:
        body = store(kubectl, name)
        result["body"] = body
        return bool(check(body.get("status") or {}))

    try:
        wait_for(ok, timeout, f"{name}: {what}", interval=0.1)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last status: {(result.get('body') or {}).get('status')}") from None
    return result["body"]  # type: ignore[no-any-return]


def is_available(status: dict[str, Any], members: int) -> bool:
    conds = {c["type"]: c for c in status.get("conditions") or []}
    return (
        conds.get("Available", {}).get("status") == "True"
        and conds.get("Progressing", {}).get("status") == "False"
        and len(status.get("members") or []) == members
        and all(m["state"] == "Active" and m["ready"] for m in status.get("members") or [])
        and status.get("readyReplicas") == members
    )


def put_keys(address: str, keys: list[bytes]) -> list[bytes]:
    """Write each key (value = key) at QUORUM; returns the acknowledged keys."""
    acked = []
    with grpc.insecure_channel(address) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        for key in keys:
            stub.Put(
                kv_pb2.PutRequest(key=key, value=key, consistency=types_pb2.CONSISTENCY_QUORUM), timeout=10
            )
            acked.append(key)
    return acked


def missing_keys(
    address: str, keys: list[bytes], level: types_pb2.Consistency.ValueType = types_pb2.CONSISTENCY_ALL
) -> list[bytes]:
    missing: list[bytes] = []
    with grpc.insecure_channel(address) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        for start in range(0, len(keys), 200):
            reply = stub.BatchGet(
                kv_pb2.BatchGetRequest(keys=keys[start : start + 200], consistency=level), timeout=30
            )
            missing += [kv.key for kv in reply.kvs if not kv.found or kv.value != kv.key]
    return missing


def events(kubectl: Kubectl, kind: str = "KVStore", name: str | None = None) -> list[tuple[str, str]]:
    """(reason, message) of the Events posted about objects of ``kind`` (and ``name``)."""
    result = []
    for event in kubectl.list(kube.Resource("", "v1", "events"), NS):
        obj = event.get("involvedObject") or {}
        if obj.get("kind") == kind and (name is None or obj.get("name") == name):
            result.append((str(event.get("reason")), str(event.get("message"))))
    return result


def reasons(kubectl: Kubectl, kind: str = "KVStore", name: str | None = None) -> list[str]:
    return [reason for reason, _ in events(kubectl, kind, name)]


def metric(listen: str, name: str, **labels: str) -> float:
    """The value of one sample on the operator's /metrics endpoint (0 when absent)."""
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def wait_event(
    kubectl: Kubectl,
    reason: str,
    count: int = 1,
    kind: str = "KVStore",
    name: str | None = None,
    timeout: float = 20,
) -> None:
    """Wait until ``count`` Events with ``reason`` were posted (kopf posts them in the background)."""
    wait_for(
        lambda: reasons(kubectl, kind, name).count(reason) >= count, timeout, f"{count} {reason} event(s)"
    )
