"""The beat's sweep: re-drive whatever a lost message, a dead worker or a broker outage left behind, and expire
proposals nobody decided on in time. PostgreSQL is the truth; this is how it wins over a lost message."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlmodel import col

from core.db import session_scope
from core.models import PatchRequest, utcnow
from core.settings import Settings
from core.states import APPROVED, EXPIRED, LAUNCHING, PROPOSED, QUEUED, IllegalTransition, Stage, transition
from worker import dispatch

SYSTEM = "system"  # the actor of changes nobody asked for (the expiry)
RE_DRIVEN = (APPROVED, QUEUED, LAUNCHING)


def sweep(settings: Settings) -> dict[str, int]:
    """Expire old proposals and enqueue the launch of requests stuck before their job is known."""
    now = utcnow()
    stuck_before = now - timedelta(seconds=settings.stuck_after_seconds)
    counts = {"proposals_expired": 0, "relaunched": 0}
    with session_scope() as session:
        proposals: Iterable[PatchRequest] = session.execute(
            select(PatchRequest).where(col(PatchRequest.state) == PROPOSED, col(PatchRequest.expires_at) < now)
        ).scalars()
        for req in proposals:
            try:
                transition(session, req, EXPIRED, actor=SYSTEM, reason="not approved in time", stage=Stage.PENDING)
                counts["proposals_expired"] += 1
            except IllegalTransition:
                pass
        to_launch: Sequence[str] = session.execute(select(col(PatchRequest.id)).where(
            col(PatchRequest.state).in_(RE_DRIVEN), col(PatchRequest.updated_at) < stuck_before)).scalars().all()
    for request_id in to_launch:
        if dispatch.enqueue_launch(request_id):  # which marks an approved one queued, and touches the others
            counts["relaunched"] += 1
    return counts

