"""Where the nodes find backups: a bucket URL, or a folder under the store's backup volume or the
read-only restore mount (paths inside the node containers, from the operator's settings)."""

from __future__ import annotations

from kvoperator.config import OperatorConfig
from kvoperator.restore_source import RestoreSource
from kvoperator.spec import StoreSpec


def _join(root: str, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative}" if relative else root


def backup_directory(config: OperatorConfig, relative: str) -> str:
    """A folder of the store's backup volume (``relative`` to its root)."""
    return _join(config.backup_path, relative)


def is_bucket(location: str) -> bool:
    return location.startswith("s3://")


def backup_location(config: OperatorConfig, spec: StoreSpec, store: str) -> str:
    """Where the nodes write the store's backups: its bucket's URL, or its folder in the volume."""
    if spec.backup is not None and spec.backup.object_store is not None:
        return spec.backup.object_store.url(store)
    return backup_directory(config, spec.backup_dir(store))


def restore_directory(spec: StoreSpec, config: OperatorConfig, source: RestoreSource) -> str:
    """The backup's folder: in the store's own backup volume if it is the same claim, else in the
    read-only restore mount; or the bucket's URL."""
    if is_bucket(source.path):
        return source.path
    if spec.backup is not None and spec.backup.claim_name == source.claim_name:
        return _join(config.backup_path, source.path)
    return _join(config.restore_path, source.path)
