"""The Celery application. Redis is only the messenger: PostgreSQL holds the truth, and the periodic sweep
re-drives anything a lost message left behind."""

from __future__ import annotations

from celery import Celery

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
        },
        timezone="UTC",
    )
    return app


celery_app = make_celery()
