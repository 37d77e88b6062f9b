"""The FastAPI application (`uvicorn api.main:app`). OpenAPI docs at /docs."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routes import chat, conversations, inbox, inventory, meta, requests, system
from api.schemas import ErrorOut
from core.inventory import check_catalog
from core.observability import configure_logging
from core.settings import get_settings


@asynccontextmanager
async def _lifespan(_app: FastAPI):
    """Serve Prometheus metrics on their own port (METRICS_HOST, loopback unless set): the API port has no
    unauthenticated routes but the probes and the API's own documentation."""
    settings = get_settings()
    port = settings.api_metrics_port
    if port:
        from prometheus_client import start_http_server

        from core.observability import metrics_registry

        try:
            start_http_server(port, addr=settings.metrics_host, registry=metrics_registry())
        except OSError as exc:
            logging.getLogger("patchpilot.api").warning("metrics port %s unavailable: %s", port, exc)
    yield


# Every route but the probes needs an identity (401) and may be refused for the caller's role (403).
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut, "description": "no or bad credentials"},
               403: {"model": ErrorOut, "description": "the caller's role or the policy does not allow it"},
               429: {"model": ErrorOut, "description": "too many requests, or too many refused ones, by this user"},
               503: {"model": ErrorOut, "description": "the database is unavailable"}}


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    check_catalog()  # a broken inventory, patch-group or policy file stops the start, with its reason
    app = FastAPI(
        lifespan=_lifespan,
        title="patchpilot",
        version="0.1.0",
        description="Chat-driven patching for Ansible AWX. The model proposes; a person approves; AWX runs.",
    )
    install_error_handlers(app)
    for module in (chat, requests, conversations, system, inbox, meta, inventory):
        app.include_router(module.router, responses=AUTH_ERRORS)
    return app


app = create_app()
