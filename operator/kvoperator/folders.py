"""Where the nodes see backup folders: under the store's backup volume, or the read-only restore
mount (paths inside the node containers, from the operator's settings)."""

from __future__ import annotations

from kvoperator.config import OperatorConfig
from kvoperator.restore_source import RestoreSource
from kvoperator.spec import StoreSpec


def _join(root: str, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative}" if relative else root


def backup_directory(config: OperatorConfig, relative: str) -> str:
    """A folder of the store's backup volume (``relative`` to its root)."""
    return _join(config.backup_path, relative)


def restore_directory(spec: StoreSpec, config: OperatorConfig, source: RestoreSource) -> str:
    """The backup's folder: in the store's own backup volume if it is the same claim, else in the
    read-only restore mount."""
    if spec.backup is not None and spec.backup.claim_name == source.claim_name:
        return _join(config.backup_path, source.path)
    return _join(config.restore_path, source.path)
