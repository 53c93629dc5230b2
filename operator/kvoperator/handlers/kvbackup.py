"""KVBackup handlers: take and verify the backup once; retry while the store is not ready."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kvnode.core.errors import KVError
from kvoperator import constants as c
from kvoperator.backups import BackupFailed, NotReadyForBackup, fail_backup, run_backup
from kvoperator.handlers.startup import context

RESOURCE = (c.GROUP, c.VERSION, c.KVBACKUP_PLURAL)
MAX_RETRIES = 60
log = logging.getLogger(__name__)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
async def take_backup(body: kopf.Body, retry: int, memo: Any, **_: Any) -> None:
    ctx = context(memo)
    try:
        await run_backup(ctx, body)
    except BackupFailed as exc:
        await fail_backup(ctx, body, str(exc))
    except (NotReadyForBackup, KVError) as exc:
        if retry + 1 >= MAX_RETRIES:
            await fail_backup(ctx, body, f"gave up after {retry + 1} attempts: {exc}")
            return
        ctx.events.warning(body, "BackupWaiting", f"{exc}; retrying")
        raise kopf.TemporaryError(str(exc), delay=max(1.0, ctx.config.reconcile_interval)) from None
