"""A small Kubernetes API client on aiohttp: get, list, create, merge-patch, delete.

The operator needs only these verbs on a handful of resources, so it speaks them itself. It logs in
the way kopf does: through the ``kubernetes`` client library's login (exec plugins included), and
falls back to the service account and the kubeconfig. ``list`` filters by labels on the
client side as well as asking the server to, so that extra objects from a server that ignores the
label selector never reach the reconcile steps.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import logging
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp
import kopf

from kvoperator import constants as c

log = logging.getLogger(__name__)
Body = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """A resource type and how its URLs are built."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str = "") -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        parts = [base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name:
            parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


PODS = Resource("", "v1", "pods")
SERVICES = Resource("", "v1", "services")
CONFIGMAPS = Resource("", "v1", "configmaps")
NODES = Resource("", "v1", "nodes", namespaced=False)
STATEFULSETS = Resource("apps", "v1", "statefulsets")
PDBS = Resource("policy", "v1", "poddisruptionbudgets")
SECRETS = Resource("", "v1", "secrets")
NETWORK_POLICIES = Resource("networking.k8s.io", "v1", "networkpolicies")
CERTIFICATES = Resource("cert-manager.io", "v1", "certificates")
KVSTORES = Resource(c.GROUP, c.VERSION, c.KVSTORE_PLURAL)
KVBACKUPS = Resource(c.GROUP, c.VERSION, c.KVBACKUP_PLURAL)


class ApiError(Exception):
    """An error answer of the API server: its HTTP status, reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


def matches_labels(body: Mapping[str, Any], labels: Mapping[str, str] | None) -> bool:
    if not labels:
        return True
    have = (body.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


class KubeApi(Protocol):
    """The verbs the operator uses. :class:`KubeClient` speaks them over HTTP; the step tests use
    a fake that keeps objects in memory."""

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Body | None: ...

    async def list_objects(
        self, resource: Resource, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> list[Body]: ...

    async def create(self, resource: Resource, namespace: str | None, body: Body) -> Body: ...

    async def patch(
        self, resource: Resource, namespace: str | None, name: str, patch: Body, *, subresource: str = ""
    ) -> Body: ...

    async def patch_json(
        self, resource: Resource, namespace: str | None, name: str, ops: list[Body]
    ) -> Body: ...

    async def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        grace_seconds: int | None = None,
        uid: str | None = None,
    ) -> bool: ...

    async def close(self) -> None: ...


def login(settings: kopf.OperatorSettings | None = None) -> kopf.ConnectionInfo:
    """Credentials as kopf itself logs in: through the ``kubernetes`` client library when it is
    installed (a dependency: it runs kubeconfig ``exec`` plugins such as ``aws eks get-token`` and
    ``gke-gcloud-auth-plugin``, which kopf's own kubeconfig reader cannot), else the pod's service
    account, else the kubeconfig."""
    settings = settings or kopf.OperatorSettings()
    info: kopf.ConnectionInfo | None = None
    if importlib.util.find_spec("kubernetes") is not None:
        with contextlib.suppress(kopf.LoginError):
            info = kopf.login_via_client(logger=log, settings=settings)
    info = (
        info
        or kopf.login_with_service_account(settings=settings)
        or kopf.login_with_kubeconfig(settings=settings)
    )
    if info is None:
        raise kopf.LoginError("no service account token and no kubeconfig (set KUBECONFIG)")
    return info


class KubeClient:
    """:class:`KubeApi` over aiohttp, logged in like kopf; one session, opened on first use."""

    def __init__(self, info: kopf.ConnectionInfo, *, timeout: float = 30.0) -> None:
        self._info = info
        self._timeout = timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="kvoperator-")
        self._session: aiohttp.ClientSession | None = None

    @property
    def default_namespace(self) -> str | None:
        return self._info.default_namespace

    def _ssl(self) -> ssl.SSLContext | bool:
        info = self._info
        if not info.server.startswith("https"):
            return False
        if info.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            cadata = _decoded(info.ca_data)
            ctx = ssl.create_default_context(
                cafile=str(info.ca_path) if info.ca_path else None,
                cadata=cadata.decode() if cadata else None,
            )
        cert, key = (
            self._file(info.certificate_path, info.certificate_data, "cert.pem"),
            self._file(info.private_key_path, info.private_key_data, "key.pem"),
        )
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    def _file(self, path: Any, data: str | bytes | None, name: str) -> str | None:
        if path:
            return str(path)
        raw = _decoded(data)
        if not raw:
            return None
        target = Path(self._tmp.name) / name
        target.write_bytes(raw)
        target.chmod(0o600)
        return str(target)

    def _headers(self) -> dict[str, str]:
        info = self._info
        headers = {"Accept": "application/json", "User-Agent": f"{c.MANAGER}"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        elif info.username and info.password:
            raw = f"{info.username}:{info.password}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(raw).decode()}"
        return headers

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                base_url=None,
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=32),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                trust_env=self._info.trust_env,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._tmp.cleanup()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        url = self._info.server.rstrip("/") + path
        if params:
            url += "?" + urlencode(params)
        headers = self._headers()
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        for attempt in (1, 2):
            session = self._ensure_session()
            async with session.request(method, url, data=data, headers=headers) as response:
                text = await response.text()
                if response.status == 401 and attempt == 1:
                    self._info = login()  # a rotated service-account token: read it again
                    headers = {**headers, **self._headers()}
                    continue
                if response.status >= 400:
                    raise _error(response.status, text)
                return json.loads(text) if text else None
        raise AssertionError("unreachable")

    # -- verbs ------------------------------------------------------------------------------

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Body | None:
        try:
            result: Body = await self.request("GET", resource.path(namespace, name))
        except NotFound:
            return None
        return result

    async def list_objects(
        self, resource: Resource, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> list[Body]:
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        reply = await self.request("GET", resource.path(namespace), params=params)
        items = (reply or {}).get("items") or []
        return [item for item in items if isinstance(item, dict) and matches_labels(item, labels)]

    async def create(self, resource: Resource, namespace: str | None, body: Body) -> Body:
        result: Body = await self.request("POST", resource.path(namespace), body=body)
        return result

    async def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Body,
        *,
        subresource: str = "",
    ) -> Body:
        """An RFC 7386 merge patch (``None`` deletes a field; lists are replaced whole)."""
        result: Body = await self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            content_type="application/merge-patch+json",
        )
        return result

    async def patch_json(self, resource: Resource, namespace: str | None, name: str, ops: list[Body]) -> Body:
        """An RFC 6902 JSON patch: the way to replace a nested object whole (a pod template)."""
        result: Body = await self.request(
            "PATCH", resource.path(namespace, name), body=ops, content_type="application/json-patch+json"
        )
        return result

    async def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        grace_seconds: int | None = None,
        uid: str | None = None,
    ) -> bool:
        """Delete (gracefully unless ``grace_seconds`` is 0). ``uid`` guards against deleting a
        newer object of the same name. False if it was already gone."""
        body: Body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", resource.path(namespace, name), body=body)
        except NotFound:
            return False
        return True


def _decoded(data: str | bytes | None) -> bytes | None:
    if not data:
        return None
    raw = data.encode() if isinstance(data, str) else data
    if raw.lstrip().startswith(b"-----BEGIN"):
        return raw
    return base64.b64decode(raw)


def _error(status: int, text: str) -> ApiError:
    try:
        payload = json.loads(text)
        reason, message = str(payload.get("reason", "")), str(payload.get("message", text))
    except ValueError:
        reason, message = "", text
    kind = NotFound if status == 404 else Conflict if status == 409 else ApiError
    return kind(status, reason or "Error", message[:500])
