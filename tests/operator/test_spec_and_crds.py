"""Spec parsing, settings, and the CRDs: their defaults agree with the operator's, and the example
manifests are valid against their schemas."""

from __future__ import annotations

import datetime
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from kvoperator.conditions import compute_status
from kvoperator.config import AddressMode, OperatorConfig, env_names, parse_setting
from kvoperator.memory import Memory, PodRecord, RebuildReported, Retry
from kvoperator.observation import Observed
from kvoperator.report import Report
from kvoperator.spec import SpecError, StoreSpec, parse_backup_spec, parse_store_spec

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "charts" / "kvstore" / "crds"
EXAMPLES = ROOT / "operator" / "examples"


def schema(crd: str) -> dict[str, Any]:
    data = yaml.safe_load((CRDS / crd).read_text())
    return dict(data["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Structural-schema defaulting, as the API server does it."""
    if node.get("type") == "object" and isinstance(value, dict):
        for key, sub in (node.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = yaml.safe_load(yaml.safe_dump(sub["default"]))
            if key in value:
                value[key] = apply_defaults(sub, value[key])
    return value


def validate(node: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """A small structural-schema validator: types, required, enums, bounds, patterns, unknown fields."""
    kind = node.get("type")
    problems: list[str] = []
    types = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "boolean": bool,
        "number": (int, float),
    }
    if kind and not isinstance(value, types[kind]):  # type: ignore[arg-type]
        return [f"{path}: expected {kind}, got {value!r}"]
    if "enum" in node and value not in node["enum"]:
        problems.append(f"{path}: {value!r} not in {node['enum']}")
    if "minimum" in node and value < node["minimum"]:
        problems.append(f"{path}: {value} < {node['minimum']}")
    if "maximum" in node and value > node["maximum"]:
        problems.append(f"{path}: {value} > {node['maximum']}")
    if "pattern" in node and not re.search(node["pattern"], value):
        problems.append(f"{path}: {value!r} does not match {node['pattern']}")
    if kind == "object":
        props = node.get("properties")
        for key in node.get("required") or []:
            if key not in value:
                problems.append(f"{path}.{key}: required")
        for key, sub in value.items():
            if props is not None and key in props:
                problems += validate(props[key], sub, f"{path}.{key}")
            elif "additionalProperties" in node:
                problems += validate(node["additionalProperties"], sub, f"{path}.{key}")
            elif props is not None and not node.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f"{path}.{key}: unknown field")
    if kind == "array":
        for i, item in enumerate(value):
            problems += validate(node.get("items") or {}, item, f"{path}[{i}]")
    return problems


def test_crd_defaults_match_the_operators_defaults() -> None:
    spec_schema = schema("kvstores.kvstore.dev.yaml")["properties"]["spec"]
    defaulted = apply_defaults(spec_schema, {})
    assert parse_store_spec(defaulted) == parse_store_spec({}) == StoreSpec()
    assert defaulted["replicas"] == 3 and defaulted["storage"]["size"] == "10Gi"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    body = yaml.safe_load(path.read_text())
    if body["kind"] not in ("KVStore", "KVBackup"):
        return
    crd = "kvstores.kvstore.dev.yaml" if body["kind"] == "KVStore" else "kvbackups.kvstore.dev.yaml"
    root = schema(crd)
    assert validate(root["properties"]["spec"], body["spec"], "spec") == []
    defaulted = apply_defaults(root["properties"]["spec"], body["spec"])
    if body["kind"] == "KVStore":
        parse_store_spec(defaulted)
    else:
        parse_backup_spec(defaulted)


def test_the_schema_refuses_bad_specs() -> None:
    spec_schema = schema("kvstores.kvstore.dev.yaml")["properties"]["spec"]
    assert validate(spec_schema, {"replicas": 0}, "spec") == ["spec.replicas: 0 < 1"]
    assert validate(spec_schema, {"defaultConsistency": "MOST"}, "spec")
    assert validate(spec_schema, {"storage": {"size": "lots"}}, "spec")
    assert validate(spec_schema, {"replicaz": 3}, "spec") == ["spec.replicaz: unknown field"]
    rules = [r["rule"] for r in spec_schema["x-kubernetes-validations"]]
    assert "self.replicationFactor <= self.replicas" in rules


def test_status_fields_written_by_the_operator_are_in_the_schema() -> None:
    """Everything the status step writes is in the schema: a real API server would prune the rest,
    and what the decisions remember would be lost at every pass."""
    observed = Observed(store={"metadata": {"name": "kv", "namespace": "ns", "uid": "u"}}, spec=StoreSpec())
    report = Report()
    report.degrade("MemberUnhealthy", "kv-1 fails health checks")
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    memory = Memory(
        pods={"kv-1": PodRecord("kv-1", "u1", 3, failing_since=now, rebuild=RebuildReported.STARTED)},
        retries={
            "membership": Retry("membership", now, now, "MembershipChangeFailed", "adding kv-3 failed"),
            "restore": Retry("restore", now, now),
        },
        scale_down_refusal="spec.replicas=2 is below replicationFactor=3",
    )
    status = {**compute_status(observed, report, OperatorConfig(), now), **memory.to_status()}
    status_schema = schema("kvstores.kvstore.dev.yaml")["properties"]["status"]
    assert validate(status_schema, status, "status") == []
    for key in ("lastBackup", "backup", "restore"):  # written by the backup handler and the restore
        assert key in status_schema["properties"]
    backup_props = schema("kvbackups.kvstore.dev.yaml")["properties"]["status"]["properties"]
    for key in ("phase", "backupId", "verified", "keys", "nodes", "problems", "directory", "claimName"):
        assert key in backup_props


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"replicas": 0}, "spec.replicas must be between 1 and 1000"),
        ({"replicas": "3"}, "spec.replicas must be an integer"),
        ({"defaultConsistency": "MOST"}, "spec.defaultConsistency must be one of"),
        ({"storage": {"size": "big"}}, "spec.storage.size"),
        (
            {"backup": {"schedule": "@daily"}},
            "spec.backup needs exactly one of volume.claimName or objectStore",
        ),
        (
            {
                "backup": {
                    "volume": {"claimName": "x"},
                    "objectStore": {"bucket": "bkt", "hmacKeySecret": {"name": "k"}},
                }
            },
            "exactly one of volume.claimName or objectStore",
        ),
        (
            {"backup": {"objectStore": {"bucket": "B!", "hmacKeySecret": {"name": "k"}}}},
            "must be an S3 bucket name",
        ),
        ({"backup": {"objectStore": {"bucket": "bkt"}}}, "hmacKeySecret.name is required"),
        ({"restoreFrom": {"backupId": "b", "url": "http://x"}}, "must be a bucket URL"),
        ({"restoreFrom": {"backupName": "a", "backupId": "b"}}, "exactly one of backupName or backupId"),
        ({"restoreFrom": {"backupId": "b"}}, "needs claimName and path"),
        ({"backup": {"volume": {"claimName": "x"}, "path": "../etc"}}, "relative folder"),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(SpecError, match=problem.replace("(", r"\(")):
        parse_store_spec(spec)


def test_settings_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {
            "KVSTORE_OPERATOR_ADDRESS_MODE": "pod-ip",
            "KVSTORE_OPERATOR_UNHEALTHY_POD_THRESHOLD": "5m",
            "KVSTORE_OPERATOR_NAMESPACES": "a, b",
            "KVSTORE_OPERATOR_BACKUP_PATH": "/mnt/backups",
        }
    )
    assert config.address_mode is AddressMode.POD_IP
    assert config.unhealthy_pod_threshold == 300.0
    assert config.namespaces == ("a", "b")
    assert config.backup_path == "/mnt/backups"
    assert OperatorConfig.from_env({}) == OperatorConfig()
    with pytest.raises(ValueError, match="KVSTORE_OPERATOR_ADDRESS_MODE"):
        OperatorConfig.from_env({"KVSTORE_OPERATOR_ADDRESS_MODE": "ip"})
    with pytest.raises(ValueError, match="KVSTORE_OPERATOR_RECONCILE_INTERVAL"):
        OperatorConfig.from_env({"KVSTORE_OPERATOR_RECONCILE_INTERVAL": "soon"})
    assert "KVSTORE_OPERATOR_MEMBER_ADDRESS_MODE" not in env_names()
    assert "KVSTORE_OPERATOR_STUCK_TERMINATING_GRACE" in env_names()


def test_settings_are_parsed_by_their_real_types() -> None:
    """Each field's annotation, resolved, picks its parser; a type without one is refused outright
    rather than read as a string."""
    values = {
        float: ("90s", 90.0),
        bool: (" False ", False),
        str: (" x ", "x"),
        tuple[str, ...]: ("a,,b ", ("a", "b")),
        AddressMode: ("POD-IP", AddressMode.POD_IP),
    }
    for name, kind in typing.get_type_hints(OperatorConfig).items():
        raw, expected = values[kind]
        assert parse_setting(name, kind, raw) == expected
    with pytest.raises(TypeError, match="cannot have the type"):
        parse_setting("KVSTORE_OPERATOR_RETRIES", int, "3")
    with pytest.raises(ValueError, match="KVSTORE_OPERATOR_ADMIN_TIMEOUT='-1'"):
        OperatorConfig.from_env({"KVSTORE_OPERATOR_ADMIN_TIMEOUT": "-1"})
