"""The state machine: the allowed graph (pure) and the conditional update against real PostgreSQL."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, text
from sqlmodel import Session

from core import states
from core.states import IllegalTransition, check_transition


def test_graph_matches_the_documented_lifecycle():
    assert states.TRANSITIONS["proposed"] == {"approved", "rejected", "expired"}
    assert {"queued", "launching"} <= states.TRANSITIONS["approved"]
    assert states.TRANSITIONS["launching"] >= {"running"}
    assert states.TRANSITIONS["running"] == {"succeeded", "failed", "canceled", "error"}
    assert {"rejected", "expired", "succeeded", "failed", "canceled", "error"} == states.TERMINAL


@pytest.mark.parametrize("current,wanted", [
    ("rejected", "approved"), ("expired", "approved"), ("succeeded", "running"), ("proposed", "running"),
    ("proposed", "launching"), ("running", "approved"), ("canceled", "queued"),
])
def test_illegal_transitions_are_refused(current, wanted):
    assert not check_transition(current, wanted)


def test_every_terminal_state_is_final():
    for state in states.TERMINAL:
        assert all(not check_transition(state, other) for other in states.STATES)


def _proposal(session: Session):
    from core.models import PatchRequest

    req = PatchRequest(action="patch", hosts=["web-01"], patch_group="Group-1", requested_by="alice")
    session.add(req)
    session.commit()
    return req


def test_transition_writes_audit_row(db):
    from core.db import get_engine
    from core.models import AuditLog

    with Session(get_engine()) as session:
        req = _proposal(session)
        states.transition(session, req, "approved", actor="bob", reason="looks fine", approved_by="bob")
        session.commit()
        assert req.state == "approved" and req.approved_by == "bob"
        rows = session.execute(select(AuditLog).where(AuditLog.request_id == req.id)).scalars().all()
        assert [(r.actor, r.from_state, r.to_state) for r in rows] == [("bob", "proposed", "approved")]
        with pytest.raises(IllegalTransition) as exc:
            states.transition(session, req, "rejected", actor="bob")
        assert "approved" in str(exc.value)


def test_audit_log_is_append_only_in_the_database(db):
    from sqlalchemy.exc import DBAPIError

    from core.db import get_engine

    with Session(get_engine()) as session:
        req = _proposal(session)
        states.transition(session, req, "rejected", actor="bob")
        session.commit()
    with get_engine().connect() as conn:
        with pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text("UPDATE audit_log SET actor = 'mallory'"))
        conn.rollback()
        with pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text("DELETE FROM audit_log"))


def test_concurrent_transitions_have_exactly_one_winner(db):
    from core.db import get_engine
    from core.models import PatchRequest

    with Session(get_engine()) as session:
        request_id = _proposal(session).id

    def approve(i: int) -> bool:
        with Session(get_engine()) as session:
            req = session.get(PatchRequest, request_id)
            try:
                states.transition(session, req, "approved", actor=f"user{i}")
                session.commit()
                return True
            except IllegalTransition:
                session.rollback()
                return False

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(approve, range(10)))
    assert results.count(True) == 1
