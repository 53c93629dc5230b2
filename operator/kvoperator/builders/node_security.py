"""What a node pod needs for TLS and the peer port: its ``KVNODE_*`` flags, the node certificate's
Secret as a volume, and probes the kubelet can run against a TLS node.

Kept apart from statefulset.py so that the StatefulSet builder only places these pieces.
"""

from __future__ import annotations

from kvoperator import constants as c
from kvoperator import names
from kvoperator.builders.common import Body
from kvoperator.config import OperatorConfig
from kvoperator.spec import StoreSpec

# The kubelet's gRPC probe speaks plaintext only, so a TLS node is probed on its metrics port
# (HTTPS with server TLS only; the kubelet does not verify the certificate) for liveness, and by
# opening a TCP connection to its client port for readiness.
METRICS_PATH = "/metrics"


def _tls_file(name: str) -> str:
    return f"{c.TLS_MOUNT}/{name}"


def security_env(store: str, spec: StoreSpec, config: OperatorConfig, host: str) -> list[Body]:
    """The peer port (every node, TLS or not), the backup root, and the TLS files when TLS is on.

    One key pair serves the client, peer and metrics ports and dials the peers (its O is
    ``kvstore:peer``, its EKU both server and client auth). Peers check each other's certificate for
    the client Service's name, which it always carries, as the operator does: in pod-IP addressing
    no certificate can name the pods' addresses, which are only known once they run."""
    env: list[Body] = [
        {"name": "KVNODE_PEER_LISTEN", "value": f"0.0.0.0:{spec.peer_port}"},
        {"name": "KVNODE_PEER_ADVERTISE", "value": f"{host}:{spec.peer_port}"},
        {"name": "KVNODE_BACKUP_ROOT", "value": config.backup_root},
    ]
    if not spec.tls.enabled:
        return env
    cert, key, ca = _tls_file("tls.crt"), _tls_file("tls.key"), _tls_file("ca.crt")
    for prefix in ("KVNODE_", "KVNODE_PEER_"):
        env += [
            {"name": f"{prefix}CERT_FILE", "value": cert},
            {"name": f"{prefix}KEY_FILE", "value": key},
            {"name": f"{prefix}TRUSTED_CA_FILE", "value": ca},
        ]
    env += [
        {"name": "KVNODE_PEER_SERVER_NAME", "value": f"{names.client_service(store)}.$(POD_NAMESPACE).svc"},
        {"name": "KVNODE_METRICS_CERT_FILE", "value": cert},
        {"name": "KVNODE_METRICS_KEY_FILE", "value": key},
    ]
    return env


def tls_volumes(store: str, spec: StoreSpec) -> list[Body]:
    """The node certificate's Secret. Mounted as a whole folder (no subPath), so the kubelet
    updates the files in place when the Secret is renewed."""
    if not spec.tls.enabled:
        return []
    secret = {"secretName": names.node_tls_secret(store), "defaultMode": 0o440}
    return [{"name": c.TLS_VOLUME, "secret": secret}]


def tls_mounts(spec: StoreSpec) -> list[Body]:
    if not spec.tls.enabled:
        return []
    return [{"name": c.TLS_VOLUME, "mountPath": c.TLS_MOUNT, "readOnly": True}]


def probe_checks(spec: StoreSpec) -> tuple[Body, Body]:
    """The readiness and liveness checks: gRPC health on a plaintext node (readiness is the ""
    service, NOT_SERVING while it rebuilds; liveness the Admin service's, SERVING while it runs)."""
    if not spec.tls.enabled:
        return (
            {"grpc": {"port": spec.port, "service": c.HEALTH_READINESS_SERVICE}},
            {"grpc": {"port": spec.port, "service": c.HEALTH_LIVENESS_SERVICE}},
        )
    readiness = {"tcpSocket": {"port": "grpc"}}
    liveness = {"httpGet": {"scheme": "HTTPS", "port": "metrics", "path": METRICS_PATH}}
    return readiness, liveness
