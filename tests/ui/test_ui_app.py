"""The Streamlit pages, run with AppTest against a small in-process fake of the patchpilot API.

The fake is served by uvicorn on a free port, so the UI goes through real HTTP like in production. Like the
real API it takes the caller from the Bearer token (or, in proxy mode, from X-Forwarded-User/-Groups), answers
401 without a known identity and 403 below the role or against four-eyes.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from streamlit.testing.v1 import AppTest

from api.services import timeline
from core.identity import Principal
from core.states import CANCELABLE
from ui.meta import Meta
from ui.models import PatchRequest, TimelineStep
from ui.views import common, jobs, progress

pytestmark = pytest.mark.integration  # the UI talks to a fake API served on a local port

APP_FILE = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
PROMPT = "Patch server web-01 with Group-1"
GROUP_DESCRIPTION = "Monthly security updates for the web tier"
# token -> (user, roles), as `patchpilot token create` would have made them.
TOKENS = {
    "pp_alice": ("alice", ["requester"]),
    "pp_bob": ("bob", ["approver"]),
    "pp_carol": ("carol", ["approver"]),
    "pp_vic": ("vic", ["viewer"]),
    "pp_root": ("root", ["admin"]),
}
ROLE_GROUPS = {"patchpilot-viewers": "viewer", "patchpilot-requesters": "requester",
               "patchpilot-approvers": "approver", "patchpilot-admins": "admin"}
RANK = {"viewer": 0, "requester": 1, "approver": 2, "admin": 3}
FOUR_EYES = "four-eyes: web-01 is production; someone other than the requester must approve"


def _fake_catalog():
    """The demo fleet: web-01 is production (the policy says which environments are)."""
    from core.inventory import get_catalog

    return get_catalog()


FAKE_CATALOG = _fake_catalog()


def now_iso(offset_seconds: int = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_seconds)).isoformat()


class FakeBackend:
    """Canned, stateful data behind the API contract; tests reach in to move requests along."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.conversations: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.users: list[str] = []  # who each authenticated call came from
        self.identity_headers: list[dict[str, str]] = []  # the identity headers of every call
        self.auth_mode = "token"
        self.force: dict[str, tuple[int, Any]] = {}  # endpoint name -> (status, detail)
        self.plays: dict[str, dict[str, Any]] = {}  # request id -> per-stage event counts (the timeline's input)
        self.tasks: dict[str, list[dict[str, Any]]] = {}  # request id -> task output lines
        self.replaced: dict[str, bool] = {}

    def new_request(self, requested_by: str, conversation_id: str | None, **changes: Any) -> dict[str, Any]:
        request_id = str(uuid.uuid4())
        req = {
            "id": request_id,
            "action": "patch",
            "state": "proposed",
            "stage": "pending",
            "hosts": [self.host("web-01")],
            "patch_group": "Group-1",
            "patch_group_description": GROUP_DESCRIPTION,
            "reboot": "if_needed",
            "check_mode": True,
            "awx_job_id": None,
            "awx_job_url": None,
            "requested_by": requested_by,
            "approved_by": None,
            "decided_by": None,
            "created_at": now_iso(-120),
            "approved_at": None,
            "started_at": None,
            "finished_at": None,
            "failure_reason": None,
            "stages": [],
            "latest_task": None,
            "progress": 0.0,
            "conversation_id": conversation_id,
            "notes": ["web-01 is in production: a change window applies."],
            "targets": "prod ∩ web, except web-02",
            "hosts_by_environment": {"prod": ["web-01"], "staging": [], "dev": []},
            "expires_at": now_iso(3600),
        }
        req.update(changes)
        self.requests[request_id] = req
        return req

    @staticmethod
    def host(name: str, status: str = "pending", **counts: int) -> dict[str, Any]:
        base = {"ok": 0, "changed": 0, "failed": 0, "unreachable": 0, "skipped": 0}
        return {"name": name, "status": status, **base, **counts}

    def start(self, request_id: str) -> None:
        self.requests[request_id].update(
            state="running",
            stage="patching",
            awx_job_id=42,
            awx_job_url="https://awx.example.com/#/jobs/playbook/42/output",
            started_at=now_iso(-60),
            stages=[
                {"stage": "prechecks", "label": "Pre-checks started", "at": now_iso(-60)},
                {"stage": "patching", "label": "Patching in progress", "at": now_iso(-30)},
            ],
            latest_task="Install security updates",
            progress=0.5,
            hosts=[self.host("web-01", "running", ok=4)],
        )

    def succeed(self, request_id: str) -> None:
        self.start(request_id)
        req = self.requests[request_id]
        req["stages"] += [
            {"stage": "postchecks", "label": "Post-checks running", "at": now_iso(-5)},
            {"stage": "completed", "label": "Patching completed", "at": now_iso()},
        ]
        req.update(
            state="succeeded",
            stage="completed",
            finished_at=now_iso(),
            progress=1.0,
            latest_task="Verify services",
            hosts=[self.host("web-01", "changed", ok=12, changed=3)],
        )

    def fail(self, request_id: str) -> None:
        self.start(request_id)
        req = self.requests[request_id]
        req["stages"].append({"stage": "failed", "label": "Patching failed", "at": now_iso()})
        req.update(
            state="failed",
            stage="failed",
            finished_at=now_iso(),
            failure_reason="1 host unreachable during patching",
            hosts=[self.host("web-01", "unreachable", ok=2, unreachable=1)],
        )


def build_fake_api(backend: FakeBackend) -> FastAPI:
    app = FastAPI()

    def forced(name: str) -> JSONResponse | None:
        backend.calls[name] += 1
        if name in backend.force:
            status, detail = backend.force[name]
            return JSONResponse({"detail": detail}, status_code=status)
        return None

    def missing(request_id: str) -> JSONResponse:
        return JSONResponse({"detail": f"Unknown request {request_id}"}, status_code=404)

    def unauthorized(detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        backend.identity_headers.append(
            {k: v for k, v in request.headers.items()
             if k in ("authorization", "x-forwarded-user", "x-forwarded-groups")}
        )
        if backend.auth_mode == "proxy":
            user = (request.headers.get("x-forwarded-user") or "").strip()
            if not user:
                return unauthorized("no X-Forwarded-User header: sign in through the OAuth proxy")
            groups = [g.strip() for g in (request.headers.get("x-forwarded-groups") or "").split(",")]
            roles, via = sorted({ROLE_GROUPS[g] for g in groups if g in ROLE_GROUPS}), "proxy"
        else:
            scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return unauthorized("send an API token as 'Authorization: Bearer <token>' (patchpilot token create)")
            if token.strip() not in TOKENS:
                return unauthorized("the API token is unknown or revoked")
            (user, roles), via = TOKENS[token.strip()], "token"
        request.state.me = {"user": user, "roles": roles, "via": via}
        backend.users.append(user)
        if request.method == "GET" and request.url.path != "/api/v1/me" and (response := below(request, "viewer")):
            return response  # reading needs a role (a proxy user in no mapped group has none)
        return await call_next(request)

    def caller(request: Request) -> dict[str, Any]:
        return request.state.me

    def below(request: Request, role: str) -> JSONResponse | None:
        """The 403 the real API answers when the caller's role is too low."""
        me = caller(request)
        if max((RANK[r] for r in me["roles"]), default=-1) >= RANK[role]:
            return None
        detail = f"{me['user']} needs the {role} role for {request.method} {request.url.path}"
        return JSONResponse({"detail": detail}, status_code=403)

    @app.get("/api/v1/me")
    def me(request: Request):
        return caller(request)

    @app.post("/api/v1/chat")
    async def chat(request: Request):
        if (response := below(request, "requester") or forced("chat")) is not None:
            return response
        body = await request.json()
        user = caller(request)["user"]
        conversation_id = body.get("conversation_id") or str(uuid.uuid4())
        conv = backend.conversations.setdefault(
            conversation_id,
            {"id": conversation_id, "title": body["text"][:40], "created_at": now_iso(), "updated_at": now_iso(),
             "messages": [], "author": user},
        )
        conv["messages"].append({"role": "user", "text": body["text"], "created_at": now_iso(), "proposal_id": None})
        proposal = None
        if "patch" in body["text"].lower():
            req = backend.new_request(user, conversation_id)
            proposal = {k: v for k, v in req.items() if k in (
                "id", "action", "hosts_by_environment", "patch_group", "patch_group_description",
                "reboot", "check_mode", "state", "stage", "notes", "expires_at",
            )}  # fmt: skip
            proposal["hosts"] = ["web-01"]
            reply = "I can patch web-01 with Group-1 as a dry run. Approve?"
        else:
            reply = "Which servers should I patch, and with which patch group?"
        conv["messages"].append(
            {"role": "assistant", "text": reply, "created_at": now_iso(), "proposal_id": proposal and proposal["id"]}
        )
        return {"conversation_id": conversation_id, "reply": reply, "engine": "rules", "proposal": proposal,
                "intent": {}}

    @app.get("/api/v1/requests")
    def list_requests(state: str | None = None, limit: int = 50):
        items = [r for r in reversed(backend.requests.values()) if state is None or r["state"] == state]
        return {"items": items[:limit]}

    @app.get("/api/v1/requests/{request_id}")
    def get_request(request_id: str):
        return backend.requests.get(request_id) or missing(request_id)

    @app.post("/api/v1/requests/{request_id}/{action}")
    def transition(request_id: str, action: str, request: Request):
        if (response := below(request, "approver" if action == "approve" else "requester")) is not None:
            return response
        if (response := forced(action)) is not None:
            return response
        req = backend.requests.get(request_id)
        if req is None:
            return missing(request_id)
        me = caller(request)
        user = me["user"]
        if action != "approve" and req["requested_by"] != user and below(request, "approver"):
            detail = f"{user} may only {action} their own requests (approver role needed for others')"
            return JSONResponse({"detail": detail}, status_code=403)
        if action == "approve" and req["requested_by"] == user and req["hosts_by_environment"].get("prod"):
            return JSONResponse({"detail": FOUR_EYES}, status_code=403)
        allowed = {"approve": ("proposed",), "reject": ("proposed",), "cancel": CANCELABLE}
        if req["state"] not in allowed.get(action, ()):
            return JSONResponse({"detail": f"Request is already {req['state']}"}, status_code=409)
        if action == "approve":
            req.update(state="approved", approved_by=user, approved_at=now_iso())
        elif action == "reject":
            req.update(state="rejected", decided_by=user)
        else:
            req.update(state="canceled", stage="canceled", finished_at=now_iso(), decided_by=user)
            req["stages"].append({"stage": "canceled", "label": "Canceled", "at": now_iso()})
        return req

    @app.get("/api/v1/meta")
    def meta():
        if (response := forced("meta")) is not None:
            return response
        return timeline.meta(FAKE_CATALOG)

    @app.get("/api/v1/inbox")
    def inbox(request: Request):
        if (response := forced("inbox")) is not None:
            return response
        me = caller(request)
        rank = max((RANK[r] for r in me["roles"]), default=-1)
        waiting = [r for r in backend.requests.values() if r["state"] == "proposed"]
        items = [inbox_item(r) for r in waiting if rank >= RANK["approver"] and r["requested_by"] != me["user"]]
        mine = [inbox_item(r) for r in waiting if r["requested_by"] == me["user"]]
        return {"count": len(items), "items": items, "mine": mine}

    def inbox_item(req):
        return {"id": req["id"], "requested_by": req["requested_by"], "hosts": host_list(req),
                "hosts_by_environment": req["hosts_by_environment"],
                "production": any(FAKE_CATALOG.is_production(h) for h in host_list(req)),
                "patch_group": req["patch_group"], "reboot": req["reboot"], "check_mode": req["check_mode"],
                "conversation_id": req["conversation_id"], "created_at": req["created_at"],
                "expires_at": req["expires_at"], "age_seconds": 120}

    def host_list(req):
        return [h["name"] if isinstance(h, dict) else h for h in req["hosts"]]

    @app.get("/api/v1/requests/{request_id}/live")
    def live(request_id: str, request: Request):
        if (response := forced("live")) is not None:
            return response
        req = backend.requests.get(request_id)
        if req is None:
            return missing(request_id)
        me = caller(request)
        principal = Principal(user=me["user"], roles=frozenset(me["roles"]), via=me["via"])
        view = {**req, "cancel_requested_at": req.get("cancel_requested_at")}
        allowed = timeline.refusals(principal, view, FAKE_CATALOG, same_person=lambda a, b: a == b)
        return {"request": view, "timeline": timeline.timeline(view, backend.plays.get(request_id, {})),
                "allowed": allowed, "tasks": backend.tasks.get(request_id, []),
                "replaced_by_newer": backend.replaced.get(request_id, False)}

    @app.get("/api/v1/requests/{request_id}/events")
    def events(request_id: str, after: int = 0):
        req = backend.requests.get(request_id)
        if req is None:
            return missing(request_id)
        items = [
            {"counter": 1, "event": "playbook_on_start", "host": None, "play": "patch", "task": None,
             "failed": False, "changed": False, "stdout": "", "created": now_iso()},
            {"counter": 2, "event": "runner_on_ok", "host": "web-01", "play": "patch",
             "task": "Install security updates", "failed": False, "changed": True, "stdout": "", "created": now_iso()},
        ]  # fmt: skip
        return {"items": [e for e in items if e["counter"] > after]}

    @app.get("/api/v1/conversations")
    def conversations(request: Request):
        mine = [c for c in reversed(backend.conversations.values()) if c["author"] == caller(request)["user"]]
        return {"items": [{k: v for k, v in c.items() if k not in ("messages", "author")} for c in mine]}

    @app.get("/api/v1/conversations/{conversation_id}/messages")
    def messages(conversation_id: str, request: Request):
        conv = backend.conversations.get(conversation_id)
        if conv is None:
            return JSONResponse({"detail": "Unknown conversation"}, status_code=404)
        if conv["author"] != caller(request)["user"] and below(request, "approver"):
            return JSONResponse({"detail": "only its author, approvers and admins may read a conversation"}, 403)
        return {"items": conv["messages"]}

    @app.get("/api/v1/system")
    def system():
        return {
            "engine": "rules",
            "engine_label": "offline rules parser",
            "api": "ok",
            "database": "ok",
            "broker": "down",
            "awx": "ok",
            "awx_url": "https://awx.example.com/api/v2/",
        }

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def fake_api():
    backend = FakeBackend()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_fake_api(backend), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake API did not start"
        time.sleep(0.02)
    yield backend, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


@pytest.fixture
def backend(fake_api, monkeypatch):
    backend, url = fake_api
    backend.reset()
    monkeypatch.setenv("API_URL", url)
    monkeypatch.setenv("PATCHPILOT_TOKEN", "pp_alice")  # as `patchpilot up` passes its token to the UI
    return backend


def new_app() -> AppTest:
    at = AppTest.from_file(APP_FILE, default_timeout=15)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def all_text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [e.value for e in at.error] + [w.value for w in at.warning]
    parts += [s.value for s in at.success] + [i.value for i in at.info] + [c.value for c in at.caption]
    return "\n".join(str(p) for p in parts)


def send(at: AppTest, text: str = PROMPT) -> AppTest:
    at.chat_input[0].set_value(text).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def only_request(backend: FakeBackend) -> dict[str, Any]:
    assert len(backend.requests) == 1
    return next(iter(backend.requests.values()))


def sign_in(at: AppTest, token: str) -> AppTest:
    """Paste a token into the sidebar's API token field."""
    at.sidebar.text_input(key="pp_token").set_value(token).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def approve_as_bob(at: AppTest, req: dict[str, Any]) -> AppTest:
    """web-01 is production: the requester (alice) hands over to an approver, who clicks Approve."""
    sign_in(at, "pp_bob")
    at.button(key=f"approve:{req['id']}").click().run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def open_request(at: AppTest, request_id: str) -> AppTest:
    """What a row of the Jobs table, an inbox entry or a ?request= link does: open that request."""
    at.session_state["pp_open_request"] = request_id
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def sidebar_text(at: AppTest) -> str:
    parts = [m.value for m in at.sidebar.markdown] + [w.value for w in at.sidebar.warning]
    return "\n".join(parts + [c.value for c in at.sidebar.caption])


# --- tests --------------------------------------------------------------------------------------


def test_status_line_names_engine_and_components(backend):
    at = new_app()
    sidebar = "\n".join(m.value for m in at.sidebar.markdown)
    assert "offline rules parser" in sidebar
    assert "🟢 API" in sidebar and "🟢 Database" in sidebar and "🔴 Broker (down)" in sidebar and "🟢 AWX" in sidebar
    assert "Signed in as **alice** (requester)" in sidebar


def test_token_from_patchpilot_token_is_sent_on_every_call(backend):
    at = new_app()
    field = at.sidebar.text_input(key="pp_token")
    assert field.label == "API token" and field.value == "pp_alice"
    assert field.proto.type == field.proto.PASSWORD  # never shown in clear
    assert not [t for t in at.text_input if t.label == "Your name"]
    assert backend.identity_headers and all(h == {"authorization": "Bearer pp_alice"} for h in backend.identity_headers)
    assert set(backend.users) == {"alice"}
    # Another token in the field: from the next call on the API sees that person.
    backend.identity_headers.clear()
    sign_in(at, "pp_bob")
    assert "Signed in as **bob** (approver)" in sidebar_text(at)
    assert all(h == {"authorization": "Bearer pp_bob"} for h in backend.identity_headers)


def test_proxy_headers_are_forwarded_without_a_token(backend, monkeypatch):
    """Behind the OAuth proxy the UI passes on who signed in; no token field, and no token is sent."""
    import streamlit.runtime.context as st_context

    incoming = [("Host", "patchpilot.apps.example.com"), ("X-Forwarded-User", "gina"),
                ("X-Forwarded-Groups", "staff,patchpilot-approvers"), ("Cookie", "_oauth_proxy=secret")]
    monkeypatch.setattr(st_context, "_get_client_context", lambda: SimpleNamespace(headers=incoming))
    monkeypatch.setenv("PATCHPILOT_TOKEN", "pp_root")  # a default token must not go along
    backend.auth_mode = "proxy"
    backend.new_request("alice", None)
    at = new_app()
    assert not at.text_input  # no API token field
    assert "Signed in as **gina** (approver)" in sidebar_text(at)
    assert "through the OAuth proxy" in sidebar_text(at)
    assert backend.identity_headers
    assert all(h == {"x-forwarded-user": "gina", "x-forwarded-groups": "staff,patchpilot-approvers"}
               for h in backend.identity_headers)
    assert set(backend.users) == {"gina"}
    req = only_request(backend)
    open_request(at, req["id"])
    at.button(key=f"approve:{req['id']}").click().run()
    assert not at.exception and not at.error
    assert req["approved_by"] == "gina"


def test_proxy_mode_without_proxy_headers_asks_to_sign_in(backend):
    backend.auth_mode = "proxy"
    at = new_app()
    warning = "\n".join(w.value for w in at.sidebar.warning)
    assert warning.startswith("Not signed in: paste an API token")
    assert "no X-Forwarded-User header: sign in through the OAuth proxy" in warning


def test_without_a_token_the_page_asks_to_sign_in(backend, monkeypatch):
    monkeypatch.delenv("PATCHPILOT_TOKEN")
    at = new_app()
    assert not at.exception and not at.error
    warning = "\n".join(w.value for w in at.sidebar.warning)
    assert warning.startswith("Not signed in: paste an API token into the **API token** field")
    assert "patchpilot token create" in warning
    assert "Sign in to see the chat and the jobs" in at.info[0].value
    assert not at.chat_input and not at.sidebar.radio  # nothing to read without an identity
    assert "API unreachable" not in sidebar_text(at)  # the API answered: it is not down
    assert set(backend.users) == set()
    # A wrong token says so; a right one signs in and shows the page.
    sign_in(at, "pp_typo")
    assert "the API token is unknown or revoked" in "\n".join(w.value for w in at.sidebar.warning)
    sign_in(at, "pp_alice")
    assert not at.sidebar.warning
    assert "Signed in as **alice** (requester)" in sidebar_text(at)
    assert at.chat_input and not at.info
    send(at)
    assert "I can patch web-01" in all_text(at)


def test_chat_message_renders_proposal_card(backend):
    at = send(new_app())
    text = all_text(at)
    assert PROMPT in text
    assert "I can patch web-01" in text
    assert "**prod**" in text and "web-01" in text
    assert f"Group-1 — {GROUP_DESCRIPTION}" in text
    assert "Reboot only if needed" in text
    assert "**Dry run:** yes" in text
    assert "change window applies" in text
    assert "As asked: prod ∩ web, except web-02" in text  # the target expression in words
    req = only_request(backend)
    approve = at.button(key=f"approve:{req['id']}")
    reject = at.button(key=f"reject:{req['id']}")
    # alice is a requester: she may withdraw her own proposal, approving is for approvers.
    assert approve.disabled and not reject.disabled
    assert approve.help == "Approving needs the approver role"
    assert "Signed in as alice (requester): approving needs the approver role." in all_text(at)
    sign_in(at, "pp_bob")
    assert not at.button(key=f"approve:{req['id']}").disabled and not at.button(key=f"reject:{req['id']}").disabled
    # The new conversation shows up in the sidebar.
    sign_in(at, "pp_alice")
    assert any(b.label.startswith("Patch server web-01") for b in at.sidebar.button)


def test_question_without_proposal_has_no_buttons(backend):
    at = send(new_app(), "hello there")
    assert "Which servers should I patch" in all_text(at)
    assert not [b for b in at.button if b.label in ("Approve", "Reject")]


def test_approve_calls_api_once_and_the_card_follows_the_decision(backend):
    at = send(new_app())
    req = only_request(backend)
    approve_as_bob(at, req)
    assert backend.calls["approve"] == 1
    assert req["state"] == "approved" and req["approved_by"] == "bob"
    # The decision is taken: no Approve or Reject any more, the card says who approved.
    assert not [b for b in at.button if b.label in ("Approve", "Reject")]
    assert "Approved by bob" in all_text(at)
    assert not at.error


def test_a_second_click_before_the_redraw_sends_nothing(backend):
    at = send(new_app())
    req = only_request(backend)
    sign_in(at, "pp_bob")
    at.session_state[f"pp_decision:{req['id']}"] = {"action": "approve", "by": "bob", "pending": True}
    at.run()
    assert at.button(key=f"approve:{req['id']}").disabled and at.button(key=f"reject:{req['id']}").disabled
    assert backend.calls["approve"] == 0


def test_progress_view_shows_completion_truthful_timeline_and_host_table(backend):
    at = send(new_app())
    req = only_request(backend)
    approve_as_bob(at, req)
    backend.succeed(req["id"])
    backend.plays[req["id"]] = {"prechecks": {"ran": 3, "skipped": 0, "failed": 0},
                                "patching": {"ran": 3, "skipped": 0, "failed": 0},
                                "reboot": {"ran": 0, "skipped": 2, "failed": 0},
                                "postchecks": {"ran": 2, "skipped": 0, "failed": 0}}
    backend.tasks[req["id"]] = [{"counter": 9, "at": now_iso(), "play": "Patching", "task": "Apply updates (security)",
                                 "host": "web-01", "result": "would change", "message": "Updates applied"}]
    req["stages"].insert(2, {"stage": "reboot", "label": "Reboot in progress", "at": now_iso(-10)})
    req["hosts"][0]["packages"] = [{"name": "libssl3", "old": "3.0.15-1", "new": "3.0.17-1"},
                                   {"name": "tzdata", "old": None, "new": "2025b-0"}]
    at.run()
    assert not at.exception
    text = all_text(at)
    # The dry run lists what would change, host by host, from which version to which.
    packages = next(e for e in at.expander if e.label.startswith("Packages that would change"))
    assert packages.label == "Packages that would change: 2 on 1 host"
    assert at.dataframe[1].value.to_dict("records") == [
        {"host": "web-01", "package": "libssl3", "from": "3.0.15-1", "to": "3.0.17-1"},
        {"host": "web-01", "package": "tzdata", "from": "(new)", "to": "2025b-0"}]
    # Finished stages in the past tense, the skipped reboot as skipped: nothing "in progress" after the end.
    assert "Pre-checks passed" in text and "Post-checks passed" in text and "Patched" in text
    assert "Reboot skipped (dry run)" in text
    assert "in progress" not in text
    # A dry run never says a host "changed": apt and dnf report changed in check mode, nothing changed.
    assert "Dry run completed, nothing changed: web-01 would change" in text
    assert "AWX job 42 succeeded (dry run, nothing changed): web-01 would change." in text  # how it ended
    assert " changed," not in text and "web-01 changed" not in text
    table = at.dataframe[0].value
    assert list(table.columns) == ["name", "status", "ok", "changed", "failed", "unreachable", "message"]
    assert table.iloc[0].to_dict() == {"name": "web-01", "status": "would change", "ok": 12, "changed": 3, "failed": 0,
                                       "unreachable": 0, "message": ""}
    assert at.get("progress")[0].proto.value == 100
    assert "Apply updates (security) · web-01 · would change: Updates applied" in at.code[0].value
    assert not [b for b in at.button if b.label.startswith("Cancel")]  # nothing left to cancel


def test_running_request_shows_timeline_and_a_confirmed_cancel(backend):
    at = send(new_app())
    req = only_request(backend)
    req["check_mode"] = False
    approve_as_bob(at, req)
    backend.start(req["id"])
    at.run()
    text = all_text(at)
    assert "Pre-checks passed" in text and "Patching in progress" in text and "Patching completed" not in text
    assert "**AWX job 42** · ⏳ running" in text  # one name for the run: its AWX job number
    assert "[Open AWX job 42 in AWX](https://awx.example.com/#/jobs/playbook/42/output)" in text
    assert at.get("progress")[0].proto.value < 100
    # Cancel asks first, and says what an interrupted update may leave behind.
    at.button(key=f"cancel:{req['id']}").click().run()
    assert backend.calls["cancel"] == 0
    assert "may be left half-patched" in all_text(at)
    at.button(key=f"cancel_no:{req['id']}").click().run()
    assert backend.calls["cancel"] == 0 and at.button(key=f"cancel:{req['id']}")
    at.button(key=f"cancel:{req['id']}").click().run()
    at.button(key=f"cancel_yes:{req['id']}").click().run()
    assert not at.exception
    assert backend.calls["cancel"] == 1
    assert req["state"] == "canceled"
    text = all_text(at)
    assert "Canceled by bob during patching" in text and "half-patched" in text
    assert at.get("progress")[0].proto.value < 100  # a canceled run does not read as complete


def test_a_requested_cancel_shows_who_and_waits_for_awx(backend):
    req = backend.new_request("alice", None, check_mode=False)
    backend.start(req["id"])
    req.update(cancel_requested_at=now_iso(-2), decided_by="alice")
    at = open_request(new_app(), req["id"])
    assert "Cancel requested by alice at" in all_text(at) and "waiting for AWX to stop AWX job 42" in all_text(at)
    assert not [b for b in at.button if b.label.startswith("Cancel")]


def test_failed_request_shows_reason_and_failing_hosts(backend):
    at = send(new_app())
    req = only_request(backend)
    approve_as_bob(at, req)
    backend.fail(req["id"])
    at.run()
    errors = "\n".join(e.value for e in at.error)
    assert "AWX job 42 failed" in errors
    assert "1 host unreachable during patching" in errors
    assert "Failing hosts: web-01" in errors
    assert "Patching failed" in all_text(at)


def test_a_failed_loop_item_shows_its_own_reason(backend):
    """What the follower makes of the recorded item_failed stream (tests/worker/test_real_events_following.py): the
    failed item's message, not the task's "One or more items failed", in the reason and the host table."""
    reason = "Check free disk space (item /var): Only 75079 MiB free on /var, 99999999 MiB needed."
    at = send(new_app())
    req = only_request(backend)
    approve_as_bob(at, req)
    backend.fail(req["id"])
    req.update(failure_reason=f"web-01 failed ({reason})",
               hosts=[{**backend.host("web-01", "failed", ok=6, failed=1), "message": reason}])
    at.run()
    assert reason in "\n".join(e.value for e in at.error)
    assert at.dataframe[0].value.iloc[0]["message"] == reason
    assert "One or more items failed" not in all_text(at)


def test_conflict_on_approve_is_a_readable_error(backend):
    at = send(new_app())
    req = only_request(backend)
    backend.force["approve"] = (409, "Request is already approved by bob")
    approve_as_bob(at, req)
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Could not approve: the request changed meanwhile (Request is already approved by bob). "
        "The card shows it as it is now."
    ]


def test_viewer_sees_disabled_approve_and_cannot_chat(backend):
    at = send(new_app())
    req = only_request(backend)
    sign_in(at, "pp_vic")
    assert "Signed in as **vic** (viewer)" in sidebar_text(at)
    assert at.chat_input[0].proto.disabled
    assert "Read only" in at.chat_input[0].proto.placeholder
    # Someone else's conversation is theirs (and approvers'); the refusal reads as one line.
    assert "Could not load the conversation: Not allowed (403): only its author, approvers and admins may read a " \
           "conversation" in [e.value for e in at.error]
    # The request itself is open to every reader: on the Jobs page.
    open_request(at, req["id"])
    assert not at.exception and not at.error
    approve, reject = at.button(key=f"approve:{req['id']}"), at.button(key=f"reject:{req['id']}")
    assert approve.disabled and reject.disabled
    assert approve.help == "Approving needs the approver role"
    assert ("Signed in as vic (viewer): approving needs the approver role; rejecting someone else's proposal needs "
            "the approver role") in all_text(at)
    assert req["state"] == "proposed"


def test_self_approval_on_production_is_off_before_the_click_and_reject_stays(backend, monkeypatch):
    monkeypatch.setenv("PATCHPILOT_TOKEN", "pp_carol")  # an approver asking for production
    at = send(new_app())
    req = only_request(backend)
    assert req["requested_by"] == "carol"
    approve, reject = at.button(key=f"approve:{req['id']}"), at.button(key=f"reject:{req['id']}")
    assert approve.disabled and "Four-eyes: web-01 is production" in approve.help
    assert not reject.disabled  # she may still withdraw it
    assert "Send this link to an approver: " in all_text(at) and f"?request={req['id']}" in all_text(at)
    assert backend.calls["approve"] == 0
    # Someone else signs in: bob may approve.
    sign_in(at, "pp_bob")
    assert not at.error
    assert not at.button(key=f"approve:{req['id']}").disabled
    at.button(key=f"approve:{req['id']}").click().run()
    assert req["state"] == "approved" and req["approved_by"] == "bob"
    assert "Approved by bob" in all_text(at)


def test_cancel_is_for_the_requester_and_approvers(backend):
    mine = backend.new_request("alice", None)
    theirs = backend.new_request("dave", None)
    for req in (mine, theirs):
        backend.start(req["id"])
    at = open_request(new_app(), theirs["id"])
    cancel = at.button(key=f"cancel:{theirs['id']}")
    assert cancel.disabled and cancel.help == "Canceling someone else's run needs the approver role"
    open_request(at, mine["id"])
    assert not at.button(key=f"cancel:{mine['id']}").disabled
    at.button(key=f"cancel:{mine['id']}").click().run()
    at.button(key=f"cancel_yes:{mine['id']}").click().run()
    assert not at.exception and mine["state"] == "canceled" and mine["decided_by"] == "alice"


def test_validation_error_on_chat_is_readable(backend):
    backend.force["chat"] = (422, [{"loc": ["body", "text"], "msg": "String should have at most 2000 characters"}])
    at = send(new_app(), "patch " + "x" * 50)
    assert [e.value for e in at.error] == [
        "Message not sent: Invalid input (422): text: String should have at most 2000 characters"
    ]


def test_api_down_is_a_readable_error_not_a_traceback(backend, monkeypatch):
    monkeypatch.setenv("API_URL", f"http://127.0.0.1:{free_port()}")
    at = new_app()
    assert not at.exception
    errors = "\n".join(e.value for e in at.error)
    assert "The patchpilot API does not answer" in errors
    assert "API unreachable" in "\n".join(m.value for m in at.sidebar.markdown)
    send(at)
    failed = [e.value for e in at.error if e.value.startswith("Message not sent: Cannot reach the patchpilot API")]
    assert len(failed) == 1
    # The text is kept and can be sent again; a second failure replaces the first instead of stacking up.
    at.button(key="pp_retry").click().run()
    assert len([e for e in at.error if e.value.startswith("Message not sent")]) == 1
    at.sidebar.radio[0].set_value("Jobs").run()
    assert not at.exception
    assert any("The patchpilot API does not answer" in e.value for e in at.error)


def test_jobs_page_lists_runs_searches_by_host_and_opens_a_row(backend):
    done = backend.new_request("alice", None, approved_by="bob")
    backend.succeed(done["id"])
    other = backend.new_request("alice", None, approved_by="bob", hosts_by_environment={"prod": ["db-01"]})
    backend.start(other["id"])
    other["hosts"] = [backend.host("db-01", "running", ok=2)]
    backend.new_request("carol", None, patch_group="Group-2")  # a proposal: not a job
    rejected = backend.new_request("carol", None)
    rejected["state"] = "rejected"
    at = new_app()
    at.sidebar.radio[0].set_value("Jobs").run()
    assert not at.exception
    rows = at.dataframe[0].value
    assert len(rows) == 2
    first, second = rows.iloc[0].to_dict(), rows.iloc[1].to_dict()
    assert first["job"] == "AWX job 42" and first["state"] == "⏳ running" and first["hosts"] == "db-01"
    assert second["requested by"] == "alice" and second["approved by"] == "bob"
    assert second["AWX"] == "https://awx.example.com/#/jobs/playbook/42/output"
    assert second["duration"] == "1m 00s"
    at.text_input(key="pp_jobs_host").set_value("web").run()
    assert list(at.dataframe[0].value["hosts"]) == ["web-01"]
    # Everything, proposals and rejections included, when asked.
    at.text_input(key="pp_jobs_host").set_value("").run()
    at.selectbox(key="pp_jobs_state").set_value("everything").run()
    assert len(at.dataframe[0].value) == 4
    # A row opens the request on its own page (the URL says which).
    open_request(at, done["id"])
    assert "Dry run completed" in all_text(at)
    assert at.query_params["request"] == done["id"]


def test_conversation_switching(backend):
    at = send(new_app())
    first_conversation = next(iter(backend.conversations))
    at.sidebar.button[0].click().run()  # new conversation
    assert at.session_state["pp_conversation"] is None
    assert "I can patch web-01" not in all_text(at)
    at.button(key=f"conv:{first_conversation}").click().run()
    assert "I can patch web-01" in all_text(at)


# --- pure helpers -------------------------------------------------------------------------------


def _steps(*statuses: str) -> list[TimelineStep]:
    stages = ("prechecks", "patching", "reboot", "postchecks", "completed")
    return [TimelineStep(stage=stage, status=status) for stage, status in zip(stages, statuses, strict=True)]


def test_progress_only_reaches_100_percent_on_success_and_one_name_per_run():
    canceled = _steps("done", "canceled", "not_run", "not_run", "canceled")
    assert progress.progress_value(canceled) == pytest.approx(0.375)
    assert progress.progress_value(_steps("done", "done", "skipped", "done", "done")) == 1.0
    assert progress.progress_value(_steps("done", "done", "done", "done", "failed")) == 0.99  # never 100 % failed
    assert progress.progress_value(_steps("current", "pending", "pending", "pending", "pending")) == 0.125
    assert common.job_name(PatchRequest(id="313ecb1a" + "0" * 24, state="approved")) == "Request 313ecb1a"
    assert common.job_name(PatchRequest(id="313ecb1a", state="running", awx_job_id=7)) == "AWX job 7"
    meta = Meta.model_validate(timeline.meta(FAKE_CATALOG))
    items = [PatchRequest(id="1", state="proposed", hosts=[{"name": "web-01"}]),
             PatchRequest(id="2", state="running", hosts=[{"name": "db-01"}]),
             PatchRequest(id="3", state="succeeded", hosts=[{"name": "web-02"}])]
    assert jobs.filter_jobs(items, meta) == items[1:]
    assert jobs.filter_jobs(items, meta, host="WEB") == [items[2]]
    assert jobs.filter_jobs(items, meta, host="web", runs_only=False) == [items[0], items[2]]
    # The State filter lists the runs' states, then the others, all from the API's words.
    assert jobs.state_choices(meta) == ("all runs", "approved", "queued", "launching", "running", "succeeded",
                                        "failed", "canceled", "error", "everything", "proposed", "rejected", "expired")
    # Without the API's words nothing is a run (nothing is guessed), and the filter still works.
    assert jobs.filter_jobs(items, Meta()) == [] and jobs.state_choices(Meta()) == ("all runs", "everything")


def test_formatting_helpers():
    assert common.fmt_duration("2025-01-01T10:00:00Z", "2025-01-01T10:01:05Z") == "1m 05s"
    assert common.fmt_duration("2025-01-01T10:00:00Z", "2025-01-01T12:03:00Z") == "2h 03m"
    assert common.fmt_duration(None, None) == ""
    meta = Meta.model_validate({"environment_order": ["prod", "staging", "dev"], "production_environments": ["prod"]})
    req = PatchRequest(id="1", state="running", hosts_by_environment={"dev": ["d1"], "prod": ["p1"], "lab": ["l1"]})
    assert common.environment_groups(req, meta) == [("prod", ["p1"]), ("dev", ["d1"]), ("lab", ["l1"])]
    assert common.environment_line("prod", ["p1"], meta) == ":red[**prod**] (1): p1"
    assert common.environment_line("dev", ["d1", "d2"], meta) == ":blue[**dev**] (2): d1, d2"
    assert common.environment_groups(PatchRequest(id="1", state="x", hosts=[{"name": "a"}, {"name": "b"}]), meta) == [
        ("hosts", ["a", "b"])]


def test_host_rows_say_would_change_in_a_dry_run():
    host = {"name": "web-01", "status": "changed", "ok": 3, "changed": 1, "failed": 0, "unreachable": 1, "skipped": 2}
    dry = PatchRequest(id="1", state="succeeded", check_mode=True, hosts=[host])
    assert common.host_rows(dry) == [{"name": "web-01", "status": "would change", "ok": 3, "changed": 1, "failed": 0,
                                      "unreachable": 1, "message": ""}]
    assert common.host_summary(dry.model_copy(update={"check_mode": False})) == "web-01 changed"
    assert common.failing_hosts(dry) == ["web-01"]  # unreachable once


def test_link_with_request_id_opens_its_progress_view(backend):
    req = backend.new_request("alice", None)
    backend.start(req["id"])
    at = AppTest.from_file(APP_FILE, default_timeout=15)
    at.query_params["request"] = req["id"]
    at.run()
    assert not at.exception
    assert "Patching in progress" in all_text(at)
    assert at.button(key=f"cancel:{req['id']}")
    assert at.query_params["request"] == req["id"]  # kept: a reload shows the same request


def test_link_with_conversation_id_reopens_the_conversation(backend):
    at = send(new_app())
    conversation_id = next(iter(backend.conversations))
    assert at.query_params["conversation"] == conversation_id  # in the URL as soon as it exists
    again = AppTest.from_file(APP_FILE, default_timeout=15)
    again.query_params["conversation"] = conversation_id
    again.run()
    assert not again.exception
    assert "I can patch web-01" in all_text(again)


def test_approvals_inbox_lists_what_waits_for_you_and_opens_it(backend):
    req = backend.new_request("alice", None, check_mode=False)
    backend.new_request("bob", None)  # his own: not in his inbox
    at = AppTest.from_file(APP_FILE, default_timeout=15)
    at.run()
    sign_in(at, "pp_bob")
    assert "📥 **1** waiting for your approval: see **Approvals**" in sidebar_text(at)
    assert "1 waiting for your approval" in all_text(at)  # also above the page, for a phone's folded sidebar
    at.sidebar.radio[0].set_value("Approvals").run()
    text = all_text(at)
    assert "1 proposal waiting for your approval" in text
    assert "**alice** asks: Patch :red[**prod**] (1): web-01 with **Group-1**" in text
    assert f"?request={req['id']}" in text and "expires at" in text
    at.button(key=f"inbox:{req['id']}").click().run()
    assert at.query_params["request"] == req["id"]
    at.button(key=f"approve:{req['id']}").click().run()
    assert req["state"] == "approved" and "Approved by bob" in all_text(at)


def test_link_to_unknown_request_is_a_readable_error(backend):
    at = AppTest.from_file(APP_FILE, default_timeout=15)
    at.query_params["request"] = "nope"
    at.run()
    assert not at.exception
    assert "Could not load request nope: Not found (404): Unknown request nope" in [e.value for e in at.error]


def test_reject_disables_buttons_and_shows_outcome(backend):
    at = send(new_app())
    req = only_request(backend)
    at.button(key=f"reject:{req['id']}").click().run()
    assert backend.calls["reject"] == 1 and req["state"] == "rejected"
    assert not [b for b in at.button if b.label in ("Approve", "Reject")]
    assert "Rejected by alice" in all_text(at)
    assert not at.get("progress")  # a rejected proposal has no run to follow
    backend.replaced[req["id"]] = True
    at.run()
    assert "Replaced by a newer proposal in this conversation." in all_text(at)
    assert "Rejected by alice" not in all_text(at)
