"""Every CEL rule of the CRDs, run by a real CEL implementation (cel-python) with the API server's
semantics (tests/chart/crd_validation.py): a table of creates and updates that must be admitted or
refused, names at and past the length limit, and immutable fields that are added or removed."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kvoperator import names

from tests.chart.crd_validation import RuleRun, rules, validate
from tests.chart.helpers import Body, crds

CRDS = crds()
# The longest name a KVStore may have (charts/kvstore/crds/kvstores.kvstore.dev.yaml explains it):
# 63 (a label value) - 1 ("-") - 10 (the controller-revision-hash suffix).
MAX_NAME = 52


def test_the_crd_bounds_the_name_by_its_schema() -> None:
    """maxLength on metadata.name: enforced by the server's schema validation, and it bounds the
    estimated cost of the name's CEL rule (an unbounded string is estimated at the request size,
    which a regular expression over it would exceed the rule cost budget with)."""
    from tests.chart.crd_validation import version_schema

    name = version_schema(CRDS["KVStore"])["properties"]["metadata"]["properties"]["name"]
    assert name == {"type": "string", "maxLength": MAX_NAME}


def store(name: str = "demo", **spec: Any) -> Body:
    return {"apiVersion": "kvstore.dev/v1alpha1", "kind": "KVStore", "metadata": {"name": name}, "spec": spec}


def backup(store_name: str = "demo") -> Body:
    return {
        "apiVersion": "kvstore.dev/v1alpha1",
        "kind": "KVBackup",
        "metadata": {"name": "b1"},
        "spec": {"storeName": store_name},
    }


def changed(old: Body, **spec: Any) -> Body:
    """``old`` with spec keys set (a value of None removes the key)."""
    new = copy.deepcopy(old)
    for key, value in spec.items():
        if value is None:
            new["spec"].pop(key, None)
        else:
            new["spec"][key] = value
    return new


RESTORED = store(restoreFrom={"backupName": "b1"})
CLASSED = store(storage={"size": "10Gi", "storageClassName": "fast"})
PLAIN = store(storage={"size": "10Gi"})

# (object, old object or None for a create, None if admitted or a fragment of the refusal)
CASES: dict[str, tuple[Body, Body | None, str | None]] = {
    # names
    "a short name": (store("a"), None, None),
    f"a name of {MAX_NAME} characters": (store("a" * MAX_NAME), None, None),
    # metadata.name's maxLength (the OpenAPI schema; it also bounds the CEL rule's cost)
    f"a name of {MAX_NAME + 1} characters": (store("a" * (MAX_NAME + 1)), None, "is too long"),
    "a name of 63 characters": (store("s" + "-x" * 31), None, "is too long"),
    "a name starting with a digit": (store("1st"), None, "DNS-1035 label"),
    "a name with a dot": (store("a.b"), None, "DNS-1035 label"),
    "a name ending in a dash": (store("ab-"), None, "DNS-1035 label"),
    "a name with upper case": (store("Demo"), None, "DNS-1035 label"),
    "a name with inner dashes": (store("my-store-2"), None, None),
    # replicationFactor against replicas
    "RF equal to replicas": (store(replicas=3, replicationFactor=3), None, None),
    "RF above replicas": (store(replicas=2, replicationFactor=3), None, "must not exceed replicas"),
    "scale below RF": (store(replicas=2), store(replicas=3), "must not exceed replicas"),
    "scale up": (store(replicas=5), store(replicas=3), None),
    # immutable fields that always have a value (defaulted)
    "change RF": (
        store(replicas=5, replicationFactor=1),
        store(replicas=5),
        "replicationFactor is immutable",
    ),
    "change partitions": (store(partitions=64), store(), "partitions is immutable"),
    "set partitions to its default": (store(partitions=1024), store(), None),
    "change size": (store(storage={"size": "20Gi"}), PLAIN, "storage.size is immutable"),
    # storageClassName: optional, so adding and removing must be refused too
    "change storage class": (
        store(storage={"size": "10Gi", "storageClassName": "slow"}),
        CLASSED,
        "storageClassName is immutable",
    ),
    "add storage class": (CLASSED, PLAIN, "storageClassName is immutable"),
    "add storage class to a defaulted storage": (CLASSED, store(), "storageClassName is immutable"),
    "remove storage class": (PLAIN, CLASSED, "storageClassName is immutable"),
    "keep storage class": (changed(CLASSED, replicas=5), CLASSED, None),
    "keep no storage class": (changed(PLAIN, replicas=5), PLAIN, None),
    # restoreFrom: optional and immutable
    "restore by name": (RESTORED, None, None),
    "change restore source": (store(restoreFrom={"backupName": "b2"}), RESTORED, "restoreFrom is immutable"),
    "add restore source": (RESTORED, store(), "restoreFrom is immutable"),
    "remove restore source": (store(), RESTORED, "restoreFrom is immutable"),
    "keep restore source": (changed(RESTORED, replicas=5), RESTORED, None),
    "restore names two sources": (
        store(restoreFrom={"backupName": "b", "backupId": "i", "claimName": "c", "path": "p"}),
        None,
        "exactly one",
    ),
    "restore names none": (store(restoreFrom={"claimName": "c"}), None, "exactly one"),
    "restore id without a claim": (store(restoreFrom={"backupId": "i"}), None, "needs claimName and path"),
    "restore id from a bucket": (store(restoreFrom={"backupId": "i", "url": "s3://bkt/demo"}), None, None),
    "backups to a volume and a bucket": (
        store(
            backup={
                "volume": {"claimName": "c"},
                "objectStore": {"bucket": "bkt", "hmacKeySecret": {"name": "k"}},
            }
        ),
        None,
        "exactly one of volume or objectStore",
    ),
    "backups to nowhere": (
        store(backup={"schedule": "@daily"}),
        None,
        "exactly one of volume or objectStore",
    ),
    "backups to a bucket": (
        store(backup={"objectStore": {"bucket": "bkt", "hmacKeySecret": {"name": "k"}}}),
        None,
        None,
    ),
    "restore id with claim and path": (
        store(restoreFrom={"backupId": "i", "claimName": "c", "path": "p"}),
        None,
        None,
    ),
    # KVBackup
    "a backup": (backup(), None, None),
    "a backup's spec changes": (backup("other"), backup(), "spec is immutable"),
    "a backup's metadata changes": (
        {**backup(), "metadata": {"name": "b1", "labels": {"x": "y"}}},
        backup(),
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_admitted_or_refused(case: str) -> None:
    obj, old, refusal = CASES[case]
    errors = validate(CRDS[obj["kind"]], obj, old=old)
    if refusal is None:
        assert errors == []
    else:
        assert errors, f"{case}: admitted"
        assert any(refusal in e for e in errors), errors


def test_every_rule_of_the_crds_is_run_and_both_holds_and_fails() -> None:
    """The table exercises every rule both ways: a rule added to a CRD without cases fails here."""
    runs: dict[str, list[RuleRun]] = {"KVStore": [], "KVBackup": []}
    for obj, old, _ in CASES.values():
        validate(CRDS[obj["kind"]], obj, old=old, runs=runs[obj["kind"]])
    for kind, crd in CRDS.items():
        outcomes = {(r.path, r.rule): set[bool]() for r in runs[kind]}
        for run in runs[kind]:
            outcomes[(run.path, run.rule)].add(run.held)
        for rule in rules(crd):
            assert outcomes.get(rule) == {True, False}, f"{kind} rule {rule} ran with {outcomes.get(rule)}"


@pytest.mark.parametrize("length", [1, MAX_NAME])
def test_the_longest_admitted_name_fits_every_child(length: int) -> None:
    """Names the CRD admits give children the API server admits (the names the operator uses)."""
    name = "a" * length
    assert validate(CRDS["KVStore"], store(name)) == []
    revision_label = f"{names.statefulset(name)}-{'h' * 10}"  # controller-revision-hash
    assert len(revision_label) <= 63
    for service in (names.client_service(name), names.headless_service(name)):
        assert len(service) <= 63 and service[0].isalpha() and "." not in service
    assert len(names.pod(name, 999)) <= 63  # replicas are at most 1000


# -- the emulation itself ---------------------------------------------------------------------------


def crd_with(field_schema: Body) -> Body:
    """A CRD whose spec has one string field ``f`` with the given rules."""
    return {
        "metadata": {"name": "t.example.com"},
        "spec": {
            "versions": [
                {
                    "name": "v1alpha1",
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "metadata": {"type": "object"},
                                "spec": {"type": "object", "properties": {"f": field_schema}},
                            },
                        }
                    },
                }
            ]
        },
    }


def obj(**spec: Any) -> Body:
    return {"metadata": {"name": "x"}, "spec": spec}


def test_a_transition_rule_on_a_field_misses_adding_and_removing_it() -> None:
    """Why the CRD's rules sit on the parent: the server skips a field's transition rule where the
    old or the new object lacks the field."""
    crd = crd_with({"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]})
    assert validate(crd, obj(f="b"), old=obj(f="a")) != []
    assert validate(crd, obj(f="b"), old=obj()) == []  # added: unchecked
    assert validate(crd, obj(), old=obj(f="a")) == []  # removed: unchecked
    assert validate(crd, obj(f="b")) == []  # a create: no old object


def test_optional_old_self_runs_on_create_and_when_added() -> None:
    rule = {"rule": "!oldSelf.hasValue() || self == oldSelf.value()", "optionalOldSelf": True}
    crd = crd_with({"type": "string", "x-kubernetes-validations": [rule]})
    runs: list[RuleRun] = []
    assert validate(crd, obj(f="b"), runs=runs) == [] and len(runs) == 1  # ran on create
    assert validate(crd, obj(f="b"), old=obj()) == []
    assert validate(crd, obj(f="b"), old=obj(f="a")) != []
    strict = {"rule": "oldSelf.orValue('') == self", "optionalOldSelf": True}
    crd = crd_with({"type": "string", "x-kubernetes-validations": [strict]})
    assert validate(crd, obj(f="b"), old=obj()) != []  # adding the field is refused
    assert validate(crd, obj(f=""), old=obj()) == []


def test_a_rule_that_cannot_be_evaluated_refuses() -> None:
    crd = crd_with({"type": "string", "x-kubernetes-validations": [{"rule": "oldSelf.value() == self"}]})
    # Not optionalOldSelf: oldSelf is a plain string, which has no value() member.
    errors = validate(crd, obj(f="b"), old=obj(f="b"))
    assert errors and "failed to evaluate" in errors[0]
    crd = crd_with({"type": "string", "x-kubernetes-validations": [{"rule": "self ==="}]})
    assert "failed to evaluate" in validate(crd, obj(f="b"))[0]


def test_message_expression_and_root_metadata() -> None:
    rule = {"rule": "size(self) < 3", "messageExpression": "'too long: ' + self"}
    crd = crd_with({"type": "string", "x-kubernetes-validations": [rule]})
    assert validate(crd, obj(f="abcd")) == [".spec.f: too long: abcd"]
    root = crd_with({"type": "string"})
    schema = root["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["x-kubernetes-validations"] = [{"rule": "!has(self.metadata.labels)"}]
    # A rule on the root sees only metadata.name and metadata.generateName.
    assert validate(root, {"metadata": {"name": "x", "labels": {"a": "b"}}, "spec": {}}) == []
    schema["x-kubernetes-validations"] = [{"rule": "self.metadata.name == 'x'"}]
    assert validate(root, {"metadata": {"name": "y"}, "spec": {}}) != []


@pytest.mark.parametrize(
    "name", ["a", "demo", "a" * MAX_NAME, "a" * (MAX_NAME + 1), "1st", "a.b", "ab-", "my-store-2", "x" * 63]
)
def test_the_crd_and_the_operator_agree_on_names(name: str) -> None:
    """The operator refuses a name whose children the API server would refuse (part B's
    names.name_problem); the CRD must admit exactly the names the operator accepts."""
    problem = getattr(names, "name_problem", None)
    if problem is None:
        pytest.skip("kvoperator.names has no name_problem (the operator does not check names itself)")
    admitted = validate(CRDS["KVStore"], store(name)) == []
    assert admitted == (problem(name) is None), (name, problem(name))
