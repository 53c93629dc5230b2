"""kmock as a Kubernetes API server for the operator's tests, with the fixes a real one has.

``KubernetesEmulator`` (kmock 0.8) stores objects as plain JSON. What these tests need on top, all
kept here in the fixture and none of it in the operator:

* ``metadata.resourceVersion``, ``uid``, ``generation`` and ``creationTimestamp`` are stamped on
  every write (kmock sets none; kopf's JSON-patch ``test`` of the resourceVersion then fails forever).
* ``generateName`` is honoured (kopf posts Events that way; kmock would store them all as ``None``).
* ``GET /api/v1/namespaces`` is answered (kmock's path parser raises on it: HTTP 500).
* Pods are deleted gracefully: DELETE sets ``deletionTimestamp`` and the test's kubelet confirms it
  with ``gracePeriodSeconds=0``, which removes the pod. So a pod on a NotReady node stays
  Terminating, exactly the case the operator's force-delete repairs.
* Owner references are garbage-collected: deleting an owner deletes its dependents.
* A failed JSON-patch ``test`` (stale resourceVersion) is HTTP 422, as on a real server (kmock: 500).
* Label selectors stay ignored (as in kmock): the operator must tolerate extra objects in lists.

The server runs in its own thread with its own event loop (:class:`ApiServerThread`), so nothing the
tests or the operator do can block it.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock

RESOURCES: dict[str, kmock.ResourceInfo] = {
    "v1/pods": kmock.ResourceInfo(kind="Pod", namespaced=True, subresources={"status"}),
    "v1/services": kmock.ResourceInfo(kind="Service", namespaced=True, subresources={"status"}),
    "v1/configmaps": kmock.ResourceInfo(kind="ConfigMap", namespaced=True),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True),
    "v1/nodes": kmock.ResourceInfo(kind="Node", namespaced=False, subresources={"status"}),
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False),
    "v1/persistentvolumeclaims": kmock.ResourceInfo(kind="PersistentVolumeClaim", namespaced=True),
    "apps/v1/statefulsets": kmock.ResourceInfo(
        kind="StatefulSet", namespaced=True, subresources={"status", "scale"}
    ),
    "policy/v1/poddisruptionbudgets": kmock.ResourceInfo(
        kind="PodDisruptionBudget", namespaced=True, subresources={"status"}
    ),
    "kvstore.dev/v1alpha1/kvstores": kmock.ResourceInfo(
        kind="KVStore", singular="kvstore", namespaced=True, subresources={"status"}, shortnames={"kvs"}
    ),
    "kvstore.dev/v1alpha1/kvbackups": kmock.ResourceInfo(
        kind="KVBackup", singular="kvbackup", namespaced=True, subresources={"status"}, shortnames={"kvb"}
    ),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False
    ),
}
for _info in RESOURCES.values():
    _info.verbs = {"get", "list", "watch", "create", "patch", "delete"}

_versions = itertools.count(1000)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _stamp(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with the behaviour of a real API server that the operator relies on."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, info in RESOURCES.items():
            self.resources[key] = info

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's path parser takes "namespaces" in /api/v1/namespaces for the start of a namespaced
        # path and fails (HTTP 500): serve listing and creating namespaces here.
        if raw_request.path.rstrip("/") == "/api/v1/namespaces" and raw_request.query.get("watch") != "true":
            namespaces = kmock.resource("v1/namespaces")
            if raw_request.method == "POST":
                body = await raw_request.json()
                meta = body.setdefault("metadata", {})
                meta.update(
                    uid=str(uuid.uuid4()),
                    resourceVersion=str(next(_versions)),
                    creationTimestamp=_stamp(_now()),
                )
                self.objects[namespaces, None, meta["name"]] = body
                return aiohttp.web.json_response(body, status=201)
            if raw_request.method == "GET":
                items = [
                    obj.raw
                    for (res, _, _), obj in self.objects.items()
                    if res == namespaces and not obj.deleted
                ]
                return aiohttp.web.json_response(
                    {
                        "kind": "NamespaceList",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": "1"},
                        "items": items,
                    }
                )
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None:
            return await super()._handle(request)
        action = request.action
        # kmock's Request is frozen, and an evolved copy no longer matches kmock's own reactions:
        # the stamped body replaces the parsed one in place.
        if action == kmock.action.CREATE and isinstance(request.data, dict):
            object.__setattr__(request, "data", self._stamp_create(request))
        elif action == kmock.action.UPDATE and request.name is not None:
            object.__setattr__(request, "data", self._stamp_update(request))
        elif action == kmock.action.DELETE and request.name is not None:
            special = await self._delete(request)
            if special is not None:
                await self._collect_garbage()
                return special
        try:
            response = await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as exc:
            # A real server answers a failed JSON-patch test (a stale resourceVersion) with 422,
            # which kopf takes as "retry on the next cycle"; kmock's 500 makes it resend the same.
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from None
        if action in (kmock.action.DELETE, kmock.action.UPDATE):
            await self._collect_garbage()
        return response

    # -- stamping ------------------------------------------------------------------------------

    def _stamp_create(self, request: kmock.Request) -> dict[str, Any]:
        data = json.loads(json.dumps(request.data))
        meta = data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:8]}"
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = str(next(_versions))
        meta["generation"] = 1
        meta["creationTimestamp"] = _stamp(_now())
        return data  # type: ignore[no-any-return]

    def _current(self, request: kmock.Request) -> dict[str, Any] | None:
        key: Any = (request.resource, request.namespace, request.name)
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else obj.raw

    def _stamp_update(self, request: kmock.Request) -> Any:
        version = str(next(_versions))
        current = self._current(request) or {}
        generation = int(current.get("metadata", {}).get("generation", 1))
        data = request.data
        if isinstance(data, list):  # a JSON patch: kmock applies it with jsonpatch (tests included)
            ops = [*list(data), {"op": "add", "path": "/metadata/resourceVersion", "value": version}]
            if request.subresource != "status" and any(
                str(op.get("path", "")).startswith("/spec") for op in data
            ):
                ops.append({"op": "add", "path": "/metadata/generation", "value": generation + 1})
            return ops
        if isinstance(data, dict):
            data = json.loads(json.dumps(data))
            meta = data.setdefault("metadata", {}) or {}
            data["metadata"] = meta
            meta["resourceVersion"] = version
            if request.subresource != "status" and "spec" in data and data["spec"] != current.get("spec"):
                meta["generation"] = generation + 1
            return data
        return data

    # -- deletion --------------------------------------------------------------------------------

    async def _delete(self, request: kmock.Request) -> aiohttp.web.StreamResponse | None:
        """Pods: graceful deletion, and force deletion with gracePeriodSeconds=0."""
        options = request.data if isinstance(request.data, dict) else {}
        grace = options.get("gracePeriodSeconds", request.params.get("gracePeriodSeconds"))
        key: Any = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self.objects or self.objects[key].deleted:
                return None  # kmock answers 404
            obj = self.objects[key]
            raw = obj.raw
            wanted_uid = (options.get("preconditions") or {}).get("uid")
            if wanted_uid and wanted_uid != raw.get("metadata", {}).get("uid"):
                raise kmock.KubernetesError(status=409, reason="Conflict", message="uid precondition failed")
            if request.resource != kmock.resource("v1/pods"):
                return None
            meta = raw.get("metadata", {})
            if grace is not None and int(grace) == 0 and not meta.get("finalizers"):
                obj.delete()
                await self._buses[request.resource].put({"type": "DELETED", "object": raw})
                return aiohttp.web.json_response(raw)
            if not meta.get("deletionTimestamp"):
                seconds = (
                    int(grace)
                    if grace is not None
                    else int((raw.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
                )
                deadline = _now() + datetime.timedelta(seconds=seconds)
                obj.patch(
                    {
                        "metadata": {
                            "deletionTimestamp": _stamp(deadline),
                            "deletionGracePeriodSeconds": seconds,
                            "resourceVersion": str(next(_versions)),
                        }
                    }
                )
                await self._buses[request.resource].put({"type": "MODIFIED", "object": obj.raw})
            return aiohttp.web.json_response(obj.raw)

    async def _collect_garbage(self) -> None:
        """Delete (in the background policy's way) every object whose owner is gone."""
        while True:
            async with self._lock:
                live = {
                    obj.raw.get("metadata", {}).get("uid") for obj in self.objects.values() if not obj.deleted
                }
                orphans = []
                for key, obj in self.objects.items():
                    if obj.deleted:
                        continue
                    meta = obj.raw.get("metadata", {})
                    refs = meta.get("ownerReferences") or []
                    if (
                        refs
                        and all(ref.get("uid") not in live for ref in refs)
                        and not meta.get("deletionTimestamp")
                    ):
                        orphans.append((key, obj))
                for (resource, _, _), obj in orphans:
                    meta = obj.raw.get("metadata", {})
                    if meta.get("finalizers") or resource == kmock.resource("v1/pods"):
                        obj.patch(
                            {
                                "metadata": {
                                    "deletionTimestamp": _stamp(_now()),
                                    "resourceVersion": str(next(_versions)),
                                }
                            }
                        )
                        await self._buses[resource].put({"type": "MODIFIED", "object": obj.raw})
                    else:
                        raw = obj.raw
                        obj.delete()
                        await self._buses[resource].put({"type": "DELETED", "object": raw})
            if not orphans:
                return


class ApiServerThread:
    """The API server on 127.0.0.1:<free port>, in a thread with its own event loop."""

    def __init__(self) -> None:
        self.url = ""
        self.server: ApiServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="kmock", daemon=True)

    def start(self) -> ApiServerThread:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the kmock API server did not start: {self._error}")
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with ApiServer() as server, kmock.Server(server) as http:
            self.server = server
            self.url = str(http.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                    "users": [{"name": "test", "user": {"token": "test-token"}}],
                    "contexts": [
                        {
                            "name": "kmock",
                            "context": {"cluster": "kmock", "user": "test", "namespace": "default"},
                        }
                    ],
                    "current-context": "kmock",
                }
            )
        )
        return path
