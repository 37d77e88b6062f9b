"""The FastAPI application (`uvicorn api.main:app`). OpenAPI docs at /docs."""

from __future__ import annotations

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routes import chat, conversations, requests, system
from core.observability import configure_logging
from core.settings import get_settings


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = FastAPI(
        title="patchpilot",
        version="0.1.0",
        description="Chat-driven patching for Ansible AWX. The model proposes; a person approves; AWX runs.",
    )
    install_error_handlers(app)
    for module in (chat, requests, conversations, system):
        app.include_router(module.router)
    return app


app = create_app()
