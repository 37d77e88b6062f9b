"""The Celery application. Redis is only the messenger: PostgreSQL holds the truth, and the periodic sweep
re-drives anything a lost message left behind."""

from __future__ import annotations

import os

from celery import Celery, signals

from core.settings import get_settings


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("patchpilot", broker=settings.redis_url or "redis://127.0.0.1:6379/0", include=["worker.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # Tasks are idempotent (they reload the row and return early when the work is done), so a task is
        # acknowledged only after it ran, and a worker takes one message at a time.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
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
    return app


celery_app = make_celery()

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


@signals.setup_logging.connect
def _logging(**_kwargs) -> None:
    from core.observability import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@signals.worker_init.connect
def _check_catalog(**_kwargs) -> None:
    from core.inventory import check_catalog

    check_catalog()


@signals.worker_ready.connect
def _serve_metrics(**_kwargs) -> None:
    """Prometheus /metrics of this worker, from its main process."""
    from prometheus_client import start_http_server

    from core.observability import metrics_registry

    port = get_settings().worker_metrics_port
    if port:
        try:
            start_http_server(port, addr="0.0.0.0", registry=metrics_registry())
        except OSError as exc:  # a second worker on one host: the first one serves the metrics
            import logging

            logging.getLogger("patchpilot.worker").warning("metrics port %s unavailable: %s", port, exc)


@signals.worker_process_shutdown.connect
def _forget_child_metrics(pid=None, **_kwargs) -> None:
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
