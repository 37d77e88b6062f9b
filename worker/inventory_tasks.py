"""The beat's inventory sync (INVENTORY_SOURCE=awx): every INVENTORY_SYNC_SECONDS, and once at start-up."""

from __future__ import annotations

import logging

from celery import signals

from core.db import advisory_lock
from core.inventory_sync import sync_inventory as run_sync
from core.settings import get_settings
from worker.celery_app import celery_app

log = logging.getLogger("patchpilot.worker")


@celery_app.task(name="worker.inventory_tasks.sync_inventory", ignore_result=True)
def sync_inventory() -> dict:
    """Sync the inventory from AWX. Two at once would only store two equal snapshots; a failure keeps the last
    good snapshot in service and shows in /api/v1/system."""
    if get_settings().inventory_source != "awx":
        return {"skipped": "INVENTORY_SOURCE is file"}
    with advisory_lock("inventory", "sync") as acquired:
        if not acquired:
            return {"skipped": "another sync is running"}
        result = run_sync()
    return {"ok": result.ok, "snapshot_id": result.snapshot_id, "hosts": result.hosts, "error": result.error}


@signals.beat_init.connect
def _sync_when_the_beat_starts(**_kwargs) -> None:
    """The interval's first tick comes only after INVENTORY_SYNC_SECONDS: sync once as the (one) beat starts."""
    if get_settings().inventory_source == "awx":
        celery_app.send_task("worker.inventory_tasks.sync_inventory",
                             expires=max(60.0, get_settings().inventory_sync_seconds))
        log.info("inventory sync from AWX requested at beat start")
