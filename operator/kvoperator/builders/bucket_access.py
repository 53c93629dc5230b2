"""What a node pod needs to back up to a bucket, with no backup volume: the endpoint and the
credentials as the AWS SDKs' standard variables, and the store's HMAC key as a file.

Credentials come either from a Secret (its ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
optionally ``AWS_SESSION_TOKEN`` keys become variables of the same names) or from the pod's service
account, whose web-identity token the cloud's admission webhook (IRSA, GKE or Azure workload
identity) injects as ``AWS_WEB_IDENTITY_TOKEN_FILE`` and ``AWS_ROLE_ARN``. An optional third
Secret holds the key that encrypts the snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvoperator.builders.common import Body
from kvoperator.spec import StoreSpec

KEY_VOLUME = "backup-hmac-key"
KEY_DIR = "/etc/kvstore/backup-hmac"
KEY_ITEM = "hmac-key"
ENCRYPTION_VOLUME = "backup-encryption-key"
ENCRYPTION_DIR = "/etc/kvstore/backup-encryption"
ENCRYPTION_ITEM = "encryption-key"


@dataclass
class BucketAccess:
    """Additions to the node pod for its bucket (all empty for a volume or no backups)."""

    env: list[Body] = field(default_factory=list)
    env_from: list[Body] = field(default_factory=list)
    volumes: list[Body] = field(default_factory=list)
    mounts: list[Body] = field(default_factory=list)
    service_account: str = ""


def bucket_access(spec: StoreSpec) -> BucketAccess:
    target = spec.backup.object_store if spec.backup is not None else None
    if target is None:
        return BucketAccess()
    env: list[Body] = [{"name": "KVNODE_BACKUP_HMAC_KEY_FILE", "value": f"{KEY_DIR}/{KEY_ITEM}"}]
    if target.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": target.endpoint})
    if target.region:
        env.append({"name": "AWS_REGION", "value": target.region})
    keys = [(KEY_VOLUME, KEY_DIR, KEY_ITEM, target.hmac_key_secret)]
    if target.encryption_key_secret:
        env.append(
            {"name": "KVNODE_BACKUP_ENCRYPTION_KEY_FILE", "value": f"{ENCRYPTION_DIR}/{ENCRYPTION_ITEM}"}
        )
        keys.append((ENCRYPTION_VOLUME, ENCRYPTION_DIR, ENCRYPTION_ITEM, target.encryption_key_secret))
    return BucketAccess(
        env=env,
        env_from=[{"secretRef": {"name": target.credentials_secret}}] if target.credentials_secret else [],
        volumes=[
            {"name": volume, "secret": {"secretName": secret, "items": [{"key": item, "path": item}]}}
            for volume, _, item, secret in keys
        ],
        mounts=[{"name": volume, "mountPath": folder, "readOnly": True} for volume, folder, _, _ in keys],
        service_account=target.service_account_name,
    )
