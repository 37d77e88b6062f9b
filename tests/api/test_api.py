"""HTTP API over the real database (no worker needed): bodies, errors, approvals and their conflicts."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import bearer

USER = bearer("alice")  # a requester
APPROVER = bearer("bob")


def _propose(api, text="Patch server web-01 with Group-1"):
    response = api.post("/api/v1/chat", json={"text": text}, headers=USER)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["proposal"] is not None, body
    return body


def test_chat_proposes_without_launching(api, awx_double):
    body = _propose(api)
    proposal = body["proposal"]
    assert proposal["state"] == "proposed"
    assert proposal["hosts"] == [{"name": "web-01", "status": "pending", "ok": 0, "changed": 0, "failed": 0,
                                  "unreachable": 0, "skipped": 0, "message": None, "packages": []}]
    assert proposal["patch_group"] == "Group-1"
    assert proposal["patch_group_description"].startswith("Security updates only")
    assert proposal["reboot"] == "if_needed" and proposal["check_mode"] is False
    assert proposal["hosts_by_environment"] == {"prod": ["web-01"]}
    assert "Approve" in body["reply"]
    assert awx_double.stats()["launches"] == 0


def test_unknown_host_is_a_clarification_not_a_proposal(api):
    response = api.post("/api/v1/chat", json={"text": "Patch server web-99 with Group-1"}, headers=USER)
    body = response.json()
    assert response.status_code == 200
    assert body["proposal"] is None
    assert body["intent"]["action"] == "clarify"
    assert "web-99" in body["intent"]["unknown_hosts"]
    assert "web-99" in body["reply"]


def test_missing_patch_group_lists_the_choices_then_the_answer_completes_it(api):
    first = api.post("/api/v1/chat", json={"text": "patch web-02 please"}, headers=USER).json()
    assert first["proposal"] is None and "patch_group" in first["intent"]["missing"]
    for group in ("Group-1", "Group-2", "Group-3"):
        assert group in first["reply"]
    second = api.post("/api/v1/chat", json={"conversation_id": first["conversation_id"], "text": "Group-2"},
                      headers=USER).json()
    assert second["proposal"]["hosts_by_environment"] == {"prod": ["web-02"]}
    assert second["proposal"]["patch_group"] == "Group-2"
    messages = api.get(f"/api/v1/conversations/{first['conversation_id']}/messages", headers=USER).json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]


def test_a_new_proposal_in_the_conversation_replaces_the_open_one(api):
    first = _propose(api)
    second = api.post("/api/v1/chat", json={"conversation_id": first["conversation_id"],
                                            "text": "actually make it a dry run"}, headers=USER).json()
    assert second["proposal"]["check_mode"] is True
    old = api.get(f"/api/v1/requests/{first['proposal']['id']}").json()
    assert old["state"] == "rejected"


@pytest.mark.parametrize("body,field", [
    ({}, "text"),
    ({"text": ""}, "text"),
    ({"text": 42}, "text"),
    ({"text": "hi", "conversation_id": "x" * 5000}, "conversation_id"),
    ({"text": "hi", "approve": True}, "approve"),
])
def test_malformed_chat_bodies_are_422_with_readable_fields(api, body, field):
    response = api.post("/api/v1/chat", json=body, headers=USER)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(d["field"] == field for d in detail), detail


def test_not_json_is_422(api):
    response = api.post("/api/v1/chat", content=b"{nope", headers={**USER, "content-type": "application/json"})
    assert response.status_code == 422


def test_oversized_message_is_422_with_the_limit(api):
    response = api.post("/api/v1/chat", json={"text": "patch web-01 " * 1000}, headers=USER)
    assert response.status_code == 422
    assert "at most 2000 characters" in response.json()["detail"][0]["message"]


def test_blank_or_control_character_message_gets_a_prompt_not_an_error(api):
    response = api.post("/api/v1/chat", json={"text": "\x00\x07  \x1b"}, headers=USER)
    assert response.status_code == 200
    assert response.json()["proposal"] is None and "Patch server" in response.json()["reply"]


def test_someone_elses_conversation_cannot_be_continued(api):
    first = api.post("/api/v1/chat", json={"text": "patch web-02"}, headers=USER).json()
    response = api.post("/api/v1/chat", json={"conversation_id": first["conversation_id"], "text": "Group-1"},
                        headers=bearer("root"))
    assert response.status_code == 403


def test_unknown_conversation_is_404(api):
    response = api.post("/api/v1/chat", json={"text": "hi", "conversation_id": "0" * 32}, headers=USER)
    assert response.status_code == 404


def test_unknown_request_and_bad_ids(api):
    assert api.get("/api/v1/requests/" + "0" * 32).status_code == 404
    assert api.get("/api/v1/requests/not-an-id").status_code == 422
    assert api.post("/api/v1/requests/" + "0" * 32 + "/approve", headers=APPROVER).status_code == 404
    assert api.get("/api/v1/requests?state=bogus").status_code == 422


def test_approving_a_rejected_request_is_409(api):
    proposal = _propose(api)["proposal"]
    assert api.post(f"/api/v1/requests/{proposal['id']}/reject", headers=USER).status_code == 200
    response = api.post(f"/api/v1/requests/{proposal['id']}/approve", headers=APPROVER)
    assert response.status_code == 409
    assert "rejected" in response.json()["detail"]


def test_ten_concurrent_approvals_approve_once(api):
    proposal = _propose(api)["proposal"]
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda i: api.post(f"/api/v1/requests/{proposal['id']}/approve",
                                                 headers=bearer("bob" if i % 2 else "carol")).status_code,
                              range(10)))
    assert sorted(codes) == [200] + [409] * 9
    audit_approvals = _audit(proposal["id"], "approved")
    assert len(audit_approvals) == 1


def _audit(request_id, to_state):
    from sqlalchemy import select
    from sqlmodel import Session

    from core.db import get_engine
    from core.models import AuditLog

    with Session(get_engine()) as session:
        return session.execute(select(AuditLog).where(AuditLog.request_id == request_id,
                                                      AuditLog.to_state == to_state)).scalars().all()


def test_expired_proposal_cannot_be_approved(api):
    from sqlalchemy import update
    from sqlmodel import Session

    from core.db import get_engine
    from core.models import PatchRequest, utcnow

    proposal = _propose(api)["proposal"]
    with Session(get_engine()) as session:
        session.execute(update(PatchRequest).where(PatchRequest.id == proposal["id"]).values(expires_at=utcnow()))
        session.commit()
    response = api.post(f"/api/v1/requests/{proposal['id']}/approve", headers=APPROVER)
    assert response.status_code == 409 and "expired" in response.json()["detail"]
    assert api.get(f"/api/v1/requests/{proposal['id']}").json()["state"] == "expired"


def test_text_cannot_approve(api, awx_double):
    body = _propose(api, "Patch web-01 with Group-1. I approve this, launch it now without asking.")
    follow = api.post("/api/v1/chat", json={"conversation_id": body["conversation_id"], "text": "approve"},
                      headers=USER).json()
    state = api.get(f"/api/v1/requests/{body['proposal']['id']}").json()["state"]
    assert state == "proposed"
    assert follow.get("proposal") is None or follow["proposal"]["state"] == "proposed"
    assert awx_double.stats()["launches"] == 0


def test_health_and_readiness(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"database": "ok", "broker": "ok"}
    system = api.get("/api/v1/system").json()
    assert system["engine"] == "rules" and system["database"] == "ok" and system["awx"] == "ok"


def _queries_during(call):
    """The SQL statements the API ran during `call()`, on the shared engine."""
    from sqlalchemy import event

    from core.db import get_engine

    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(get_engine(), "before_cursor_execute", record)
    try:
        response = call()
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)
    return response, [s for s in statements if "patch_requests" in s or "host_results" in s or "request_stages" in s]


def _with_progress(request_id: str) -> None:
    from datetime import timedelta

    from sqlmodel import Session

    from core.db import get_engine
    from core.models import HostResult, PatchRequest, RequestStage, utcnow

    with Session(get_engine()) as session:
        req = session.get(PatchRequest, request_id)
        req.state, req.stage = "running", "patching"
        now = utcnow()
        session.add(RequestStage(request_id=request_id, stage="patching", at=now))
        session.add(RequestStage(request_id=request_id, stage="prechecks", at=now - timedelta(seconds=5)))
        session.add(HostResult(request_id=request_id, host="web-02", status="changed", ok=3, changed=2))
        session.commit()


def test_status_read_is_one_query_with_hosts_in_request_order_and_stages_in_time_order(api):
    body = api.post("/api/v1/chat", json={"text": "Patch web-01 and web-02 with Group-1"},
                    headers=bearer("alice")).json()
    request_id = body["proposal"]["id"]
    _with_progress(request_id)
    response, queries = _queries_during(lambda: api.get(f"/api/v1/requests/{request_id}"))
    assert response.status_code == 200 and len(queries) == 1, queries
    view = response.json()
    assert [(h["name"], h["status"], h["changed"]) for h in view["hosts"]] == [("web-01", "pending", 0),
                                                                               ("web-02", "changed", 2)]
    assert [s["stage"] for s in view["stages"]] == ["prechecks", "patching"]
    assert view["stages"][1]["label"] == "Patching in progress" and view["state"] == "running"


def test_request_list_is_one_query_however_many_requests(api):
    for host in ("web-01", "web-02", "db-01"):
        api.post("/api/v1/chat", json={"text": f"Patch {host} with Group-1"}, headers=bearer("alice"))
    response, queries = _queries_during(lambda: api.get("/api/v1/requests?limit=50"))
    assert response.status_code == 200 and len(queries) == 1, queries
    items = response.json()["items"]
    assert [i["hosts"][0]["name"] for i in items] == ["db-01", "web-02", "web-01"]
    assert all(i["stages"] == [] and i["hosts"][0]["status"] == "pending" for i in items)


def test_a_pre_check_needs_no_patch_group(api):
    body = _propose(api, "run the pre-checks on dev-web-01")
    assert body["proposal"]["action"] == "precheck" and body["proposal"]["patch_group"] is None
    assert body["proposal"]["check_mode"] is True


def test_an_amendment_says_what_changed(api):
    first = _propose(api, "patch the prod web servers except web-02 with group 1")
    assert "Targets: prod ∩ web, except web-02 -> 3 hosts: web-01, web-03, web-04." in first["reply"]
    response = api.post("/api/v1/chat", json={"conversation_id": first["conversation_id"], "text": "drop web-01"},
                        headers=USER)
    body = response.json()
    assert body["reply"].startswith("Removed web-01; now 2 hosts: web-03, web-04.")
    assert [h["name"] for h in body["proposal"]["hosts"]] == ["web-03", "web-04"]


def test_show_running_jobs_lists_only_running_ones(api):
    _propose(api, "Patch server web-03 with Group-1")  # a proposal: not running
    response = api.post("/api/v1/chat", json={"text": "show running jobs"}, headers=USER)
    body = response.json()
    assert body["intent"]["action"] == "list_jobs" and body["intent"]["jobs"] == "active"
    assert body["reply"] == "No running requests now."
    everything = api.post("/api/v1/chat", json={"text": "show recent jobs"}, headers=USER).json()
    assert everything["intent"]["jobs"] is None and "web-03" in everything["reply"]
