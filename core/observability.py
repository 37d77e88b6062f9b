"""Logs and metrics, in one place.

- Logs: `configure_logging()` gives text or one-JSON-object-per-line logs; `bind_request(id)` puts the patch
  request id (and AWX job id) into every record of the current context, from the chat turn to the AWX job.
- Metrics: counters for what happens in a process, and `DatabaseCollector`, which reads the numbers whose truth
  is in PostgreSQL (requests by state, follow lag) at scrape time, so every API or worker replica reports the
  same values however work was spread among them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from core.settings import get_settings

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("patch_request_id", default=None)
_job_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("awx_job_id", default=None)

AWX_LAUNCHES = Counter("patchpilot_awx_launches_total", "AWX jobs launched (or adopted after a crash)", ["outcome"])
DUPLICATE_JOBS = Counter(
    "patchpilot_awx_duplicate_jobs_total",
    "AWX jobs found beside the one kept for a request (each is canceled at once and recorded): should stay 0",
)
LAUNCHES_FENCED = Counter(
    "patchpilot_launches_fenced_total",
    "Launch attempts stopped before the POST because another worker had taken the launch over",
)
AWX_ERRORS = Counter("patchpilot_awx_errors_total", "AWX calls that failed after retries", ["kind"])
EVENT_LAG = Histogram(
    "patchpilot_event_lag_seconds", "Time from an AWX job event's creation to its row in PostgreSQL",
    buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300),
)
REQUEST_TRANSITIONS = Counter("patchpilot_request_transitions_total", "State changes of patch requests", ["to_state"])


@contextmanager
def bind_request(request_id: str | None, job_id: int | None = None) -> Iterator[None]:
    token_r = _request_id.set(request_id)
    token_j = _job_id.set(job_id)
    try:
        yield
    finally:
        _request_id.reset(token_r)
        _job_id.reset(token_j)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.patch_request_id = getattr(record, "patch_request_id", None) or _request_id.get()
        record.awx_job_id = getattr(record, "awx_job_id", None) or _job_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("patch_request_id", "awx_job_id"):
            value = getattr(record, key, None)
            if value is not None:
                body[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            body["exc_type"] = record.exc_info[0].__name__
            body["exc_message"] = str(record.exc_info[1])
            # The whole traceback as one string field: log stacks keep it with its line, searchable.
            body["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            body["traceback"] = record.exc_text
        if record.stack_info:
            body["stack"] = self.formatStack(record.stack_info)
        for key in ("alert", "duplicate_awx_job_ids"):
            value = getattr(record, key, None)
            if value is not None:
                body[key] = value
        return json.dumps(body, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [request=%(patch_request_id)s job=%(awx_job_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every call at INFO with full URLs; keep it for debugging only.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class DatabaseCollector(Collector):
    """Gauges read from PostgreSQL when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        # Here, not at the top: core.states imports this module, and the database layer stays off the light paths
        # that only count (the parser, the CLI).
        from sqlalchemy import func, select
        from sqlmodel import col

        from core.db import get_engine
        from core.models import PatchRequest
        from core.states import RUNNING, STATES

        by_state = GaugeMetricFamily("patchpilot_requests", "Patch requests by state", labels=["state"])
        lag = GaugeMetricFamily("patchpilot_follow_lag_seconds",
                                "Longest time since a running request's job was last polled")
        try:
            with get_engine().connect() as conn:
                rows = conn.execute(select(col(PatchRequest.state), func.count()).group_by(col(PatchRequest.state)))
                counts: dict[str, int] = dict(rows.all())
                polled = func.coalesce(col(PatchRequest.last_polled_at), col(PatchRequest.started_at))
                oldest = conn.execute(select(func.min(polled)).where(col(PatchRequest.state) == RUNNING)).scalar()
        except Exception:
            return
        for state in STATES:
            by_state.add_metric([state], counts.get(state, 0))
        lag.add_metric([], (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0)
        yield by_state
        yield lag


_collector_registered = False


def register_database_collector() -> None:
    global _collector_registered
    if not _collector_registered:
        REGISTRY.register(DatabaseCollector())
        _collector_registered = True


def metrics_registry() -> CollectorRegistry:
    """The registry to expose. Celery's prefork children count into files under PROMETHEUS_MULTIPROC_DIR
    (set by `patchpilot up` and the deployment for workers); without it, this process's own registry."""

    # The database gauges are the same whoever reads them: one kind of process exports them (the deployments
    # set METRICS_DATABASE_GAUGES=false for workers), not every pod.
    gauges = get_settings().metrics_database_gauges
    if gauges:
        register_database_collector()
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
    if gauges:
        registry.register(DatabaseCollector())
    return registry
