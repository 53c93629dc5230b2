"""Render the chart with Helm's own Go library (helm-python-sdk: no helm binary) and read the result."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from helm_python import _native

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kvstore"
RELEASE = "kv"
NAMESPACE = "kvstore-system"
KUBE_VERSIONS = ("1.30", "1.33")
# The Prometheus Operator's API: the chart renders ServiceMonitors and the PrometheusRule only on a
# cluster that offers it.
MONITORING_APIS = ("monitoring.coreos.com/v1",)

Body = dict[str, Any]

# The value sets every rendering test runs over. "everything" switches every optional part on.
VALUE_SETS: dict[str, Body] = {
    "default": {},
    "metrics": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        }
    },
    "store": {"store": {"create": True, "replicas": 5, "replicationFactor": 3}},
    "backups": {
        "store": {
            "create": True,
            "backup": {
                "enabled": True,
                "schedule": "0 3 * * *",
                "keep": 14,
                "claim": {"storageClassName": "nfs", "size": "50Gi"},
            },
        }
    },
    "namespaced": {
        "operator": {"watchNamespaces": ["kvstore-system", "shop"]},
        "store": {"create": True},
        "metrics": {"serviceMonitor": {"enabled": True}},
    },
    "everything": {
        "commonLabels": {"team": "storage"},
        "imagePullSecrets": [{"name": "regcred"}],
        "image": {"repository": "registry.example.com/kvstore", "tag": "0.1.0", "pullPolicy": "Always"},
        "operator": {
            "verbose": True,
            "extraEnv": [{"name": "KVSTORE_OPERATOR_TRANSFER_TIMEOUT", "value": "2h"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "storage", "effect": "NoSchedule"}
            ],
            "priorityClassName": "system-cluster-critical",
            "podAnnotations": {"example.com/owner": "storage"},
            "podLabels": {"tier": "control"},
        },
        "serviceAccount": {"annotations": {"example.com/role": "kvstore"}},
        "store": {
            "create": True,
            "name": "orders",
            "replicas": 5,
            "image": "registry.example.com/kvstore:0.1.0",
            "storage": {"size": "50Gi", "storageClassName": "fast-ssd", "deleteClaimsOnScaleDown": True},
            "podAntiAffinity": {"mode": "Required"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "backup": {"enabled": True, "path": "orders", "claim": {"storageClassName": "nfs"}},
        },
        "metrics": {
            "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
            "prometheusRule": {
                "enabled": True,
                "alertLabels": {"team": "storage"},
                "labels": {"release": "prometheus"},
            },
            "dashboard": {"namespace": "monitoring", "annotations": {"grafana_folder": "Databases"}},
        },
    },
}


@dataclass
class Rendered:
    files: dict[str, str]
    objects: list[Body]
    notes: str

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    def of_kind(self, kind: str) -> list[Body]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Body:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]


def load_chart() -> helm.Chart:
    return helm.Chart.load(str(CHART))


def render_files(
    chart: helm.Chart,
    values: Body,
    *,
    name: str = RELEASE,
    namespace: str = NAMESPACE,
    api_versions: Sequence[str] = MONITORING_APIS,
) -> dict[str, str]:
    """``helm template`` in Helm's library, with ``--api-versions``: the API versions the cluster
    offers beyond the built-in ones (``.Capabilities.APIVersions``). helm-python-sdk's
    ``Chart.render`` does not expose that option, which its native ``helm_render`` takes."""
    opts = {"name": name, "namespace": namespace, "is_install": True, "api_versions": list(api_versions)}
    raw = _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts))
    files: dict[str, str] = json.loads(raw)
    return files


def render(
    values: Body,
    *,
    namespace: str = NAMESPACE,
    name: str = RELEASE,
    api_versions: Sequence[str] = MONITORING_APIS,
    chart_dir: Path = CHART,
) -> Rendered:
    """The chart rendered for an install of release ``name``, on a cluster that offers the
    Prometheus Operator's API unless ``api_versions`` says otherwise."""
    with helm.Chart.load(str(chart_dir)) as chart:
        chart.validate_schema(values)
        files = render_files(chart, values, name=name, namespace=namespace, api_versions=api_versions)
    objects: list[Body] = []
    notes = ""
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"{path}: a document that is not an object"
            doc.setdefault("metadata", {})
            objects.append(doc)
    return Rendered(files, objects, notes)


def crds() -> dict[str, Body]:
    """The chart's CRDs by kind, as Helm loads them from crds/."""
    out: dict[str, Body] = {}
    with load_chart() as chart:
        for crd in chart.crds:
            body = yaml.safe_load(crd["data"])
            out[body["spec"]["names"]["kind"]] = body
    return out


def dashboard() -> Body:
    data: Body = json.loads((CHART / "dashboards" / "kvstore.json").read_text())
    return data
