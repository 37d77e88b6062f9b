"""The FastAPI application (`uvicorn api.main:app`). OpenAPI docs at /docs."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routes import chat, conversations, requests, system


def create_app() -> FastAPI:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
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
