"""INVENTORY_SOURCE=awx: the inventory, its disabled hosts and the patch groups' templates come from AWX (here the
double), are stored as snapshots in PostgreSQL and serve the parser, the validator and the launch re-check."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from awx_double.app import create_app
from awx_double.state import DoubleState, Scenario
from core.inventory import Inventory, load_patch_groups
from core.inventory_sync import inventory_from_script, merge_scripts, recheck_hosts, template_problems
from worker.awx_client import AWXClient, AWXError, AWXLaunchRefused

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "fixtures" / "demo-inventory.yml"
GROUPS = ROOT / "fixtures" / "patch-groups.yml"
TOKEN = "double-token"


class _InProcess(httpx.BaseTransport):
    """Requests to an ASGI app in this process, answered as a plain synchronous httpx response."""

    def __init__(self, app):
        self.client = TestClient(app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.client.request(request.method, str(request.url), headers=dict(request.headers),
                                     content=request.read())
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


def double_client(tmp_path: Path | None = None, *, patch_groups: Path = GROUPS, inventory: Path = DEMO,
                  **scenario) -> tuple[AWXClient, DoubleState]:
    """An AWXClient talking to an in-process AWX double (no sockets)."""
    app = create_app(inventory, patch_groups, TOKEN, 20.0, scenario=Scenario(**scenario))
    transport = _InProcess(app)
    return AWXClient("http://awx.test/api/v2/", TOKEN, transport=transport, sleep=lambda _: None,
                     retry_attempts=2), app.state.double


# --------------------------------------------------------------------------------------------- unit


def test_the_script_of_the_double_is_the_same_inventory_as_the_file():
    client, _ = double_client()
    script = client.inventory_script(int(client.find_inventory("Demo fleet")["id"]))
    synced, reference = inventory_from_script(script), Inventory.load(DEMO)
    assert set(synced.hosts) == set(reference.hosts)
    for name, host in reference.hosts.items():
        assert synced.hosts[name].groups == host.groups and synced.hosts[name].vars == host.vars
        assert synced.hosts[name].enabled
    assert dict(synced.groups) == dict(reference.groups)


def test_the_script_keeps_the_group_tree_and_marks_disabled_hosts():
    client, _ = double_client(disabled_hosts=["web-02"])
    script = client.inventory_script(1)
    assert "prod_web" in script["prod"]["children"]  # the tree, not a flattened membership
    assert script["_meta"]["hostvars"]["web-02"]["remote_tower_enabled"] == "false"
    inventory = inventory_from_script(script)
    assert not inventory.hosts["web-02"].enabled and inventory.hosts["web-01"].enabled
    assert "remote_tower_enabled" not in inventory.hosts["web-02"].vars  # AWX's marks are not host variables
    assert "web-02" in inventory.group_hosts("prod")
    # without all=1 AWX leaves disabled hosts out altogether
    plain = client._get("inventories/1/script/", params={"hostvars": 1})
    assert "web-02" not in plain["_meta"]["hostvars"] and "web-02" not in plain["prod_web"]["hosts"]


def test_several_inventories_merge_by_group_name():
    a = {"web": {"hosts": ["a1"]}, "_meta": {"hostvars": {"a1": {"os_family": "RedHat"}}}}
    b = {"web": {"hosts": ["b1"], "children": ["edge"]}, "edge": {"hosts": ["b2"]},
         "_meta": {"hostvars": {"b1": {}, "b2": {}}}}
    inventory = inventory_from_script(merge_scripts([a, b]))
    assert inventory.group_hosts("web") == {"a1", "b1", "b2"}
    assert inventory.hosts["a1"].vars == {"os_family": "RedHat"}


def test_lookups_follow_pages_until_the_name_is_found():
    """Inventory and template lookups read every page (AWX pages hold at most 200 rows)."""
    rows = [{"id": i, "name": f"inv-4-old-{i}"} for i in range(1, 451)] + [{"id": 451, "name": "inv-4"}]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        page = int(request.url.params.get("page", "1"))
        size = int(request.url.params.get("page_size", "25"))
        wanted = request.url.params.get("name")
        matching = [r for r in rows if wanted is None or wanted in r["name"]]
        chunk = matching[(page - 1) * size: page * size]
        more = page * size < len(matching)
        query = "&".join(f"{k}={v}" for k, v in request.url.params.items() if k != "page")
        return httpx.Response(200, json={"count": len(matching), "previous": None, "results": chunk,
                                         "next": f"/api/v2/inventories/?{query}&page={page + 1}" if more else None})

    with AWXClient("http://awx.test/api/v2/", TOKEN, transport=httpx.MockTransport(handler)) as client:
        # an AWX whose name filter is loose (icontains-like): the exact name is on the third page
        assert client.find_inventory("inv-4")["name"] == "inv-4"
    assert len(seen) == 3 and all("page_size=200" in url for url in seen)


def test_same_named_templates_in_two_organizations(tmp_path):
    groups = tmp_path / "patch-groups.yml"
    groups.write_text(yaml.safe_dump({
        "ops-monthly": {"description": "Ops", "job_template": "Patch Linux", "organization": "Ops",
                        "extra_vars": {"update_scope": "full"}},
        "pay-monthly": {"description": "Payments", "job_template": "Patch Linux", "organization": "Payments",
                        "extra_vars": {"update_scope": "full"}},
    }))
    client, state = double_client(patch_groups=groups)
    ops = client.find_job_template("Patch Linux", "Ops")
    pay = client.find_job_template("Patch Linux", "Payments")
    assert ops["id"] != pay["id"]
    assert ops["summary_fields"]["organization"]["name"] == "Ops"
    with pytest.raises(AWXError, match="2 job templates named 'Patch Linux'"):
        client.find_job_template("Patch Linux")  # never pick one of them by chance
    with pytest.raises(AWXError, match="in organization 'Security'"):
        client.find_job_template("Patch Linux", "Security")
    assert template_problems(client, load_patch_groups(groups), {1}) == []
    assert load_patch_groups(groups)["pay-monthly"].organization == "Payments"


def test_a_sliced_template_is_reported_at_sync_and_refused_at_launch():
    client, _ = double_client(sliced_templates=["Patch Linux"])
    problems = template_problems(client, load_patch_groups(GROUPS), {1})
    assert len(problems) == 1 and "is sliced (job_slice_count 2)" in problems[0]
    assert "workflow job" in problems[0] and "Group-1" in problems[0]
    template = client.find_job_template("Patch Linux")
    with pytest.raises(AWXLaunchRefused, match="sliced"):
        client.check_launchable(int(template["id"]))
    with pytest.raises(AWXLaunchRefused, match="sliced"):
        client.launch(int(template["id"]), limit="web-01", extra_vars={})


def test_template_checks_name_prompts_and_inventory():
    client, _ = double_client(template_asks_limit=False, template_asks_job_type=False)
    problems = template_problems(client, load_patch_groups(GROUPS), {2})
    assert any("does not prompt on launch for limit, job type" in p for p in problems)
    assert any("runs on inventory 1, not on the synced one(s) (2)" in p for p in problems)


# --------------------------------------------------------------------------------------------- integration


@pytest.fixture
def awx_source(own_database, awx_double, monkeypatch):
    """INVENTORY_SOURCE=awx against the session's double, on a database of this test's own."""
    from conftest import ensure_test_tokens

    from core.inventory_sync import forget
    from core.settings import reset_settings_cache

    monkeypatch.setenv("INVENTORY_SOURCE", "awx")
    monkeypatch.setenv("AWX_INVENTORY", "Demo fleet")
    reset_settings_cache()
    forget()
    ensure_test_tokens(own_database)
    yield awx_double
    forget()
    monkeypatch.undo()
    reset_settings_cache()



def _api():
    from api.auth import reset_rate_limits
    from api.main import app

    reset_rate_limits()
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.integration
def test_sync_serves_the_chat_and_records_the_snapshot_on_the_proposal(awx_source):
    from conftest import bearer

    from core.db import session_scope
    from core.inventory import get_catalog
    from core.inventory_sync import sync_inventory
    from core.models import PatchRequest

    result = sync_inventory()
    assert result.ok and result.hosts == len(Inventory.load(DEMO).hosts) and result.problems == ()
    assert get_catalog().snapshot_id == result.snapshot_id
    with _api() as api:
        chat = api.post("/api/v1/chat", json={"text": "Patch server dev-web-01 with Group-1"},
                        headers=bearer("alice")).json()
        assert chat["proposal"], chat
        system = api.get("/api/v1/system", headers=bearer("vic")).json()
    assert system["inventory"]["state"] == "ok" and system["inventory"]["snapshot_id"] == result.snapshot_id
    assert system["inventory_line"].startswith(f"inventory: {result.hosts} hosts from AWX, synced ")
    with session_scope() as session:
        assert session.get(PatchRequest, chat["proposal"]["id"]).inventory_snapshot_id == result.snapshot_id


@pytest.mark.integration
def test_a_disabled_host_is_never_proposed_and_the_reply_says_why(awx_source):
    from conftest import bearer

    from core.inventory_sync import sync_inventory

    awx_source.scenario(disabled_hosts=["dev-web-01"])
    assert sync_inventory().disabled_hosts == 1
    with _api() as api:
        chat = api.post("/api/v1/chat", json={"text": "Patch server dev-web-01 with Group-1"},
                        headers=bearer("alice")).json()
    assert chat["proposal"] is None
    assert "dev-web-01 is disabled in AWX (enabled: false)" in chat["reply"]


@pytest.mark.integration
def test_a_failing_sync_keeps_the_last_good_snapshot_and_says_so(awx_source):
    from conftest import bearer

    from core.inventory import get_catalog
    from core.inventory_sync import sync_inventory, sync_status

    good = sync_inventory()
    awx_source.scenario(server_errors=50)
    failed = sync_inventory()
    assert not failed.ok and "503" in failed.error
    awx_source.scenario(server_errors=0)
    assert get_catalog().snapshot_id == good.snapshot_id  # still served
    status = sync_status()
    assert status["state"] == "stale" and status["snapshot_id"] == good.snapshot_id
    assert status["last_good_sync_at"] and "503" in status["last_error"]
    with _api() as api:
        system = api.get("/api/v1/system", headers=bearer("vic")).json()
        chat = api.post("/api/v1/chat", json={"text": "Patch server dev-web-01 with Group-1"},
                        headers=bearer("alice")).json()
    line = system["inventory_line"]
    assert "the last sync failed" in line and "serving the last good snapshot" in line
    assert chat["proposal"], chat


@pytest.mark.integration
def test_no_snapshot_yet_is_a_clear_503(awx_source):
    from conftest import bearer

    with _api() as api:
        answer = api.post("/api/v1/chat", json={"text": "Patch server dev-web-01 with Group-1"},
                          headers=bearer("alice"))
    assert answer.status_code == 503 and "patchpilot inventory sync" in answer.json()["detail"]


@pytest.mark.integration
def test_admin_route_syncs_on_demand(awx_source):
    from conftest import bearer

    with _api() as api:
        assert api.post("/api/v1/inventory/sync", headers=bearer("alice")).status_code == 403
        answer = api.post("/api/v1/inventory/sync", headers=bearer("root"))
        status = api.get("/api/v1/inventory", headers=bearer("vic")).json()
    assert answer.status_code == 200 and answer.json()["ok"], answer.text
    assert status["snapshot_id"] == answer.json()["snapshot_id"] and status["line"].startswith("inventory: ")
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import AuditLog

    with session_scope() as session:
        rows = session.execute(select(AuditLog).where(AuditLog.action == "inventory_sync")).scalars().all()
        assert [(r.actor, r.detail["snapshot_id"]) for r in rows] == [("root", answer.json()["snapshot_id"])]


def test_the_status_line_warns_when_the_inventory_is_in_trouble(monkeypatch):
    import ui.views.status as views

    shown: list[tuple[str, str]] = []

    class Recorder:
        def __getattr__(self, kind):
            return lambda text, *a, **k: shown.append((kind, str(text)))

    monkeypatch.setattr(views, "st", Recorder())
    base = {"engine": "rules", "api": "ok", "database": "ok", "broker": "ok", "awx": "ok", "awx_url": None}
    views.render_status({**base, "inventory": {"state": "ok", "problems": []},
                         "inventory_line": "inventory: 20 hosts from AWX, synced 2026-11-30T10:00:00+00:00"})
    assert ("caption", "inventory: 20 hosts from AWX, synced 2026-11-30T10:00:00+00:00") in shown
    shown.clear()
    views.render_status({**base, "inventory": {"state": "stale", "problems": []},
                         "inventory_line": "inventory: …; the last sync failed (503)"})
    assert ("warning", "inventory: …; the last sync failed (503)") in shown


@pytest.mark.integration
def test_a_host_removed_between_proposal_and_launch_is_refused(awx_source):
    from conftest import bearer

    from core.db import session_scope
    from core.inventory_sync import sync_inventory
    from core.models import PatchRequest
    from core.states import APPROVED, FAILED, transition
    from worker import execution

    first = sync_inventory()
    with _api() as api:
        chat = api.post("/api/v1/chat", json={"text": "Patch dev-web-01 and dev-app-01 with Group-1"},
                        headers=bearer("alice")).json()
    request_id = chat["proposal"]["id"]
    awx_source.scenario(removed_hosts=["dev-app-01"])
    second = sync_inventory()
    assert second.hosts == first.hosts - 1
    with session_scope() as session:
        req = session.get(PatchRequest, request_id)
        transition(session, req, APPROVED, actor="bob", reason="approved", approved_by="bob")
    with AWXClient.from_settings() as client:
        assert execution.launch(request_id, client) == "refused"
    with session_scope() as session:
        req = session.get(PatchRequest, request_id)
        assert req.state == FAILED and req.awx_job_id is None
        assert "dev-app-01 is no longer in the AWX inventory" in req.failure_reason
        assert f"snapshot {second.snapshot_id}" in req.failure_reason
        assert f"validated against snapshot {first.snapshot_id}" in req.failure_reason
    assert awx_source.stats()["launches"] == 0
    # a host disabled meanwhile is refused the same way
    awx_source.scenario(removed_hosts=[], disabled_hosts=["dev-web-01"])
    sync_inventory()
    assert "dev-web-01 is disabled in AWX" in recheck_hosts(["dev-web-01"], first.snapshot_id)


@pytest.mark.integration
def test_an_unchanged_inventory_keeps_its_snapshot_and_a_new_one_is_built_beside_the_chat(awx_source):
    from core.inventory_sync import current_catalog, sync_inventory, sync_status

    first = sync_inventory()
    served = current_catalog()
    before = sync_status()["last_good_sync_at"]
    again = sync_inventory()
    assert again.snapshot_id == first.snapshot_id  # nothing changed in AWX: no new snapshot, no rebuild
    assert sync_status()["last_good_sync_at"] > before
    awx_source.scenario(disabled_hosts=["dev-db-01"])
    changed = sync_inventory()
    assert changed.snapshot_id != first.snapshot_id
    # The chat goes on with the catalog it has while the new one (and its vocabulary) is built beside it.
    assert current_catalog(fresh=False) is served or current_catalog().snapshot_id == changed.snapshot_id
    deadline = time.monotonic() + 30
    while current_catalog().snapshot_id != changed.snapshot_id:
        assert time.monotonic() < deadline, "the new snapshot was never served"
        time.sleep(0.1)
    assert "vocabulary" in current_catalog().__dict__  # built off the chat path


@pytest.mark.integration
def test_a_group_with_a_disabled_host_is_proposed_without_it_and_the_reply_says_why(awx_source):
    from conftest import bearer

    from core.inventory_sync import sync_inventory

    awx_source.scenario(disabled_hosts=["dev-app-01"])
    sync_inventory()
    with _api() as api:
        chat = api.post("/api/v1/chat", json={"text": "Patch the dev servers with Group-1"},
                        headers=bearer("alice")).json()
    assert chat["proposal"], chat
    assert "dev-app-01" not in [h["name"] for h in chat["proposal"]["hosts"]]
    assert "Disabled in AWX (enabled: false), so never proposed: dev-app-01." in chat["reply"]


def test_the_beat_asks_for_a_sync_as_it_starts(monkeypatch):
    from core.settings import reset_settings_cache
    from worker import inventory_tasks

    sent = []
    monkeypatch.setattr(inventory_tasks.celery_app, "send_task", lambda name, **kw: sent.append(name))
    monkeypatch.setenv("INVENTORY_SOURCE", "file")
    reset_settings_cache()
    inventory_tasks._sync_when_the_beat_starts()
    monkeypatch.setenv("INVENTORY_SOURCE", "awx")
    reset_settings_cache()
    inventory_tasks._sync_when_the_beat_starts()
    monkeypatch.undo()
    reset_settings_cache()
    assert sent == ["worker.inventory_tasks.sync_inventory"]


@pytest.mark.integration
def test_the_command_line_syncs_and_tells_the_status(awx_source, capsys):
    from patchpilot.cli import main

    assert main(["inventory", "sync"]) == 0
    assert "inventory synced from AWX: snapshot" in capsys.readouterr().out
    assert main(["inventory", "status"]) == 0
    assert capsys.readouterr().out.startswith("inventory: 20 hosts from AWX, synced ")
    awx_source.scenario(server_errors=50)
    assert main(["inventory", "sync"]) == 1
    assert "the last good snapshot stays in service" in capsys.readouterr().out


def test_paging_a_generated_fleet_of_the_double_matches_its_script(tmp_path):
    """The double pages like AWX (page_size at most 200, `next` until the last page) and its one-request script
    holds the same hosts and variables: the sync reads the script, the paged lists are the costly alternative."""
    from bench import fleetgen

    paths = fleetgen.write(tmp_path, 1000, 1)
    client, _ = double_client(inventory=paths["inventory"], patch_groups=paths["patch_groups"])
    first = client._get("inventories/1/hosts/", params={"page_size": 500})
    assert first["count"] == 1000 and len(first["results"]) == 200 and "page=2" in first["next"]
    paged = list(client._pages("inventories/1/hosts/", {"page_size": 200}))
    assert len(paged) == 1000 and len({h["name"] for h in paged}) == 1000
    script = client.inventory_script(1)
    synced = inventory_from_script(script)
    assert set(synced.hosts) == {h["name"] for h in paged}
    assert all(json.loads(h["variables"]) == synced.hosts[h["name"]].vars for h in paged)
    assert synced.groups == Inventory.load(paths["inventory"]).groups
