"""Fakes for the step tests: a Kubernetes API that keeps objects in memory, and nodes that answer
from a table (world.py puts a store together from them).

They behave the way the operator's callers rely on, so a step under test does what it would do
against kmock and real nodes: :class:`FakeKube` stamps uid, resourceVersion, generation and
creationTimestamp, answers Conflict and NotFound, applies merge patches (RFC 7386; the status
subresource takes only ``status``, the main resource ignores it) and JSON patches (RFC 6902),
deletes pods gracefully unless ``grace_seconds`` is 0, honours the uid precondition, and records
every read and write. :class:`FakeAdmin` probes, reads memberships, changes them through a
:class:`FakeReconfigurer` (which can fail or wait for a gate), and takes, lists, deletes and
restores backups.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import jsonpatch
from kvoperator import kube
from kvoperator.kube import Body, Resource
from kvoperator.node_admin import Health, NodeHealth, Progress
from kvoperator.timestamps import format_micro_time

from kvnode.api.v1 import admin_pb2
from kvnode.client.credentials import Credentials
from kvnode.core.errors import Unavailable
from kvnode.core.membership import Member, Membership

# Resources whose status is a subresource: a patch of the main resource leaves their status alone.
STATUS_SUBRESOURCE = {kube.KVSTORES, kube.KVBACKUPS, kube.PODS, kube.STATEFULSETS, kube.PDBS, kube.SERVICES}

_uids = itertools.count(1)
_versions = itertools.count(100)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces (lists whole)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass(frozen=True)
class Call:
    """One request to the fake API: the verb, the object, and what was sent."""

    verb: str
    resource: Resource
    namespace: str | None
    name: str
    body: Any = None


class FakeKube:
    """An in-memory API server for one test (see the module docstring)."""

    def __init__(self, now: datetime.datetime) -> None:
        self.now = now  # when a graceful deletion starts
        self.objects: dict[tuple[Resource, str | None, str], Body] = {}
        self.calls: list[Call] = []
        # Resource types this "cluster" has no API for (a CRD not installed): creating one is a 404.
        self.missing_resources: set[Resource] = set()

    # -- for the test ----------------------------------------------------------------------------

    def put(self, resource: Resource, body: Body) -> Body:
        """Store ``body`` as it is, stamped like a created object, without recording a call."""
        stored = self._stamped(copy.deepcopy(body), body["metadata"].get("namespace"))
        self.objects[resource, stored["metadata"].get("namespace"), stored["metadata"]["name"]] = stored
        return copy.deepcopy(stored)

    def object(self, resource: Resource, namespace: str | None, name: str) -> Body | None:
        body = self.objects.get((resource, namespace, name))
        return copy.deepcopy(body) if body is not None else None

    @property
    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.verb not in ("get", "list")]

    def reads(self, resource: Resource, name: str | None = None) -> int:
        return sum(
            1 for c in self.calls if c.verb == "get" and c.resource == resource and name in (None, c.name)
        )

    def forget_calls(self) -> None:
        self.calls.clear()

    # -- the API ---------------------------------------------------------------------------------

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Body | None:
        self.calls.append(Call("get", resource, namespace, name))
        return self.object(resource, namespace, name)

    async def list_objects(
        self, resource: Resource, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> list[Body]:
        self.calls.append(Call("list", resource, namespace, "", dict(labels or {})))
        return [
            copy.deepcopy(body)
            for (res, ns, _), body in sorted(self.objects.items(), key=lambda item: item[0][2])
            if res == resource and ns == namespace and kube.matches_labels(body, labels)
        ]

    async def create(self, resource: Resource, namespace: str | None, body: Body) -> Body:
        name = body["metadata"]["name"]
        self.calls.append(Call("create", resource, namespace, name, copy.deepcopy(body)))
        if resource in self.missing_resources:
            raise kube.NotFound(404, "NotFound", "the server could not find the requested resource")
        if (resource, namespace, name) in self.objects:
            raise kube.Conflict(409, "AlreadyExists", f"{resource.plural} {name!r} already exists")
        stored = self._stamped(copy.deepcopy(body), namespace)
        self.objects[resource, namespace, name] = stored
        return copy.deepcopy(stored)

    async def patch(
        self, resource: Resource, namespace: str | None, name: str, patch: Body, *, subresource: str = ""
    ) -> Body:
        self.calls.append(
            Call(f"patch{'/' + subresource if subresource else ''}", resource, namespace, name, patch)
        )
        current = self._existing(resource, namespace, name)
        if subresource == "status":
            updated = {**current, "status": merge_patch(current.get("status"), patch.get("status") or {})}
        else:
            if resource in STATUS_SUBRESOURCE:
                patch = {k: v for k, v in patch.items() if k != "status"}
            updated = merge_patch(current, patch)
        return self._replace(resource, namespace, name, current, updated)

    async def patch_json(self, resource: Resource, namespace: str | None, name: str, ops: list[Body]) -> Body:
        self.calls.append(Call("patch/json", resource, namespace, name, copy.deepcopy(ops)))
        current = self._existing(resource, namespace, name)
        updated = jsonpatch.apply_patch(current, ops)
        return self._replace(resource, namespace, name, current, updated)

    async def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        grace_seconds: int | None = None,
        uid: str | None = None,
    ) -> bool:
        self.calls.append(Call("delete", resource, namespace, name, {"grace": grace_seconds, "uid": uid}))
        current = self.objects.get((resource, namespace, name))
        if current is None:
            return False
        if uid and current["metadata"]["uid"] != uid:
            raise kube.Conflict(409, "Conflict", f"precondition failed: uid in object meta: {uid}")
        if resource == kube.PODS and grace_seconds != 0:
            current["metadata"].setdefault("deletionTimestamp", format_micro_time(self.now))
        else:
            del self.objects[resource, namespace, name]
        return True

    async def close(self) -> None:
        return None

    # -- helpers ---------------------------------------------------------------------------------

    def _existing(self, resource: Resource, namespace: str | None, name: str) -> Body:
        current = self.objects.get((resource, namespace, name))
        if current is None:
            raise kube.NotFound(404, "NotFound", f"{resource.plural} {name!r} not found")
        return copy.deepcopy(current)

    def _replace(self, resource: Resource, namespace: str | None, name: str, old: Body, new: Body) -> Body:
        new["metadata"]["resourceVersion"] = str(next(_versions))
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
        self.objects[resource, namespace, name] = new
        return copy.deepcopy(new)

    @staticmethod
    def _stamped(body: Body, namespace: str | None) -> Body:
        meta = body["metadata"]
        if namespace is not None:
            meta.setdefault("namespace", namespace)
        meta.setdefault("uid", f"uid-{next(_uids)}")
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", "2025-01-01T00:00:00Z")
        meta["resourceVersion"] = str(next(_versions))
        return body


@dataclass
class FakeNode:
    """One kvnode process as the operator sees it."""

    health: Health = Health.SERVING
    status: admin_pb2.StatusResponse = field(default_factory=admin_pb2.StatusResponse)
    membership: Membership | None = None


class FakeReconfigurer:
    """Membership changes on the fake nodes. Each change reports progress and sets ``begun``;
    ``gate``, while it is an unset event, holds the change there; ``error`` fails the next one."""

    def __init__(self, admin: FakeAdmin) -> None:
        self.admin = admin
        self.changes: list[str] = []
        self.error: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.begun = asyncio.Event()
        self.progress: Progress = lambda message: None

    async def _begin(self, change: str) -> None:
        self.changes.append(change)
        self.progress(f"{change} in progress")
        self.begun.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    async def install(self, membership: Membership, extra: Sequence[str] = ()) -> None:
        await self._begin(f"install {membership.epoch}")
        self.admin.set_membership(membership)

    async def add(self, member_id: str, address: str, peer_address: str = "") -> Membership:
        await self._begin(f"add {member_id}")
        current = self.admin.newest()
        member = Member(member_id, address, peer_address=peer_address)
        members = (*(m for m in current.members if m.id != member_id), member)
        return self.admin.set_membership(replace(current, epoch=current.epoch + 1, members=members))

    async def remove(self, member_id: str) -> Membership:
        await self._begin(f"remove {member_id}")
        current = self.admin.newest()
        members = tuple(m for m in current.members if m.id != member_id)
        return self.admin.set_membership(replace(current, epoch=current.epoch + 1, members=members))


class FakeAdmin:
    """The nodes of a test, by address (see the module docstring)."""

    def __init__(self) -> None:
        self.nodes: dict[str, FakeNode] = {}
        self.reconfig = FakeReconfigurer(self)
        self.seeds: list[list[str]] = []
        self.backups: dict[str, dict[str, int]] = {}  # directory -> backup id -> created (unix)
        self.deleted: list[tuple[str, str]] = []
        self.restores: list[tuple[str, str, str]] = []
        self.restore_error: BaseException | None = None
        self.verify_problems: dict[str, list[str]] = {}  # node id -> problems its verification finds
        self.credentials: list[Credentials | None] = []  # what each pass presented

    def for_store(self, credentials: Credentials | None) -> FakeAdmin:
        self.credentials.append(credentials)
        return self

    def set_membership(self, membership: Membership) -> Membership:
        for node in self.nodes.values():
            node.membership = membership
        return membership

    def newest(self) -> Membership:
        memberships = [n.membership for n in self.nodes.values() if n.membership is not None]
        return max(memberships, key=lambda m: m.epoch)

    async def probe_all(self, addresses: dict[str, str]) -> dict[str, NodeHealth]:
        result = {}
        for name, address in addresses.items():
            node = self.nodes.get(address)
            if node is None or node.health is Health.UNREACHABLE:
                result[name] = NodeHealth(Health.UNREACHABLE, error="UNAVAILABLE: connection refused")
            else:
                result[name] = NodeHealth(node.health, node.status)
        return result

    async def membership(self, addresses: Sequence[str]) -> Membership | None:
        answers = [
            node.membership
            for a in addresses
            if (node := self.nodes.get(a)) is not None
            and node.health is not Health.UNREACHABLE
            and node.membership is not None
        ]
        return max(answers, key=lambda m: m.epoch) if answers else None

    @contextlib.asynccontextmanager
    async def reconfigurer(
        self, seeds: Sequence[str], progress: Progress | None = None
    ) -> AsyncIterator[FakeReconfigurer]:
        self.seeds.append(list(seeds))
        if progress is not None:
            self.reconfig.progress = progress
        yield self.reconfig

    async def backup(self, address: str, directory: str, backup_id: str) -> admin_pb2.BackupManifest:
        node = self._serving(address)
        self.backups.setdefault(directory, {})[backup_id] = 1_700_000_000
        return admin_pb2.BackupManifest(backup_id=backup_id, node_id=node.status.node_id, keys=10)

    async def verify(
        self, address: str, directory: str, backup_id: str, node_id: str = ""
    ) -> admin_pb2.VerifyBackupResponse:
        self._serving(address)
        if backup_id not in self.backups.get(directory, {}):
            return admin_pb2.VerifyBackupResponse(ok=False, problems=[f"{node_id}: no snapshot {backup_id}"])
        problems = self.verify_problems.get(node_id, [])
        manifest = admin_pb2.BackupManifest(backup_id=backup_id, node_id=node_id, keys=10, sha256="ab")
        return admin_pb2.VerifyBackupResponse(ok=not problems, manifests=[manifest], problems=problems)

    async def list_backups(self, address: str, directory: str) -> list[admin_pb2.BackupSummary]:
        self._serving(address)
        return [
            admin_pb2.BackupSummary(backup_id=backup_id, created_unix=created)
            for backup_id, created in sorted(self.backups.get(directory, {}).items())
        ]

    async def delete_backup(self, address: str, directory: str, backup_id: str) -> bool:
        self._serving(address)
        self.deleted.append((directory, backup_id))
        return self.backups.get(directory, {}).pop(backup_id, None) is not None

    async def restore(self, address: str, directory: str, backup_id: str) -> admin_pb2.RestoreResponse:
        self._serving(address)
        self.restores.append((address, directory, backup_id))
        if self.restore_error is not None:
            raise self.restore_error
        return admin_pb2.RestoreResponse(records=12, keys=10)

    def _serving(self, address: str) -> FakeNode:
        node = self.nodes.get(address)
        if node is None or node.health is not Health.SERVING:
            raise Unavailable(f"cannot reach {address}")
        return node


@dataclass
class RecordedEvents:
    """The Events a test's operator posted: (object name, type, reason, message)."""

    posted: list[tuple[str, str, str, str]] = field(default_factory=list)

    def __call__(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        self.posted.append((str(body.get("metadata", {}).get("name")), kind, reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, _, reason, _ in self.posted]
