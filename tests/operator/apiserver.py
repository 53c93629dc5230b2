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
* A failed JSON-patch ``test`` (stale resourceVersion) is HTTP 422, as on a real server (kmock: 500),
  and a merge patch that carries ``metadata.resourceVersion`` is refused with 409 when it is stale.
* Label selectors are applied to lists and watches (kmock ignores them), and every request is
  recorded (:attr:`ApiServer.seen`), so a test can see what the operator asked for.
* With :attr:`ApiServer.tokens` set, requests are authenticated (401 for an unknown token) and
  authorized by the RBAC objects stored in the server (403), as the RBAC authorizer does.
* Deleting a namespace runs the namespace controller: the namespace turns Terminating, everything in
  it is deleted at once (its Roles and RoleBindings too), creating in it is refused, and the
  namespace goes only when nothing is left in it.
* Label values and Service names are validated (422), and with
  :attr:`ApiServer.owner_references_enforcement` the admission plugin of that name runs.

The server runs in its own thread with its own event loop (:class:`ApiServerThread`), so nothing the
tests or the operator do can block it.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import re
import threading
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock

from tests.operator import rbac

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
    "coordination.k8s.io/v1/leases": kmock.ResourceInfo(kind="Lease", namespaced=True),
    "rbac.authorization.k8s.io/v1/roles": kmock.ResourceInfo(kind="Role", namespaced=True),
    "rbac.authorization.k8s.io/v1/rolebindings": kmock.ResourceInfo(kind="RoleBinding", namespaced=True),
    "rbac.authorization.k8s.io/v1/clusterroles": kmock.ResourceInfo(kind="ClusterRole", namespaced=False),
    "rbac.authorization.k8s.io/v1/clusterrolebindings": kmock.ResourceInfo(
        kind="ClusterRoleBinding", namespaced=False
    ),
}
RBAC_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
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

    # Bearer token -> user name. Empty: no authentication or authorization. A request without a
    # token is the cluster admin's (the test's kubectl, the simulated controllers).
    tokens: dict[str, str] = attrs.field(factory=dict)
    # plugin/pkg/admission/gc/gc_admission.go: setting blockOwnerDeletion needs "update" on the
    # owner's "finalizers" subresource. Off by default, as in upstream; on in OpenShift.
    owner_references_enforcement: bool = False
    # Every request: (user or None for the admin, verb, path, query).
    seen: list[tuple[str | None, str, str, dict[str, str]]] = attrs.field(factory=list)
    terminating: set[str] = attrs.field(factory=set)
    _controllers: set[asyncio.Task[None]] = attrs.field(factory=set)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, info in RESOURCES.items():
            self.resources[key] = info

    # -- authentication and authorization ------------------------------------------------------

    def _user(self, headers: Mapping[str, str]) -> str | None:
        """The request's user; None for the admin. Raises 401 for a token nobody has."""
        header = headers.get("Authorization", "")
        if not self.tokens or not header:
            return None
        token = header.split(" ", 1)[-1]
        if token not in self.tokens:
            raise kmock.KubernetesError(status=401, reason="Unauthorized", message="Unauthorized")
        return self.tokens[token]

    def _rbac_objects(self) -> dict[tuple[str, str | None, str], dict[str, Any]]:
        result: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        for (resource, namespace, name), obj in self.objects.items():
            kind = str(obj.raw.get("kind", "")) if not obj.deleted else ""
            if resource.group == "rbac.authorization.k8s.io" and kind in RBAC_KINDS:
                result[kind, namespace, name] = obj.raw
        return result

    def _authorize(
        self, user: str | None, verb: str, group: str, resource: str, namespace: str | None, name: str | None
    ) -> None:
        if user is None or rbac.allowed(self._rbac_objects(), user, verb, group, resource, namespace, name):
            return
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        raise kmock.KubernetesError(
            status=403,
            reason="Forbidden",
            message=f'{resource} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
            f'in API group "{group}"{where}',
        )

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            return await self._call(raw_request)
        except kmock.KubernetesError as exc:
            return _status(exc.status, exc.reason or "", exc.message or "")

    async def _call(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw_request.path.rstrip("/")
        watch = raw_request.query.get("watch") == "true"
        one = re.fullmatch(r"/api/v1/namespaces/([^/]+)", path)
        if (path == "/api/v1/namespaces" and not watch) or one:
            user = self._user(raw_request.headers)
            name = one.group(1) if one else None
            verb = rbac.verb_of(raw_request.method, name, raw_request.query)
            self.seen.append((user, verb, path, dict(raw_request.query)))
            self._authorize(user, verb, "", "namespaces", None, name)
            return await self._namespaces(raw_request, name)
        return await super().__call__(raw_request)

    async def _namespaces(
        self, raw_request: aiohttp.web.BaseRequest, name: str | None
    ) -> aiohttp.web.StreamResponse:
        # kmock's path parser takes "namespaces" in /api/v1/namespaces for the start of a namespaced
        # path and fails (HTTP 500): serve the namespaces here.
        namespaces = kmock.resource("v1/namespaces")
        if name is None and raw_request.method == "POST":
            body = await raw_request.json()
            meta = body.setdefault("metadata", {})
            meta.update(
                uid=str(uuid.uuid4()),
                resourceVersion=str(next(_versions)),
                creationTimestamp=_stamp(_now()),
            )
            body["status"] = {"phase": "Active"}
            self.objects[namespaces, None, meta["name"]] = body
            return aiohttp.web.json_response(body, status=201)
        if name is None and raw_request.method == "GET":
            items = [
                obj.raw for (res, _, _), obj in self.objects.items() if res == namespaces and not obj.deleted
            ]
            return aiohttp.web.json_response(
                {
                    "kind": "NamespaceList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": "1"},
                    "items": items,
                }
            )
        key: Any = (namespaces, None, name)
        if name is None or key not in self.objects or self.objects[key].deleted:
            return _status(404, "NotFound", f'namespaces "{name}" not found')
        obj = self.objects[key]
        if raw_request.method == "DELETE" and name not in self.terminating:
            self.terminating.add(name)
            obj.patch(
                {
                    "metadata": {
                        "deletionTimestamp": _stamp(_now()),
                        "resourceVersion": str(next(_versions)),
                    },
                    "status": {"phase": "Terminating"},
                }
            )
            self._controllers.add(asyncio.get_running_loop().create_task(self._delete_namespace(name)))
        return aiohttp.web.json_response(obj.raw)

    async def _delete_namespace(self, namespace: str) -> None:
        """The namespace controller (pkg/controller/namespace/deletion/namespaced_resources_deleter.go):
        ``deleteAllContent`` deletes every namespaced resource in the namespace in one sweep, in
        discovery order, the operator's Role and RoleBinding as much as its KVStores; the controller
        requeues while content remains (objects held by finalizers) and removes the namespace only
        when nothing is left. See also https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/
        """
        while True:
            async with self._lock:
                left = [
                    (key, obj)
                    for key, obj in self.objects.items()
                    if key[1] == namespace and not obj.deleted and key[0] != kmock.resource("v1/namespaces")
                ]
                for (resource, _, _), obj in left:
                    if not obj.raw.get("metadata", {}).get("deletionTimestamp"):
                        await self._remove(resource, obj)
                if not left:
                    key: Any = (kmock.resource("v1/namespaces"), None, namespace)
                    self.objects[key].delete()
                    self.terminating.discard(namespace)
            await self._collect_garbage()
            if not left:
                return
            await asyncio.sleep(0.2)  # the controller's requeue: a polling loop, not a test's wait

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None:
            return await super()._handle(request)
        action = request.action
        user = self._user(request.headers)
        group = request.resource.group or ""
        plural = str(request.resource.plural)
        resource = f"{plural}/{request.subresource}" if request.subresource else plural
        verb = rbac.verb_of(str(request.method.value), request.name, request.params)
        self.seen.append((user, verb, str(request.url.path), dict(request.params)))
        if request.resource.plural is None:
            # Discovery (/api, /apis/<group>/<version>): every authenticated user may read it
            # (the system:discovery ClusterRole, plugin/pkg/auth/authorizer/rbac/bootstrappolicy).
            return await super()._handle(request)
        self._authorize(user, verb, group, resource, request.namespace, request.name)
        if action == kmock.action.CREATE and isinstance(request.data, dict):
            self._admit_create(request, user)
        elif action == kmock.action.UPDATE and isinstance(request.data, dict):
            self._admit_update(request, user)
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

    # -- admission and validation ---------------------------------------------------------------

    def _admit_create(self, request: kmock.Request, user: str | None) -> None:
        namespace = request.namespace or (request.data.get("metadata") or {}).get("namespace")
        if namespace in self.terminating:
            # plugin/pkg/admission/namespace/lifecycle/admission.go (NamespaceLifecycle).
            raise kmock.KubernetesError(
                status=403,
                reason="Forbidden",
                message=f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
            )
        errors = self._validate(request, request.data)
        if request.resource == kmock.resource("v1/services"):
            errors += rbac.service_name_errors(str((request.data.get("metadata") or {}).get("name", "")))
        if errors:
            raise kmock.KubernetesError(status=422, reason="Invalid", message="; ".join(errors))
        self._enforce_owner_references(request.data, user, namespace)

    def _admit_update(self, request: kmock.Request, user: str | None) -> None:
        errors = self._validate(request, request.data)
        if errors:
            raise kmock.KubernetesError(status=422, reason="Invalid", message="; ".join(errors))
        self._enforce_owner_references(request.data, user, request.namespace)
        wanted = (request.data.get("metadata") or {}).get("resourceVersion")
        current = self._current(request)
        if (
            wanted
            and current is not None
            and str(wanted) != current.get("metadata", {}).get("resourceVersion")
        ):
            # A patch that carries metadata.resourceVersion is a precondition: the update is refused
            # with 409 Conflict when the object has changed since (optimistic concurrency,
            # https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions); the
            # Lease of the leader election relies on it.
            raise kmock.KubernetesError(
                status=409,
                reason="Conflict",
                message="Operation cannot be fulfilled: the object has been modified; please apply "
                "your changes to the latest version and try again",
            )

    @staticmethod
    def _validate(request: kmock.Request, data: dict[str, Any]) -> list[str]:
        return rbac.label_errors(data.get("metadata") or {})

    def _enforce_owner_references(
        self, data: dict[str, Any], user: str | None, namespace: str | None
    ) -> None:
        """plugin/pkg/admission/gc/gc_admission.go (OwnerReferencesPermissionEnforcement): an owner
        reference with blockOwnerDeletion needs "update" on the owner's finalizers subresource."""
        if not self.owner_references_enforcement or user is None:
            return
        for ref in (data.get("metadata") or {}).get("ownerReferences") or []:
            if not ref.get("blockOwnerDeletion"):
                continue
            api_version = str(ref.get("apiVersion", ""))
            group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
            plural = next(
                (key.rsplit("/", 1)[1] for key, info in RESOURCES.items() if info.kind == ref.get("kind")),
                str(ref.get("kind", "")).lower() + "s",
            )
            if not rbac.allowed(
                self._rbac_objects(),
                user,
                "update",
                group,
                f"{plural}/finalizers",
                namespace,
                ref.get("name"),
            ):
                raise kmock.KubernetesError(
                    status=403,
                    reason="Forbidden",
                    message=f"cannot set blockOwnerDeletion if an ownerReference refers to a resource "
                    f'you can\'t set finalizers on: User "{user}" cannot update resource '
                    f'"{plural}/finalizers"',
                )

    # -- label selectors -------------------------------------------------------------------------

    async def _serve_list(self, request: kmock.Request) -> Any:
        reply = await super()._serve_list(request)
        selector = request.params.get("labelSelector", "")
        if selector and isinstance(reply, dict):
            reply["items"] = [item for item in reply["items"] if _selects(selector, item)]
        return reply

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        selector = request.params.get("labelSelector", "")
        async for event in super()._serve_watch(request):
            if not selector or not isinstance(event, dict) or _selects(selector, event.get("object") or {}):
                yield event

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

    async def _remove(self, resource: Any, obj: Any) -> None:
        """Delete an object for a controller (the namespace controller, the garbage collector): one
        with finalizers, and every pod (the kubelet ends it), is only marked with a
        deletionTimestamp; any other goes at once."""
        meta = obj.raw.get("metadata", {})
        if meta.get("finalizers") or resource == kmock.resource("v1/pods"):
            obj.patch(
                {"metadata": {"deletionTimestamp": _stamp(_now()), "resourceVersion": str(next(_versions))}}
            )
            await self._buses[resource].put({"type": "MODIFIED", "object": obj.raw})
        else:
            raw = obj.raw
            obj.delete()
            await self._buses[resource].put({"type": "DELETED", "object": raw})

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
                    await self._remove(resource, obj)
            if not orphans:
                return


def _selects(selector: str, body: Mapping[str, Any]) -> bool:
    """Equality-based label selectors (apimachinery/pkg/labels/selector.go, Parse): ``k=v``,
    ``k==v``, ``k!=v``, ``k`` and ``!k``, comma-separated, all of which must hold. A watch with a
    selector sees only the objects that match it
    (https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#list-and-watch-filtering)."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            ok = labels.get(key.strip()) != value.strip()
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            ok = labels.get(key.strip()) == value.strip()
        elif term.startswith("!"):
            ok = term[1:].strip() not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    """A metav1.Status error answer."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    return aiohttp.web.json_response(body, status=code)


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
