"""KVBackup objects that the schedule creates."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from kvoperator import constants as c
from kvoperator import names
from kvoperator.builders.common import Body, owner_reference


def scheduled_backup_name(store: str, when: datetime.datetime) -> str:
    return f"{store}-{when.astimezone(datetime.UTC):%Y%m%d-%H%M%S}"


def build_scheduled_backup(owner: Mapping[str, Any], when: datetime.datetime) -> Body:
    """A KVBackup for one scheduled run, owned by the store (retention deletes old ones)."""
    meta = owner["metadata"]
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KVBACKUP_KIND,
        "metadata": {
            "name": scheduled_backup_name(meta["name"], when),
            "namespace": meta["namespace"],
            "labels": {**names.labels(meta["name"], "backup"), c.LABEL_SCHEDULED: "true"},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {"storeName": meta["name"]},
    }
