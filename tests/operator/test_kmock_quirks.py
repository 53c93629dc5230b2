"""What kmock 0.8 does differently from a real API server (the facts the fixture works around),
checked against kmock itself, and that tests/operator/apiserver.py fixes each of them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import pytest

from tests.operator.apiserver import ApiServer

PODS = "/api/v1/namespaces/ns/pods"


@pytest.fixture(params=["kmock", "fixture"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    handler = kmock.KubernetesEmulator() if request.param == "kmock" else ApiServer()
    if request.param == "kmock":
        handler.resources["v1/pods"] = kmock.ResourceInfo(kind="Pod", namespaced=True)
    async with handler, kmock.Server(handler) as http:
        yield request.param, str(http.url).rstrip("/")


async def call(
    url: str, method: str, path: str, body: Any = None, ctype: str = "application/json"
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        data = None if body is None else json.dumps(body)
        async with session.request(
            method, url + path, data=data, headers={"Content-Type": ctype}
        ) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}}


async def test_metadata_stamping(server: tuple[str, str]) -> None:
    kind, url = server
    _, created = await call(url, "POST", PODS, pod("p"))
    meta = created["metadata"]
    if kind == "kmock":
        assert not {"resourceVersion", "uid", "generation"} & set(meta)
    else:
        assert meta["resourceVersion"] and meta["uid"] and meta["generation"] == 1
        _, patched = await call(url, "PATCH", f"{PODS}/p", {"spec": {"x": 1}}, "application/merge-patch+json")
        assert int(patched["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
        assert patched["metadata"]["generation"] == 2


async def test_listing_namespaces(server: tuple[str, str]) -> None:
    kind, url = server
    status, _ = await call(url, "GET", "/api/v1/namespaces")
    assert status == (500 if kind == "kmock" else 200)


async def test_undeclared_custom_resources_are_unknown(server: tuple[str, str]) -> None:
    kind, url = server
    status, _ = await call(url, "GET", "/apis/kvstore.dev/v1alpha1/namespaces/ns/kvstores")
    assert status == (404 if kind == "kmock" else 200)
    _, groups = await call(url, "GET", "/apis")
    assert ("kvstore.dev" in {g["name"] for g in groups["groups"]}) == (kind == "fixture")


async def test_label_selectors(server: tuple[str, str]) -> None:
    kind, url = server
    await call(url, "POST", PODS, pod("a", app="x"))
    await call(url, "POST", PODS, pod("b", app="y"))
    _, listed = await call(url, "GET", f"{PODS}?labelSelector=app%3Dx")
    names = sorted(p["metadata"]["name"] for p in listed["items"])
    assert names == (["a", "b"] if kind == "kmock" else ["a"])  # kmock ignores the selector


async def test_a_failed_json_patch_test(server: tuple[str, str]) -> None:
    kind, url = server
    await call(url, "POST", PODS, pod("p"))
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "stale"},
        {"op": "add", "path": "/x", "value": 1},
    ]
    status, _ = await call(url, "PATCH", f"{PODS}/p", ops, "application/json-patch+json")
    assert status == (500 if kind == "kmock" else 422)


async def test_generate_name(server: tuple[str, str]) -> None:
    kind, url = server
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "e-"}}
    path = "/api/v1/namespaces/ns/events"
    first, _ = await call(url, "POST", path, event)
    second, body = await call(url, "POST", path, event)
    if kind == "kmock":
        assert (first, second) == (200, 409)  # stored under the name None: the second one conflicts
    else:
        assert second == 200 and body["metadata"]["name"].startswith("e-")


async def test_pods_are_deleted_gracefully_and_force_deleted_with_grace_zero(server: tuple[str, str]) -> None:
    kind, url = server
    if kind == "kmock":
        pytest.skip("kmock deletes at once; the graceful protocol is the fixture's")
    await call(url, "POST", PODS, pod("p"))
    _, body = await call(url, "DELETE", f"{PODS}/p", {"gracePeriodSeconds": 30})
    assert body["metadata"]["deletionTimestamp"]
    status, _ = await call(url, "GET", f"{PODS}/p")
    assert status == 200  # still there, Terminating
    await call(url, "DELETE", f"{PODS}/p", {"gracePeriodSeconds": 0})
    status, _ = await call(url, "GET", f"{PODS}/p")
    assert status == 404
