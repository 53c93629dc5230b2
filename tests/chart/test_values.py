"""values.yaml, values.schema.json and the README's values table agree, and the schema is strict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from tests.chart.helpers import CHART, REPO, load_chart

SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
# Objects whose other fields are free on purpose: environment variables (value or valueFrom).
OPEN_OBJECTS = {"operator.extraEnv[]"}


def _objects(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for key, sub in (schema.get("properties") or {}).items():
        out += _objects(sub, f"{path}.{key}" if path else key)
    if isinstance(schema.get("items"), dict):
        out += _objects(schema["items"], f"{path}[]")
    return out


def test_schema_is_a_valid_json_schema_and_accepts_the_defaults() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(VALUES, SCHEMA)
    with load_chart() as chart:
        chart.validate_schema({})


def test_schema_is_strict() -> None:
    for path, node in _objects(SCHEMA):
        if "properties" in node and path not in OPEN_OBJECTS:
            assert node.get("additionalProperties") is False, f"{path or '(root)'} accepts unknown keys"


def test_schema_and_values_name_the_same_keys() -> None:
    def keys(values: Any, schema: dict[str, Any], path: str) -> None:
        props = schema.get("properties")
        if not isinstance(values, dict) or props is None or not values:
            return
        assert set(values) <= set(props), (path, set(values) - set(props))
        # A Kubernetes type (ResourceRequirements) may have fields the defaults leave out.
        if not str(schema.get("description", "")).startswith("core/v1"):
            assert set(props) - {"global"} <= set(values), (path, set(props) - set(values))
        for key, value in values.items():
            keys(value, props[key], f"{path}.{key}")

    keys(VALUES, SCHEMA, "")


@pytest.mark.parametrize(
    "values",
    [
        {"replicas": 3},
        {"operator": {"watchNamespace": ["shop"]}},
        {"operator": {"watchNamespaces": ["Not_A_Namespace"]}},
        {"operator": {"reconcileInterval": "ten seconds"}},
        {"operator": {"addressMode": "ip"}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"store": {"replicas": 0}},
        {"store": {"replicationFactor": 16}},
        {"store": {"defaultConsistency": "STRONG"}},
        {"store": {"storage": {"size": "ten gigs"}}},
        {"store": {"podAntiAffinity": {"mode": "Always"}}},
        {"store": {"backup": {"keep": 0}}},
        {"store": {"backup": {"path": "/absolute"}}},
        {"metrics": {"serviceMonitor": {"interval": "30 seconds"}}},
        {"metrics": {"prometheusRule": {"disabled": ["KVStoreNoSuchAlert"]}}},
        {"metrics": {"prometheusRule": {"thresholds": {"diskUsedRatio": 1.5}}}},
        {"metrics": {"dashboard": {"labels": {"grafana_dashboard": 1}}}},
    ],
)
def test_bad_values_are_refused_by_helm(values: dict[str, Any]) -> None:
    with load_chart() as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_merged(VALUES, values), SCHEMA)


def _merged(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merged(base.get(key), value)
        return out
    return over


def test_readme_lists_every_value_as_values_yaml_describes_it() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "charts" / "values_readme.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_an_undocumented_or_stale_value_is_caught(chart_copy: Path) -> None:
    script = str(REPO / "charts" / "values_readme.py")
    values = chart_copy / "values.yaml"
    values.write_text(values.read_text() + "\nundocumented:\n  knob: 1\n")
    result = subprocess.run(
        [sys.executable, script, "--check", "--chart", str(chart_copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "undocumented.knob" in result.stderr
    values.write_text(values.read_text().replace("undocumented:", "# -- A new value.\nundocumented:"))
    result = subprocess.run(
        [sys.executable, script, "--check", "--chart", str(chart_copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "README.md is stale" in result.stderr
    subprocess.run([sys.executable, script, "--chart", str(chart_copy)], check=True)
    assert (
        '| `undocumented` | object | `{"knob": 1}` | A new value. |' in (chart_copy / "README.md").read_text()
    )
