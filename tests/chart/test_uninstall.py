"""``helm uninstall`` against the chart's own objects and what the operator makes for its store, in
Helm's own order, with garbage collection after it.

Helm deletes a release's objects by kind in ``UninstallOrder``, and kinds it does not know (custom
resources such as KVStore) last (helm pkg/release/util/kind_sorter.go, ``lessByKind``: "unknown
kind is last"). The operator's Deployment and RBAC are gone by then, which a store no longer
minds: a KVStore has no finalizer, and everything the operator makes for it carries an owner
reference to it, so the garbage collector deletes it once the store is gone, operator or not.

``store.keepOnUninstall`` (default true) keeps the chart's store (``helm.sh/resource-policy:
keep``): the store, its cluster and its data outlive the release. With false, Helm deletes the
store (last), and garbage collection everything the store owned; only the backup claim (kept) and,
unless ``storage.deleteClaimsOnDelete``, the data volumes remain.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from kvoperator.builders.backup import build_scheduled_backup
from kvoperator.builders.common import owner_reference
from kvoperator.builders.config import build_configmap
from kvoperator.builders.pdb import build_pdb
from kvoperator.builders.services import build_client_service, build_headless_service
from kvoperator.builders.statefulset import build_statefulset
from kvoperator.config import OperatorConfig
from kvoperator.spec import parse_store_spec

from tests.chart.helpers import VALUE_SETS, Body, Rendered, render

# helm v3 pkg/release/util/kind_sorter.go, UninstallOrder (Helm 3.18).
UNINSTALL_ORDER = [
    "APIService", "Ingress", "IngressClass", "Service", "CronJob", "Job", "StatefulSet",
    "HorizontalPodAutoscaler", "Deployment", "ReplicaSet", "ReplicationController", "Pod", "DaemonSet",
    "RoleBindingList", "RoleBinding", "RoleList", "Role", "ClusterRoleBindingList", "ClusterRoleBinding",
    "ClusterRoleList", "ClusterRole", "CustomResourceDefinition", "PersistentVolumeClaim",
    "PersistentVolume", "StorageClass", "ConfigMap", "SecretList", "Secret", "ServiceAccount",
    "PodDisruptionBudget", "PodSecurityPolicy", "LimitRange", "ResourceQuota", "NetworkPolicy",
    "Namespace", "PriorityClass",
]  # fmt: skip

STORE_VALUE_SETS = sorted(
    name for name, values in VALUE_SETS.items() if values.get("store", {}).get("create")
)


def uninstall_order(objects: list[Body]) -> list[Body]:
    """The order in which helm uninstall deletes them (a stable sort, unknown kinds last)."""
    rank = {kind: i for i, kind in enumerate(UNINSTALL_ORDER)}
    deletable = [
        o
        for o in objects
        if (o["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") != "keep"
    ]
    return sorted(deletable, key=lambda o: rank.get(o["kind"], len(rank)))


STORE_UID = "uid-store"


def not_kept(values: Body, **store: Any) -> Body:
    """``values`` with ``store.keepOnUninstall=false`` (and the other store ``store`` values)."""
    return {**values, "store": {**values.get("store", {}), "keepOnUninstall": False, **store}}


def children(store: Body) -> list[Body]:
    """Everything the operator makes for the store (its builders), but the StatefulSet's pods and
    volumes (those are the StatefulSet controller's: :func:`store_objects`)."""
    owner = {**store, "metadata": {**store["metadata"], "uid": STORE_UID}}
    spec = parse_store_spec(store["spec"])
    config = OperatorConfig()
    return [
        build_statefulset(owner, spec, spec.replicas, config),
        build_headless_service(owner, spec),
        build_client_service(owner, spec),
        build_configmap(owner, spec, spec.replicas, config),
        build_pdb(owner, spec),
        build_scheduled_backup(owner, datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)),
    ]


def uid(body: Body) -> str:
    return str(body["metadata"].get("uid") or f"uid-{body['kind']}-{body['metadata']['name']}")


def release_objects(rendered: Rendered) -> list[Body]:
    """The release's objects as the API server has them: with uids (the store's that of its
    children's owner references)."""
    return [
        {**o, "metadata": {**o["metadata"], "uid": STORE_UID if o["kind"] == "KVStore" else uid(o)}}
        for o in rendered.objects
    ]


def store_objects(rendered: Rendered) -> list[Body]:
    """What the operator makes for the chart's store, and the StatefulSet controller's pods and
    data volumes. The pods are owned by the StatefulSet; the volumes too when its retention policy
    says ``whenDeleted: Delete`` (that is how the StatefulSet controller has them deleted with it)."""
    made = children(rendered.one("KVStore"))
    sts = next(o for o in made if o["kind"] == "StatefulSet")
    name = sts["metadata"]["name"]
    sts_ref = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "uid": uid(sts)}
    claims_go = sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    objects = list(made)
    for ordinal in range(sts["spec"]["replicas"]):
        pod = f"{name}-{ordinal}"
        objects.append(
            {"kind": "Pod", "metadata": {"name": pod, "ownerReferences": [{**sts_ref, "controller": True}]}}
        )
        for template in sts["spec"]["volumeClaimTemplates"]:
            claim = {
                "name": f"{template['metadata']['name']}-{pod}",
                "ownerReferences": [sts_ref] if claims_go else [],
            }
            objects.append({"kind": "PersistentVolumeClaim", "metadata": claim})
    return objects


def after_uninstall(rendered: Rendered) -> list[Body]:
    """What is left once ``helm uninstall`` has deleted the release's objects (all but the kept
    ones) and the garbage collector every object whose owners are all gone. No operator runs: Helm
    deletes it before any custom kind."""
    release = release_objects(rendered)
    deleted = {uid(o) for o in uninstall_order(release)}
    left = [o for o in release + store_objects(rendered) if uid(o) not in deleted]
    while True:
        present = {uid(o) for o in left}
        orphans = {
            uid(o)
            for o in left
            if (refs := o["metadata"].get("ownerReferences") or [])
            and not any(ref["uid"] in present for ref in refs)
        }
        if not orphans:
            return left
        left = [o for o in left if uid(o) not in orphans]


def names(objects: list[Body]) -> set[str]:
    return {f"{o['kind']}/{o['metadata']['name']}" for o in objects}


def kept(rendered: Rendered) -> list[Body]:
    return [
        o
        for o in rendered.objects
        if (o["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep"
    ]


@pytest.mark.parametrize("value_set", STORE_VALUE_SETS)
def test_a_kept_store_is_never_deleted_by_helm(value_set: str) -> None:
    """By default (store.keepOnUninstall true) the store outlives the release, and all it owns."""
    rendered = render(VALUE_SETS[value_set])
    order = [o["kind"] for o in uninstall_order(rendered.objects)]
    assert "KVStore" in rendered.kinds() and "KVStore" not in order
    assert "Deployment" in order  # the operator does go
    assert rendered.one("KVStore")["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "outlives the release" in rendered.notes and "delete kvstore" in rendered.notes
    left = names(after_uninstall(rendered))
    assert names([rendered.one("KVStore")]) | names(store_objects(rendered)) <= left


@pytest.mark.parametrize("value_set", STORE_VALUE_SETS)
def test_a_store_that_is_not_kept_goes_last_and_without_the_operator(value_set: str) -> None:
    rendered = render(not_kept(VALUE_SETS[value_set]))
    store = rendered.one("KVStore")
    assert "helm.sh/resource-policy" not in (store["metadata"].get("annotations") or {})
    assert not store["metadata"].get("finalizers")
    order = [o["kind"] for o in uninstall_order(rendered.objects)]
    assert order.count("KVStore") == 1
    # Last, with the other kinds Helm does not know (ServiceMonitor, PrometheusRule).
    assert not set(order[order.index("KVStore") :]) & set(UNINSTALL_ORDER)
    assert order.index("Deployment") < order.index("KVStore")  # the operator goes first
    assert "keepOnUninstall=false" in rendered.notes and "outlives the release" not in rendered.notes


@pytest.mark.parametrize("delete_claims", [False, True])
@pytest.mark.parametrize("value_set", STORE_VALUE_SETS)
def test_nothing_of_a_store_that_is_not_kept_is_left_but_its_data(
    value_set: str, delete_claims: bool
) -> None:
    """Every object the store needs is deleted by Helm or owned by something that goes: only the
    chart's backup claim (kept: backups outlive the release) and, unless deleteClaimsOnDelete, the
    data volumes remain."""
    storage = {**VALUE_SETS[value_set]["store"].get("storage", {}), "deleteClaimsOnDelete": delete_claims}
    rendered = render(not_kept(VALUE_SETS[value_set], storage=storage))
    assert {o["kind"] for o in kept(rendered)} <= {"PersistentVolumeClaim"}  # the backup claim, if any
    data = [
        o
        for o in store_objects(rendered)
        if o["kind"] == "PersistentVolumeClaim" and not o["metadata"]["ownerReferences"]
    ]
    assert len(data) == (0 if delete_claims else rendered.one("KVStore")["spec"]["replicas"])
    assert names(after_uninstall(rendered)) == names(kept(rendered)) | names(data)


def test_the_order_puts_custom_kinds_after_the_operator() -> None:
    """Why deleting a store must need no operator: Helm deletes the KVStore after the operator."""
    rendered = render(not_kept(VALUE_SETS["everything"]))
    order = [o["kind"] for o in uninstall_order(rendered.objects)]
    assert order.index("Deployment") < order.index("KVStore")
    assert order.index("ClusterRoleBinding") < order.index("KVStore")


def test_every_child_goes_with_the_store_by_garbage_collection() -> None:
    """Deleting the store, by Helm or by kubectl, operator or not, takes everything it made along."""
    store = render(VALUE_SETS["everything"]).one("KVStore")
    expected = owner_reference({**store, "metadata": {**store["metadata"], "uid": STORE_UID}})
    for child in children(store):
        refs = child["metadata"].get("ownerReferences") or []
        assert expected in refs, f"{child['kind']} {child['metadata']['name']} is not owned by the store"
        assert not any(ref.get("blockOwnerDeletion") for ref in refs)
    kinds = {c["kind"] for c in children(store)}
    assert kinds == {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", "KVBackup"}


@pytest.mark.parametrize("keep_store", [True, False])
def test_the_backup_claim_is_kept_too(keep_store: bool) -> None:
    values = VALUE_SETS["backups"]
    rendered = render(values if keep_store else not_kept(values))
    deleted = {o["kind"] for o in uninstall_order(rendered.objects)}
    assert "PersistentVolumeClaim" in rendered.kinds() and "PersistentVolumeClaim" not in deleted
