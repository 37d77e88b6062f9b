"""The Celery application. Redis is only the messenger: PostgreSQL holds the truth, and the periodic sweep
re-drives anything a lost message left behind.

The broker is REDIS_URL and nothing else: a worker or a beat started without it stops at once and says so (there
is no default broker to fall back to). Importing this module needs no broker, so the API may import it to publish.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from celery import Celery, bootsteps, signals
from prometheus_client import multiprocess, start_http_server

from core.db import reset_engines
from core.inventory import check_catalog
from core.observability import configure_logging, metrics_registry
from core.settings import Settings, get_settings

log = logging.getLogger("patchpilot.worker")


def make_celery(settings: Settings) -> Celery:
    app = Celery("patchpilot", broker=settings.redis_url, include=["worker.tasks", "worker.inventory_tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # Every task is acknowledged as it starts and is safe to lose (PostgreSQL is the truth; the sweep
        # re-drives launches; following needs no message), and none is ever held for later (no countdown, no
        # published retry): an unacknowledged message in hand when Redis goes away is what kombu fails to restore
        # on a closed connection, killing the worker (see `_guard_restore_on_closed_connection`).
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        broker_transport_options={"visibility_timeout": 600, "socket_connect_timeout": 3, "socket_timeout": 5},
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep": {"task": "worker.tasks.sweep", "schedule": settings.sweep_interval_seconds},
            # A follow round polls whatever is due; a tick not picked up in time is dropped, not queued up.
            "follow": {"task": "worker.tasks.follow_due", "schedule": settings.follow_tick_seconds,
                       "options": {"expires": max(1.0, 2 * settings.follow_tick_seconds)}},
        },
        timezone="UTC",
    )
    if settings.inventory_source == "awx":
        # The inventory from AWX, refreshed on a schedule; a tick not picked up in time is dropped.
        app.conf.beat_schedule["inventory-sync"] = {
            "task": "worker.inventory_tasks.sync_inventory", "schedule": settings.inventory_sync_seconds,
            "options": {"expires": settings.inventory_sync_seconds}}
    if settings.notify_webhooks:
        # Only when there is somewhere to send to; a lost tick costs one interval.
        app.conf.beat_schedule["notify"] = {
            "task": "worker.tasks.notify", "schedule": settings.notify_interval_seconds,
            "options": {"expires": max(1.0, 2 * settings.notify_interval_seconds)}}
    return app


@signals.worker_init.connect
@signals.beat_init.connect
def _require_broker(**_kwargs) -> None:
    """A worker or a beat with no REDIS_URL stops here with the reason (SystemExit: Celery's signal dispatch
    catches exceptions, not exits). The app's own broker counts too: tests point it elsewhere in process."""
    if celery_app.conf.broker_url:
        return
    try:
        get_settings().require_redis_url()
    except RuntimeError as exc:
        raise SystemExit(f"patchpilot cannot start: {exc}") from None


def _guard_restore_on_closed_connection() -> None:
    """kombu's Redis transport restores the messages a worker holds unacknowledged when its channel closes.
    When Redis went away, the connection is already closed by then (`connection.client` is None), and the
    restore dies with AttributeError("'NoneType' object has no attribute 'hostname'") or "... 'client'",
    which Celery reports as an unrecoverable error and exits (upstream: celery/kombu#970, #582; the same
    `conn_or_acquire` path on a closed connection). There is nothing to restore through a closed connection:
    such messages stay in Redis' unacked set and come back after `visibility_timeout`, or Redis lost them and
    PostgreSQL re-drives the work. So skip the restore then, with a warning, instead of dying."""
    from kombu.transport import redis as kombu_redis  # kombu's Redis transport: only what this patch touches

    if getattr(kombu_redis.QoS.restore_unacked, "_patchpilot_guard", False):
        return
    original = kombu_redis.QoS.restore_unacked

    def restore_unacked(self, client=None):
        connection = getattr(self.channel, "connection", None)
        if client is None and (connection is None or getattr(connection, "client", None) is None):
            dropped = len(self._delivered)
            self._delivered.clear()
            log.warning(
                "broker connection closed: %d unacknowledged message(s) left to Redis' visibility timeout "
                "(PostgreSQL re-drives what Redis lost)", dropped)
            return
        try:
            return original(self, client)
        except AttributeError as exc:  # closed under us while restoring
            self._delivered.clear()
            log.warning("could not restore unacknowledged messages: %s", exc)

    setattr(restore_unacked, "_patchpilot_guard", True)  # noqa: B010 -- a marker on a function, for the check above
    setattr(kombu_redis.QoS, "restore_unacked", restore_unacked)  # noqa: B010 -- kombu's method, patched once


_guard_restore_on_closed_connection()
celery_app = make_celery(get_settings())

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


@signals.setup_logging.connect
def _logging(**_kwargs) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@signals.worker_init.connect
def _check_catalog(**_kwargs) -> None:
    """Stop with the reason when the fleet's files are broken. Then drop the connections the check opened: the
    pool processes are forked next, and two processes sharing one pooled PostgreSQL socket interleave their
    statements ("connection in transaction status INTRANS")."""
    check_catalog()
    reset_engines()


@signals.worker_ready.connect
def _serve_metrics(**_kwargs) -> None:
    """Prometheus /metrics of this worker, from its main process."""
    port = get_settings().worker_metrics_port
    if port:
        try:
            start_http_server(port, addr=get_settings().metrics_host, registry=metrics_registry())
        except OSError as exc:  # a second worker on one host: the first one serves the metrics
            log.warning("metrics port %s unavailable: %s", port, exc)


@signals.worker_process_shutdown.connect
def _forget_child_metrics(pid=None, **_kwargs) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid or os.getpid())


def _heartbeat_step(heartbeat_file: Path | None) -> type[bootsteps.StartStopStep]:
    """A bootstep: the worker's main event loop touches `WORKER_HEARTBEAT_FILE` every 10 s, and OpenShift's
    liveness probe restarts a worker whose file has gone stale, i.e. one whose event loop hangs."""
    class Heartbeat(bootsteps.StartStopStep):
        requires = {"celery.worker.components:Hub"}
        interval = 10.0

        def __init__(self, worker, **kwargs):
            super().__init__(worker, **kwargs)
            self.path: Path | None = heartbeat_file
            self.tref = None

        def create(self, worker):
            return self

        def start(self, worker):
            if not self.path:
                return
            self.touch()
            if worker.hub is not None:
                self.tref = worker.hub.call_repeatedly(self.interval, self.touch)

        def stop(self, worker):
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None

        def touch(self):
            try:
                if self.path is not None:
                    self.path.touch()
            except OSError:
                pass

    return Heartbeat


celery_app.steps["worker"].add(_heartbeat_step(get_settings().worker_heartbeat_file))
