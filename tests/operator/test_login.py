"""Logging in from outside a cluster with a kubeconfig ``exec`` plugin, as EKS (``aws eks
get-token``) and GKE (``gke-gcloud-auth-plugin``) kubeconfigs do (issue 15, item 12)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import kubernetes.config
import pytest
from kvoperator import kube
from kvoperator.kube import KubeClient, login

from tests.operator.apiserver import ApiServerThread

PLUGIN = """
import json
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1beta1",
    "kind": "ExecCredential",
    "status": {"token": "exec-token"},
}))
"""


async def test_the_operator_logs_in_through_a_kubeconfig_exec_plugin(
    api: ApiServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": api.url}}],
        "users": [
            {
                "name": "eks",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": sys.executable,
                        "args": [str(plugin)],
                    }
                },
            }
        ],
        "contexts": [{"name": "eks", "context": {"cluster": "kmock", "user": "eks"}}],
        "current-context": "eks",
    }
    path = tmp_path / "exec-kubeconfig"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    assert api.server is not None
    api.server.tokens = {"exec-token": "eks-user"}
    client = KubeClient(login())
    try:
        with pytest.raises(kube.ApiError) as denied:
            await client.list_objects(kube.CONFIGMAPS, "default")
    finally:
        await client.close()
    # Authenticated as the plugin's user (who has no RBAC: 403, not 401, and not anonymous).
    assert denied.value.status == 403
    assert api.server.seen[-1][0] == "eks-user"
