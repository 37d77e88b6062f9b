"""GET /api/v1/meta: the labels and policy facts the UI shows (states, stages, production environments, roles)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CatalogDep, ViewerDep
from api.services import timeline

router = APIRouter(prefix="/api/v1", tags=["meta"])


@router.get("/meta")
async def get_meta(catalog: CatalogDep, _: ViewerDep) -> dict:
    """State labels and icons, stage titles and their texts per status, which environments are production (from
    the policy), the order to list environments in, and the roles."""
    return timeline.meta(catalog)
