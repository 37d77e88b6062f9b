"""Identity, roles and limits through the API: 401 without credentials, 403 (audited) below the role."""

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bearer

ROOT = Path(__file__).resolve().parents[2]


def _propose(api, user="alice", text="Patch web-01 with Group-1"):
    body = api.post("/api/v1/chat", json={"text": text}, headers=bearer(user)).json()
    assert body["proposal"], body
    return body["proposal"]["id"]


def _denials():
    from sqlalchemy import select
    from sqlmodel import Session

    from core.db import get_engine
    from core.models import AuditLog

    with Session(get_engine()) as session:
        return session.execute(select(AuditLog).where(AuditLog.action == "denied")).scalars().all()


@pytest.mark.parametrize("method,path", [
    ("post", "/api/v1/chat"), ("get", "/api/v1/requests"), ("get", "/api/v1/system"), ("get", "/api/v1/me"),
    ("get", "/api/v1/conversations"), ("get", "/api/v1/audit"),
    ("post", "/api/v1/requests/" + "0" * 32 + "/approve"),
])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer pp_not-a-real-token"}, {"Authorization": "Basic x"}])
def test_every_route_but_the_probes_needs_a_valid_token(api, method, path, headers):
    api.headers.pop("Authorization", None)  # drop the fixture's default viewer
    response = getattr(api, method)(path, headers=headers, **({"json": {"text": "hi"}} if method == "post" else {}))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "token" in response.json()["detail"]


def test_probes_are_open(api):
    api.headers.pop("Authorization", None)
    assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").status_code == 200


def test_me_names_the_caller_and_roles(api):
    assert api.get("/api/v1/me", headers=bearer("bob")).json() == {"user": "bob", "roles": ["approver"], "via": "token"}


def test_viewer_reads_but_cannot_chat_or_decide(api):
    request_id = _propose(api)
    assert api.get(f"/api/v1/requests/{request_id}", headers=bearer("vic")).status_code == 200
    chat = api.post("/api/v1/chat", json={"text": "Patch web-02 with Group-1"}, headers=bearer("vic"))
    assert chat.status_code == 403 and "requester" in chat.json()["detail"]
    approve = api.post(f"/api/v1/requests/{request_id}/approve", headers=bearer("vic"))
    assert approve.status_code == 403 and "approver" in approve.json()["detail"]
    assert {d.actor for d in _denials()} == {"vic"}


def test_requester_cannot_approve_but_may_withdraw_own_proposal(api):
    request_id = _propose(api)
    assert api.post(f"/api/v1/requests/{request_id}/approve", headers=bearer("alice")).status_code == 403
    assert api.post(f"/api/v1/requests/{request_id}/reject", headers=bearer("alice")).status_code == 200


def test_requester_cannot_reject_or_cancel_someone_elses_request(api, as_user):
    request_id = _propose(api)
    other = as_user("dave", "requester")
    for action in ("reject", "cancel"):
        response = api.post(f"/api/v1/requests/{request_id}/{action}", headers=other)
        assert response.status_code == 403 and "their own" in response.json()["detail"]
    assert api.post(f"/api/v1/requests/{request_id}/reject", headers=bearer("bob")).status_code == 200


def test_approver_approves_others_requests(api):
    request_id = _propose(api)
    response = api.post(f"/api/v1/requests/{request_id}/approve", headers=bearer("bob"))
    assert response.status_code == 200 and response.json()["approved_by"] == "bob"


def test_revoked_token_stops_working(api, as_user):
    from sqlalchemy import select
    from sqlmodel import Session

    from core.db import get_engine
    from core.identity import revoke_token
    from core.models import ApiToken

    headers = as_user("erin", "requester")
    assert api.get("/api/v1/me", headers=headers).status_code == 200
    with Session(get_engine()) as session:
        token_id = session.execute(select(ApiToken.id).where(ApiToken.user == "erin")).scalar_one()
        assert revoke_token(session, token_id)
    assert api.get("/api/v1/me", headers=headers).status_code == 401


def test_tokens_are_hashed_at_rest(api, as_user):
    from sqlalchemy import text

    from core.db import get_engine

    token = as_user("frank", "viewer")["Authorization"].split()[1]
    with get_engine().connect() as conn:
        stored = [r[0] for r in conn.execute(text("SELECT token_hash FROM api_tokens WHERE \"user\" = 'frank'"))]
        dump = " ".join(str(r) for r in conn.execute(text("SELECT * FROM api_tokens")))
    assert stored and stored[0] != token and len(stored[0]) == 64
    assert token not in dump


def test_audit_export_is_for_admins_in_json_and_csv(api):
    request_id = _propose(api)
    api.post(f"/api/v1/requests/{request_id}/approve", headers=bearer("alice"))  # denied: requester
    api.post(f"/api/v1/requests/{request_id}/approve", headers=bearer("bob"))
    assert api.get("/api/v1/audit", headers=bearer("bob")).status_code == 403
    items = api.get(f"/api/v1/audit?request_id={request_id}", headers=bearer("root")).json()["items"]
    actions = [(i["actor"], i["action"], i["to_state"]) for i in items]
    assert ("alice", "proposed", None) in actions and ("bob", "transition", "approved") in actions
    assert any(i["action"] == "denied" and i["actor"] == "alice" for i in items)
    response = api.get(f"/api/v1/audit?format=csv&request_id={request_id}", headers=bearer("root"))
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == len(items) and rows[0]["actor"] == items[0]["actor"]


def test_chat_rate_limit_is_per_user(api, monkeypatch):
    from core.settings import reset_settings_cache

    monkeypatch.setenv("CHAT_RATE_LIMIT", "3/minute")
    reset_settings_cache()
    try:
        codes = [api.post("/api/v1/chat", json={"text": "hello"}, headers=bearer("alice")).status_code
                 for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        limited = api.post("/api/v1/chat", json={"text": "hello"}, headers=bearer("alice"))
        assert int(limited.headers["Retry-After"]) >= 1
        assert api.post("/api/v1/chat", json={"text": "hello"}, headers=bearer("root")).status_code == 200
    finally:
        monkeypatch.delenv("CHAT_RATE_LIMIT")
        reset_settings_cache()


def test_proxy_mode_takes_roles_from_patchpilots_own_table_never_from_a_groups_header(api, monkeypatch):
    from sqlmodel import Session

    from core.db import get_engine
    from core.identity import grant_roles
    from core.settings import reset_settings_cache

    monkeypatch.setenv("AUTH_MODE", "proxy")
    reset_settings_cache()
    try:
        api.headers.pop("Authorization", None)
        # OpenShift's oauth-proxy neither sets nor strips X-Forwarded-Groups: anyone could send it.
        forged = {"X-Forwarded-User": "gina", "X-Forwarded-Groups": "patchpilot-admins"}
        assert api.get("/api/v1/me", headers=forged).json() == {"user": "gina", "roles": [], "via": "proxy"}
        assert api.get("/api/v1/audit", headers=forged).status_code == 403
        with Session(get_engine()) as session:
            grant_roles(session, user="gina", roles=["approver"], granted_by="test")
        me = api.get("/api/v1/me", headers={"X-Forwarded-User": " GINA "}).json()
        assert me == {"user": "gina", "roles": ["approver"], "via": "proxy"}
    finally:
        monkeypatch.delenv("AUTH_MODE")
        reset_settings_cache()


def test_proxy_mode_maps_groups_only_from_a_configured_groups_header(api, monkeypatch):
    from core.settings import reset_settings_cache

    monkeypatch.setenv("AUTH_MODE", "proxy")
    monkeypatch.setenv("PROXY_GROUPS_HEADER", "X-Forwarded-Groups")
    reset_settings_cache()
    try:
        api.headers.pop("Authorization", None)
        assert api.get("/api/v1/me").status_code == 401
        me = api.get("/api/v1/me", headers={"X-Forwarded-User": "gina",
                                            "X-Forwarded-Groups": "staff, patchpilot-approvers"}).json()
        assert me == {"user": "gina", "roles": ["approver"], "via": "proxy"}
        # A bearer token means nothing in proxy mode, and a user in no mapped group has no role.
        assert api.get("/api/v1/requests", headers=bearer("root")).status_code == 401
        nobody = api.get("/api/v1/requests", headers={"X-Forwarded-User": "hank", "X-Forwarded-Groups": "staff"})
        assert nobody.status_code == 403
        bad = api.get("/api/v1/me", headers={"X-Forwarded-User": "a b,c"})
        assert bad.status_code == 401
    finally:
        monkeypatch.delenv("AUTH_MODE")
        monkeypatch.delenv("PROXY_GROUPS_HEADER")
        reset_settings_cache()


def test_token_command_creates_lists_and_revokes(db):
    env = {**os.environ}
    run = lambda *args: subprocess.run([sys.executable, "-m", "patchpilot", "token", *args], cwd=ROOT, env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=60)
    created = run("create", "ivan", "--role", "approver", "--name", "laptop")
    assert created.returncode == 0 and created.stdout.startswith("pp_")
    token = created.stdout.strip()
    listed = run("list")
    assert "ivan\tapprover\tlaptop\tactive" in listed.stdout and token not in listed.stdout
    token_id = [line.split("\t")[0] for line in listed.stdout.splitlines() if "ivan" in line][0]
    assert run("revoke", token_id).returncode == 0
    assert "revoked" in run("list").stdout
    bad = run("create", "ivan", "--role", "superuser")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_role_command_grants_lists_and_revokes_canonical_names_only(db):
    env = {**os.environ}
    run = lambda *args: subprocess.run([sys.executable, "-m", "patchpilot", "role", *args], cwd=ROOT, env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=60)
    for name in ("Jane", "jane ", "+jane", "jane smith"):
        refused = run("grant", name, "approver")
        assert refused.returncode == 2 and "jane" in refused.stderr.lower(), refused
    assert run("grant", "jane", "approver", "viewer").returncode == 0
    assert "jane\tapprover,viewer\tgranted by cli:" in run("list").stdout
    assert run("revoke", "jane").returncode == 0
    assert "jane" not in run("list").stdout
    assert [i["reason"] for i in _audit_rows("roles_granted")] == ["jane: approver,viewer", "jane: none"]


def test_token_command_refuses_names_that_are_not_canonical(db):
    created = subprocess.run([sys.executable, "-m", "patchpilot", "token", "create", "Bob", "--role", "approver"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert created.returncode == 2 and "'bob'" in created.stderr and not created.stdout


def _audit_rows(action):
    from sqlalchemy import select
    from sqlmodel import Session

    from core.db import get_engine
    from core.models import AuditLog

    with Session(get_engine()) as session:
        return [{"reason": r.reason} for r in session.execute(
            select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)).scalars()]


@pytest.mark.integration
def test_migrate_grant_to_makes_a_role_that_can_only_append_to_the_audit_log(db):
    import psycopg
    from sqlalchemy.engine import make_url

    role = f"pp_app_{os.getpid()}"
    env = {**os.environ, "APP_DATABASE_PASSWORD": "only-for-this-test"}
    done = subprocess.run([sys.executable, "-m", "patchpilot", "migrate", "--grant-to", role], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    url = make_url(os.environ["DATABASE_URL"]).set(drivername="postgresql")
    owner = url.render_as_string(hide_password=False)
    try:
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute(f"SET ROLE {role}")
            conn.execute("INSERT INTO audit_log (at, actor, action) VALUES (now(), 'x', 'note')")
            conn.execute("SELECT count(*) FROM patch_requests")
            for statement in ("UPDATE audit_log SET actor = 'y'", "DELETE FROM audit_log", "TRUNCATE audit_log",
                              "ALTER TABLE audit_log DISABLE TRIGGER ALL"):
                with pytest.raises(psycopg.Error):
                    conn.execute(statement)
            conn.execute("RESET ROLE")
            assert conn.execute("SELECT rolpassword IS NOT NULL AND NOT rolsuper FROM pg_authid WHERE rolname = %s",
                                (role,)).fetchone() == (True,)
    finally:
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
