import asyncio

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import SettingsDep
from api.schemas import SystemView
from core.db import ping
from core.settings import Settings

router = APIRouter(tags=["system"])


def _awx_status(settings: Settings) -> str:
    if not settings.awx_url:
        return "unconfigured"
    try:
        base, token = settings.require_awx()
        response = httpx.get(base + "ping/", headers={"Authorization": f"Bearer {token}"},
                             timeout=2.0, verify=settings.awx_verify_tls)
        return "ok" if response.status_code < 500 else "down"
    except Exception:  # noqa: BLE001 - a status line only says up/down
        return "down"


def engine_name(settings: Settings) -> tuple[str, str]:
    if settings.llm_provider != "none" and settings.llm_model:
        return f"llm:{settings.llm_model}", f"rules parser + LLM {settings.llm_model} ({settings.llm_provider})"
    return "rules", "offline rules parser (no LLM configured)"


@router.get("/healthz")
def healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz() -> JSONResponse:
    """Readiness: the database and the broker answer."""
    from worker.dispatch import broker_reachable

    database, broker = await asyncio.gather(asyncio.to_thread(ping), asyncio.to_thread(broker_reachable))
    body = {"database": "ok" if database else "down", "broker": "ok" if broker else "down"}
    return JSONResponse(status_code=200 if database and broker else 503, content=body)


@router.get("/api/v1/system", response_model=SystemView)
async def system(settings: SettingsDep) -> SystemView:
    from worker.dispatch import broker_reachable

    database, broker, awx = await asyncio.gather(
        asyncio.to_thread(ping), asyncio.to_thread(broker_reachable), asyncio.to_thread(_awx_status, settings))
    engine, label = engine_name(settings)
    return SystemView(engine=engine, engine_label=label, api="ok", database="ok" if database else "down",
                      broker="ok" if broker else "down", awx=awx, awx_url=settings.awx_url)


@router.get("/metrics", include_in_schema=False)
def metrics() -> PlainTextResponse:
    from core.observability import metrics_registry

    return PlainTextResponse(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)
