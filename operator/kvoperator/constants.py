"""Names the operator and its resources share: API group, kinds, labels, annotations."""

from __future__ import annotations

GROUP = "kvstore.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KVSTORE_KIND = "KVStore"
KVSTORE_PLURAL = "kvstores"
KVBACKUP_KIND = "KVBackup"
KVBACKUP_PLURAL = "kvbackups"

MANAGER = "kvstore-operator"

# Labels on every child object; the selector labels also pick a store's pods.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_STORE = f"{GROUP}/store"
LABEL_SCHEDULED = f"{GROUP}/scheduled"
APP_NAME = "kvstore"

# The hash of the desired spec of a child object: the operator patches a child only when it differs.
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"

CONTAINER_NAME = "kvnode"
DATA_VOLUME = "data"
BACKUP_VOLUME = "backups"
RESTORE_VOLUME = "restore"
CONFIG_KEY_PEERS = "peers"
TLS_VOLUME = "tls"
TLS_MOUNT = "/etc/kvnode/tls"

# The labels of the operator's own pods (the chart's): the NetworkPolicy lets them in.
OPERATOR_COMPONENT = "operator"

# gRPC health service names: "" is the node's readiness (NOT_SERVING while rebuilding); the Admin
# service name stays SERVING while the process is up, so it is the liveness check.
HEALTH_READINESS_SERVICE = ""
HEALTH_LIVENESS_SERVICE = "kvnode.api.v1.Admin"
