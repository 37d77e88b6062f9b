"""The UI's HTTP client against httpx.MockTransport: shapes in, readable messages out."""

from __future__ import annotations

import json

import httpx
import pytest

from ui.client import ApiError, PatchpilotClient, auth_headers, format_detail
from ui.meta import Meta
from ui.models import Me

BASE = "http://api.test"

REQUEST = {
    "id": "r-1",
    "action": "patch",
    "state": "running",
    "stage": "patching",
    "hosts": [{"name": "web-01", "status": "running", "ok": 3, "changed": 1, "failed": 0, "unreachable": 0,
               "skipped": 0}],
    "patch_group": "Group-1",
    "patch_group_description": "Monthly security updates",
    "reboot": "if_needed",
    "check_mode": False,
    "awx_job_id": 42,
    "awx_job_url": "https://awx.example.com/#/jobs/playbook/42/output",
    "requested_by": "alice",
    "approved_by": "bob",
    "created_at": "2025-01-01T10:00:00Z",
    "approved_at": "2025-01-01T10:01:00Z",
    "started_at": "2025-01-01T10:01:05Z",
    "finished_at": None,
    "failure_reason": None,
    "stages": [{"stage": "prechecks", "label": "Pre-checks started", "at": "2025-01-01T10:01:05Z"}],
    "latest_task": "Install security updates",
    "progress": 0.4,
    "conversation_id": "c-1",
    "notes": [],
    "hosts_by_environment": {"prod": ["web-01"], "staging": [], "dev": []},
}


TOKEN = "pp_alice-token"


def make_client(handler, token: str = TOKEN, incoming: dict[str, str] | None = None) -> PatchpilotClient:
    return PatchpilotClient(BASE, token, incoming_headers=incoming, transport=httpx.MockTransport(handler))


def respond(status: int, body: object):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    return handler


def test_chat_sends_identity_and_body_and_returns_reply():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={"conversation_id": "c-1", "reply": "Here is a proposal.", "engine": "rules", "proposal": None,
                  "intent": {}},
        )

    reply = make_client(handler).chat("Patch server web-01 with Group-1")
    assert reply.conversation_id == "c-1" and reply.proposal is None
    assert reply.engine == "rules"
    request = seen[0]
    assert request.method == "POST"
    assert request.url.path == "/api/v1/chat"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "X-Forwarded-User" not in request.headers and "X-Patchpilot-User" not in request.headers
    assert json.loads(request.content) == {"conversation_id": None, "text": "Patch server web-01 with Group-1"}


def test_request_reads_and_transitions_hit_the_contract_paths():
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        return httpx.Response(200, json=REQUEST)

    client = make_client(handler)
    request = client.get_request("r-1")
    assert request.hosts[0].name == "web-01" and request.hosts[0].changed == 1 and request.awx_job_id == 42
    assert request.hosts_by_environment == {"prod": ["web-01"], "staging": [], "dev": []}
    assert client.approve("r-1").state == "running"
    client.reject("r-1")
    client.cancel("r-1")
    assert seen == [
        ("GET", "/api/v1/requests/r-1"),
        ("POST", "/api/v1/requests/r-1/approve"),
        ("POST", "/api/v1/requests/r-1/reject"),
        ("POST", "/api/v1/requests/r-1/cancel"),
    ]


def test_lists_unwrap_items_and_pass_query_parameters():
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        if request.url.path.endswith("/events"):
            return httpx.Response(200, json={"items": [{"counter": 7, "event": "runner_on_ok"}]})
        if request.url.path.endswith("/messages"):
            message = {"role": "user", "text": "hi", "created_at": "x", "proposal_id": None}
            return httpx.Response(200, json={"items": [message]})
        if request.url.path == "/api/v1/conversations":
            conversation = {"id": "c-1", "title": "web-01", "created_at": "x", "updated_at": "x"}
            return httpx.Response(200, json={"items": [conversation]})
        return httpx.Response(200, json={"items": [REQUEST]})

    client = make_client(handler)
    assert client.list_requests(state="running")[0].id == "r-1"
    assert seen[-1].params["state"] == "running" and seen[-1].params["limit"] == "50"
    client.list_requests()
    assert "state" not in seen[-1].params
    assert client.events("r-1", after=5)[0].counter == 7
    assert seen[-1].params["after"] == "5"
    assert client.conversations()[0].title == "web-01"
    assert client.messages("c-1")[0].text == "hi"


def test_system_status_shape():
    body = {
        "engine": "rules",
        "engine_label": "offline rules parser",
        "api": "ok",
        "database": "ok",
        "broker": "down",
        "awx": "unconfigured",
        "awx_url": None,
    }
    status = make_client(respond(200, body)).system()
    assert status.engine_label == "offline rules parser" and status.broker == "down" and status.awx_url is None


def test_conflict_becomes_readable_message():
    client = make_client(respond(409, {"detail": "Request r-1 is already approved"}))
    with pytest.raises(ApiError) as info:
        client.approve("r-1")
    assert info.value.status_code == 409
    assert info.value.is_conflict
    assert str(info.value) == "Not possible right now (409): Request r-1 is already approved"


def test_validation_error_list_becomes_one_line():
    detail = [
        {"type": "string_too_long", "loc": ["body", "text"], "msg": "String should have at most 2000 characters"},
        {"type": "missing", "loc": ["body", "conversation_id"], "msg": "Field required"},
    ]
    with pytest.raises(ApiError) as info:
        make_client(respond(422, {"detail": detail})).chat("x" * 5000)
    message = str(info.value)
    assert message.startswith("Invalid input (422): ")
    assert "text: String should have at most 2000 characters" in message
    assert "conversation_id: Field required" in message
    assert "{" not in message  # no raw dicts


def test_service_unavailable_is_readable():
    with pytest.raises(ApiError) as info:
        make_client(respond(503, {"detail": "Database is not reachable"})).list_requests()
    assert str(info.value) == "Service unavailable (503): Database is not reachable"
    assert info.value.status_code == 503


def test_not_found_and_non_json_error_bodies():
    with pytest.raises(ApiError, match=r"Not found \(404\): Unknown request r-9"):
        make_client(respond(404, {"detail": "Unknown request r-9"})).get_request("r-9")

    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    with pytest.raises(ApiError) as info:
        make_client(html).system()
    assert str(info.value) == "API error (502): <html>Bad Gateway</html>"


def test_connection_refused_is_readable():
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(ApiError) as info:
        make_client(refused).system()
    assert str(info.value) == f"Cannot reach the patchpilot API at {BASE}. Is it running?"
    assert info.value.status_code is None


def test_timeout_is_readable():
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ApiError, match=r"did not answer within 10 s"):
        make_client(slow).get_request("r-1")
    with pytest.raises(ApiError, match=r"did not answer within 60 s"):
        make_client(slow).chat("hello")


def test_other_transport_errors_and_bad_success_bodies_are_readable():
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    with pytest.raises(ApiError, match="failed: peer closed connection"):
        make_client(broken).system()

    def not_json(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="hello")

    with pytest.raises(ApiError, match="not JSON"):
        make_client(not_json).system()
    with pytest.raises(ApiError, match="unexpected shape"):
        make_client(respond(200, {"rows": []})).list_requests()


def test_identity_headers_are_built_in_one_place():
    assert auth_headers("pp_bob") == {"Authorization": "Bearer pp_bob"}
    assert auth_headers("  pp_bob\n") == {"Authorization": "Bearer pp_bob"}  # pasted with a line break
    assert auth_headers("") == {}
    assert auth_headers("", {"host": "ui.example.com", "cookie": "x=1"}) == {}
    # Behind the OAuth proxy, its two identity headers are passed on (whatever the case they came in).
    incoming = {"x-forwarded-user": "gina", "x-forwarded-groups": "staff,patchpilot-approvers", "host": "ui"}
    assert auth_headers("", incoming) == {"X-Forwarded-User": "gina",
                                          "X-Forwarded-Groups": "staff,patchpilot-approvers"}
    assert auth_headers("", {"X-Forwarded-User": "gina"}) == {"X-Forwarded-User": "gina"}
    # The proxy's person is who calls: a token (the default admin one, say) does not go along.
    assert auth_headers("pp_admin", incoming) == auth_headers("", incoming)
    # Groups without a user identify nobody.
    assert auth_headers("pp_bob", {"X-Forwarded-Groups": "patchpilot-admins"}) == {"Authorization": "Bearer pp_bob"}


def test_proxy_headers_are_forwarded_on_every_call():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/approve"):
            return httpx.Response(200, json=REQUEST)
        return httpx.Response(200, json={"user": "gina", "roles": ["approver"], "via": "proxy"})

    incoming = {"X-Forwarded-User": "gina", "X-Forwarded-Groups": "patchpilot-approvers", "Cookie": "_oauth_proxy=s"}
    client = make_client(handler, token="", incoming=incoming)
    assert client.me() == Me(user="gina", roles=["approver"], via="proxy")
    client.approve("r-1")
    for request in seen:
        assert request.headers["X-Forwarded-User"] == "gina"
        assert request.headers["X-Forwarded-Groups"] == "patchpilot-approvers"
        assert "Authorization" not in request.headers and "Cookie" not in request.headers
    assert [r.url.path for r in seen] == ["/api/v1/me", "/api/v1/requests/r-1/approve"]


def test_me_sends_the_token_and_returns_user_and_roles():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"detail": "the API token is unknown or revoked"})
        return httpx.Response(200, json={"user": "alice", "roles": ["requester"], "via": "token"})

    assert make_client(handler).me() == Me(user="alice", roles=["requester"], via="token")
    with pytest.raises(ApiError) as info:
        make_client(handler, token="pp_wrong").me()
    assert info.value.is_unauthorized and not info.value.is_forbidden
    assert info.value.detail == "the API token is unknown or revoked"
    assert str(info.value) == "Not signed in (401): the API token is unknown or revoked"


def test_me_in_an_unexpected_shape_is_readable():
    for body in ([], {"user": "alice"}, {"name": "alice", "roles": []}):
        with pytest.raises(ApiError, match="unexpected shape"):
            make_client(respond(200, body)).me()


def test_forbidden_keeps_the_api_reason():
    reason = "four-eyes: web-01 is production; someone other than the requester must approve"
    with pytest.raises(ApiError) as info:
        make_client(respond(403, {"detail": reason})).approve("r-1")
    assert info.value.is_forbidden and info.value.status_code == 403
    assert info.value.detail == reason
    assert str(info.value) == f"Not allowed (403): {reason}"


def test_format_detail_handles_every_shape():
    assert format_detail("plain") == "plain"
    assert format_detail(None) == ""
    assert format_detail([{"loc": ["query", "limit"], "msg": "too big"}, "other"]) == "limit: too big; other"
    assert format_detail({"msg": "inner"}) == "inner"


def test_a_newer_api_that_sends_more_does_not_break_the_ui():
    body = {**REQUEST, "a_field_from_the_future": {"x": 1}, "hosts": [{**REQUEST["hosts"][0], "new_count": 3}]}
    request = make_client(respond(200, body)).get_request("r-1")
    assert request.id == "r-1" and request.hosts[0].ok == 3
    assert not hasattr(request, "a_field_from_the_future")


def test_a_response_in_the_wrong_shape_is_a_readable_error():
    for body in ({**REQUEST, "hosts": "web-01"}, {**REQUEST, "state": None}, {"id": "r-1"}):
        with pytest.raises(ApiError, match="unexpected shape"):
            make_client(respond(200, body)).get_request("r-1")
    with pytest.raises(ApiError, match="unexpected shape"):
        make_client(respond(200, {"items": [{"counter": "seven"}]})).events("r-1")
    with pytest.raises(ApiError, match="unexpected shape"):
        make_client(respond(200, {"request": {"id": "r-1"}})).live("r-1")


def test_live_reads_the_request_its_timeline_and_how_it_ended():
    body = {"request": {**REQUEST, "state": "canceled", "terminal": True, "cancel_requested_at": "2025-01-01T10:02Z"},
            "timeline": [{"stage": "prechecks", "status": "done"}, {"stage": "completed", "status": "canceled"}],
            "allowed": {"approve": "the request is canceled", "cancel": None}, "tasks": [], "replaced_by_newer": False}
    live = make_client(respond(200, body)).live("r-1")
    assert live.request.cancel_requested_at == "2025-01-01T10:02Z"
    assert live.outcome() == "canceled"
    assert live.refusal("approve") == "the request is canceled" and live.refusal("cancel") is None
    running = {**body, "request": {**body["request"], "state": "running", "terminal": False}}
    assert make_client(respond(200, running)).live("r-1").outcome() is None


def test_meta_is_read_once_per_client_and_again_after_a_failure():
    calls: list[str] = []
    answers = [httpx.Response(503, json={"detail": "database down"}),
               httpx.Response(200, json={"states": [{"value": "running", "label": "running", "icon": "⏳",
                                                     "terminal": False, "active": True, "cancelable": True}],
                                         "environments": ["live", "test"], "production_environments": ["live"],
                                         "roles": ["viewer", "requester"],
                                         "reboot_policies": [{"value": "never", "label": "never reboot"}],
                                         "jobs_shown": {"active": ["running"], "failed": [], "finished": []}})]

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return answers.pop(0)

    client = make_client(handler)
    with pytest.raises(ApiError, match="Service unavailable"):
        client.meta()
    meta = client.meta()
    assert client.meta() is meta and calls == ["/api/v1/meta", "/api/v1/meta"]
    assert meta.is_active("running") and meta.is_cancelable("running") and not meta.is_terminal("running")
    assert meta.badge("running") == "⏳ running" and meta.has_run("running")
    assert meta.is_production("live") and not meta.is_production("test")
    assert meta.reboot_text("never") == "Never reboot" and meta.reboot_text("sometimes") == "Sometimes"
    assert meta.only_reads(["viewer"]) and not meta.only_reads(["requester", "viewer"]) and meta.only_reads([])
    with pytest.raises(ApiError, match="unexpected shape"):
        make_client(respond(200, {"stages": []})).meta()


def test_meta_without_a_key_answers_every_question():
    meta = Meta.model_validate({"states": [{"state": "running", "icon": "⏳"}], "environment_order": ["a", "b"]})
    assert meta.environments == ["a", "b"]  # the older name of the key
    assert meta.badge("running") == "⏳ running" and meta.badge("unknown") == "• unknown"
    assert not meta.is_terminal("running") and meta.is_terminal("unknown", default=True)
    assert not meta.has_run("running") and meta.run_states() == []
    assert not meta.only_reads(["viewer"])  # no roles known: the API decides
    assert meta.action_label("precheck") == "Precheck" and meta.stage_label("patching") == "patching"
