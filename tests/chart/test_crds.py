"""Sample KVStore and KVBackup resources, good and bad, against the CRDs' schemas and CEL rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from e2e.kind.k8s import chaos_store
from tests.chart.crd_validation import apply_defaults, validate, version_schema
from tests.chart.helpers import REPO, VALUE_SETS, Body, crds, render

CRDS = crds()


def kvstore(**spec: Any) -> Body:
    return {
        "apiVersion": "kvstore.dev/v1alpha1",
        "kind": "KVStore",
        "metadata": {"name": "demo"},
        "spec": spec,
    }


def kvbackup(**spec: Any) -> Body:
    return {
        "apiVersion": "kvstore.dev/v1alpha1",
        "kind": "KVBackup",
        "metadata": {"name": "b1"},
        "spec": spec,
    }


def examples() -> list[Body]:
    out = []
    for path in sorted((REPO / "operator" / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion", "").startswith("kvstore.dev/"):
                out.append(doc)
    return out


GOOD_STORES = {
    "empty spec (all defaults)": kvstore(),
    "five nodes": kvstore(replicas=5, replicationFactor=3, defaultConsistency="LINEARIZABLE"),
    "single node": kvstore(replicas=1, replicationFactor=1),
    "storage and placement": kvstore(
        storage={"size": "1.5Ti", "storageClassName": "fast", "deleteClaimsOnScaleDown": True},
        podAntiAffinity={"mode": "Required", "topologyKey": "topology.kubernetes.io/zone"},
        podDisruptionBudget={"enabled": False},
        resources={"requests": {"cpu": "1", "memory": "2Gi"}},
        nodeSelector={"disk": "ssd"},
        tolerations=[{"key": "k", "operator": "Exists"}],
    ),
    "backups": kvstore(
        backup={
            "volume": {"claimName": "b"},
            "schedule": "@every 6h",
            "path": "a/b-c.d",
            "retention": {"keep": 3},
        }
    ),
    "restore by name": kvstore(restoreFrom={"backupName": "b1"}),
    "restore by id": kvstore(restoreFrom={"backupId": "b1", "claimName": "c", "path": "demo"}),
}

BAD_STORES = {
    "no spec": ({"apiVersion": "kvstore.dev/v1alpha1", "kind": "KVStore", "metadata": {"name": "x"}}, "spec"),
    "zero replicas": (kvstore(replicas=0), "minimum"),
    "replicas as a string": (kvstore(replicas="3"), "is not of type 'integer'"),
    "RF above the maximum": (kvstore(replicas=20, replicationFactor=16), "maximum"),
    "unknown consistency": (kvstore(defaultConsistency="STRONG"), "is not one of"),
    "unknown pull policy": (kvstore(imagePullPolicy="Sometimes"), "is not one of"),
    "bad storage size": (kvstore(storage={"size": "10 GB"}), "does not match"),
    "bad anti-affinity mode": (kvstore(podAntiAffinity={"mode": "Always"}), "is not one of"),
    "zero PDB": (kvstore(podDisruptionBudget={"maxUnavailable": 0}), "minimum"),
    # a backup with neither a volume nor a bucket is refused by a CEL rule (test_cel.py)
    "bucket without a key": (
        kvstore(backup={"objectStore": {"bucket": "bkt"}}),
        "'hmacKeySecret' is a required",
    ),
    "bad bucket name": (
        kvstore(backup={"objectStore": {"bucket": "Bkt_1", "hmacKeySecret": {"name": "k"}}}),
        "does not match",
    ),
    "backup claim empty": (kvstore(backup={"volume": {"claimName": ""}}), "non-empty"),
    "absolute backup path": (kvstore(backup={"volume": {"claimName": "b"}, "path": "/x"}), "does not match"),
    "keep zero": (kvstore(backup={"volume": {"claimName": "b"}, "retention": {"keep": 0}}), "minimum"),
    "unknown field": (kvstore(replica=3), "Additional properties are not allowed"),
    "unknown nested field": (kvstore(storage={"sizes": "1Gi"}), "Additional properties are not allowed"),
    "bad backup id": (
        kvstore(restoreFrom={"backupId": "../x", "claimName": "c", "path": "p"}),
        "does not match",
    ),
    # CEL rules
    "RF above replicas": (
        kvstore(replicas=3, replicationFactor=5),
        "replicationFactor must not exceed replicas",
    ),
    "RF above defaulted replicas": (
        kvstore(replicationFactor=5),
        "replicationFactor must not exceed replicas",
    ),
    "replicas below the default RF": (kvstore(replicas=2), "replicationFactor must not exceed replicas"),
    "restore names two sources": (
        kvstore(restoreFrom={"backupName": "b1", "backupId": "b1", "claimName": "c", "path": "p"}),
        "exactly one",
    ),
    "restore names none": (kvstore(restoreFrom={"claimName": "c"}), "exactly one"),
    "restore id without claim": (
        kvstore(restoreFrom={"backupId": "b1"}),
        "backupId needs claimName and path",
    ),
}


@pytest.mark.parametrize("name", sorted(GOOD_STORES))
def test_good_kvstores_are_accepted(name: str) -> None:
    assert validate(CRDS["KVStore"], GOOD_STORES[name]) == []


@pytest.mark.parametrize("name", sorted(BAD_STORES))
def test_bad_kvstores_are_refused(name: str) -> None:
    obj, expected = BAD_STORES[name]
    errors = validate(CRDS["KVStore"], obj)
    assert errors, f"{name}: accepted"
    assert any(expected in e for e in errors), errors


def test_examples_the_charts_and_the_kind_suites_kvstores_are_valid() -> None:
    samples = examples()
    assert {s["kind"] for s in samples} == {"KVStore", "KVBackup"}
    for value_set in ("store", "backups", "everything", "namespaced"):
        samples.append(render(VALUE_SETS[value_set]).one("KVStore"))
    # The kind suite's stores: the quick start's and the chaos tests'.
    samples.append(yaml.safe_load((REPO / "e2e" / "kind" / "kvstore.yaml").read_text()))
    samples.append(chaos_store("chaos", "kv-chaos", 3))
    for sample in samples:
        assert validate(CRDS[sample["kind"]], sample) == [], sample["metadata"]["name"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"replicationFactor": 1}, "replicationFactor is immutable"),
        ({"partitions": 64}, "partitions is immutable"),
        ({"storage": {"size": "20Gi"}}, "storage.size is immutable"),
        ({"storage": {"storageClassName": "other"}}, "storage.storageClassName is immutable"),
        ({"restoreFrom": {"backupName": "b2"}}, "restoreFrom is immutable"),
    ],
)
def test_immutable_fields_refuse_updates(change: Body, message: str) -> None:
    old = kvstore(
        replicas=3, storage={"size": "10Gi", "storageClassName": "fast"}, restoreFrom={"backupName": "b1"}
    )
    new = copy.deepcopy(old)
    for key, value in change.items():
        new["spec"][key] = {**new["spec"].get(key, {}), **value} if isinstance(value, dict) else value
    assert validate(CRDS["KVStore"], new) == [], "the new object alone is valid"
    errors = validate(CRDS["KVStore"], new, old=old)
    assert any(message in e for e in errors), errors


def test_scaling_is_an_allowed_update() -> None:
    old = kvstore(replicas=3)
    assert validate(CRDS["KVStore"], kvstore(replicas=5), old=old) == []
    assert validate(CRDS["KVStore"], kvstore(replicas=3, image="kvstore:0.2.0"), old=old) == []


def test_defaults_match_the_documented_ones() -> None:
    spec = apply_defaults(version_schema(CRDS["KVStore"]), kvstore())["spec"]
    assert (spec["replicas"], spec["replicationFactor"], spec["partitions"]) == (3, 3, 1024)
    assert spec["defaultConsistency"] == "QUORUM" and spec["port"] == 7000 and spec["metricsPort"] == 9100
    assert spec["storage"]["size"] == "10Gi" and spec["podAntiAffinity"]["mode"] == "Preferred"


def test_kvbackups() -> None:
    assert validate(CRDS["KVBackup"], kvbackup(storeName="demo")) == []
    assert any("'storeName' is a required property" in e for e in validate(CRDS["KVBackup"], kvbackup()))
    assert any("non-empty" in e for e in validate(CRDS["KVBackup"], kvbackup(storeName="")))
    assert any("Additional properties" in e for e in validate(CRDS["KVBackup"], kvbackup(storeName="a", x=1)))
    errors = validate(CRDS["KVBackup"], kvbackup(storeName="other"), old=kvbackup(storeName="demo"))
    assert any("immutable" in e for e in errors), errors
