"""A tiny synchronous Kubernetes API client for tests: what ``kubectl`` does, over plain HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from kvoperator.kube import Resource

Body = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:300]}")
        self.status = status


class Kubectl:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read().decode(errors="replace")) from None
        return json.loads(text) if text else None

    def get(self, resource: Resource, namespace: str | None, name: str) -> Body | None:
        try:
            result: Body = self.request("GET", resource.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def list(self, resource: Resource, namespace: str | None = None) -> list[Body]:
        """Every object of the resource (no label selector)."""
        try:
            reply = self.request("GET", resource.path(namespace))
        except ApiError as exc:
            if exc.status == 404:
                return []
            raise
        return list((reply or {}).get("items") or [])

    def create(self, resource: Resource, namespace: str | None, body: Body) -> Body:
        result: Body = self.request("POST", resource.path(namespace), body)
        return result

    def patch(
        self, resource: Resource, namespace: str | None, name: str, patch: Body, subresource: str = ""
    ) -> Body:
        result: Body = self.request(
            "PATCH", resource.path(namespace, name, subresource), patch, "application/merge-patch+json"
        )
        return result

    def delete(self, resource: Resource, namespace: str | None, name: str, grace: int | None = None) -> bool:
        body: Body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        try:
            self.request("DELETE", resource.path(namespace, name), body)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True
