"""The policy file: validation at load, the pure rules in the validator, and four-eyes / freezes / windows at
approval through the API."""

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from api.deps import current_catalog
from core.intent import IntentDraft
from core.inventory import get_catalog
from core.policy import ChangeFreeze, MaintenanceWindow, Policy, PolicyError, load_policy
from core.validation import validate_draft

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_policy_loads_and_keeps_jump_01_out():
    catalog = get_catalog()
    assert catalog.policy.never_patch_hosts == ["jump-01"]
    assert catalog.is_refused("jump-01") and not catalog.is_refused("web-01")


@pytest.mark.parametrize("text,message", [
    ("max_hosts_per_request: 0", "max_hosts_per_request"),
    ("never_patch_hosts: [nope-99]", "nope-99"),
    ("reboot_allowed: {Group-9: false}", "Group-9"),
    ("maintenance_windows: [{name: w, days: [funday], start: '01:00', end: '02:00'}]", "days"),
    ("maintenance_windows: [{name: w, days: [sat], start: '01:00', end: '02:00', timezone: Mars/Base}]", "time zone"),
    ("change_freezes: [{name: f, start: '2026-12-20T00:00:00Z', end: '2026-12-01T00:00:00Z'}]", "ends before"),
    ("surprise: true", "surprise"),
    ("[not, a, mapping", "not valid YAML"),
])
def test_an_invalid_policy_file_is_refused_with_a_readable_reason(tmp_path, text, message):
    path = tmp_path / "policy.yml"
    path.write_text(text)
    catalog = get_catalog()
    with pytest.raises(PolicyError, match=message):
        load_policy(path, known_hosts=set(catalog.inventory.hosts), known_groups=set(catalog.patch_groups))


def test_missing_policy_file_is_a_clear_error(tmp_path):
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yml")


def _with_policy(**fields):
    catalog = get_catalog()
    return replace(catalog, policy=Policy(**fields))


def test_max_hosts_per_request_turns_a_big_request_into_a_question():
    catalog = _with_policy(max_hosts_per_request=3)
    draft = IntentDraft(action="patch", groups=["web"], within=["prod"], patch_group="Group-1")
    result = validate_draft(draft, catalog)
    assert result.action == "clarify" and "at most 3" in result.message
    assert not result.is_proposable


def test_policy_host_list_refuses_hosts_like_the_inventory_flag():
    catalog = _with_policy(never_patch_hosts=["db-01"])
    result = validate_draft(IntentDraft(action="patch", hosts=["db-01"], patch_group="Group-1"), catalog)
    assert result.action == "clarify" and result.refused_hosts == ["db-01"]
    group = validate_draft(IntentDraft(action="patch", groups=["db"], within=["prod"], patch_group="Group-1"), catalog)
    assert group.hosts == ["db-02"] and group.refused_hosts == ["db-01"]


def test_reboot_not_allowed_for_a_group():
    catalog = _with_policy(reboot_allowed={"Group-3": False})
    default = validate_draft(IntentDraft(action="patch", hosts=["web-01"], patch_group="Group-3"), catalog)
    assert default.is_proposable and default.reboot == "never"
    asked = validate_draft(IntentDraft(action="patch", hosts=["web-01"], patch_group="Group-3", reboot="always"),
                           catalog)
    assert asked.action == "clarify" and "reboot" in asked.message


SAT_0230 = datetime(2026, 11, 28, 2, 30, tzinfo=UTC)  # a Saturday
FRI_1200 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_windows_and_freezes_with_a_fixed_clock():
    window = MaintenanceWindow(name="weekend nights", days=["sat", "sun"], start="01:00", end="05:00",
                               environments=["prod"])
    policy = Policy(maintenance_windows=[window])
    assert policy.when_refused({"prod"}, SAT_0230) is None
    refusal = policy.when_refused({"prod"}, FRI_1200)
    assert "weekend nights" in refusal and "2026-11-28 01:00 UTC" in refusal
    assert policy.when_refused({"dev"}, FRI_1200) is None  # the window only binds prod
    overnight = MaintenanceWindow(name="late", days=["fri"], start="23:00", end="02:00")
    assert overnight.open_at(datetime(2026, 11, 28, 1, 0, tzinfo=UTC))
    freeze = ChangeFreeze(name="year-end", start=datetime(2026, 11, 1, tzinfo=UTC),
                          end=datetime(2027, 1, 4, tzinfo=UTC))
    frozen = Policy(change_freezes=[freeze]).when_refused({"dev"}, FRI_1200)
    assert "year-end" in frozen and "2027-01-04" in frozen


# --------------------------------------------------------------------------- through the API

def _override_policy(policy: Policy):
    from api.main import app

    catalog = replace(get_catalog(), policy=policy)
    app.dependency_overrides[current_catalog] = lambda: catalog
    return app


@pytest.fixture
def restore_overrides():
    yield
    from api.main import app

    app.dependency_overrides.clear()


def _propose(api, text, user):
    body = api.post("/api/v1/chat", json={"text": text}, headers=user).json()
    assert body["proposal"], body
    return body["proposal"]["id"]


def _denials(request_id):
    from sqlalchemy import select
    from sqlmodel import Session

    from core.db import get_engine
    from core.models import AuditLog

    with Session(get_engine()) as session:
        return session.execute(select(AuditLog).where(AuditLog.request_id == request_id,
                                                      AuditLog.action == "denied")).scalars().all()


def test_four_eyes_requester_cannot_approve_own_production_request(api, as_user):
    request_id = _propose(api, "Patch web-01 with Group-1", as_user("alice", "approver"))
    response = api.post(f"/api/v1/requests/{request_id}/approve", headers=as_user("alice", "approver"))
    assert response.status_code == 403 and "four-eyes" in response.json()["detail"]
    assert [d.actor for d in _denials(request_id)] == ["alice"]
    assert api.get(f"/api/v1/requests/{request_id}", headers=as_user("alice", "approver")).json()["state"] == "proposed"
    ok = api.post(f"/api/v1/requests/{request_id}/approve", headers=as_user("bob", "approver"))
    assert ok.status_code == 200 and ok.json()["approved_by"] == "bob"


def test_non_production_may_be_self_approved_when_the_policy_says_so(api, as_user, restore_overrides):
    request_id = _propose(api, "Patch dev-web-01 with Group-1", as_user("alice", "approver"))
    assert api.post(f"/api/v1/requests/{request_id}/approve", headers=as_user("alice", "approver")).status_code == 200
    _override_policy(Policy(allow_self_approval_non_production=False))
    other = _propose(api, "Patch dev-app-01 with Group-1", as_user("alice", "approver"))
    response = api.post(f"/api/v1/requests/{other}/approve", headers=as_user("alice", "approver"))
    assert response.status_code == 403


def test_change_freeze_refuses_approval_naming_its_end(api, as_user, restore_overrides):
    _override_policy(Policy(change_freezes=[ChangeFreeze(
        name="year-end", start=datetime(2020, 1, 1, tzinfo=UTC), end=datetime(2099, 1, 1, tzinfo=UTC))]))
    request_id = _propose(api, "Patch stg-web-01 with Group-1", as_user("alice", "requester"))
    response = api.post(f"/api/v1/requests/{request_id}/approve", headers=as_user("bob", "approver"))
    detail = response.json()["detail"]
    assert response.status_code == 409 and "year-end" in detail and "2099-01-01" in detail
    assert len(_denials(request_id)) == 1


def test_outside_the_window_approval_names_the_next_window(api, as_user, restore_overrides):
    from core.models import utcnow
    from core.policy import WEEKDAYS

    today = WEEKDAYS[utcnow().weekday()]
    other_days = [d for d in WEEKDAYS if d != today][:1]
    _override_policy(Policy(maintenance_windows=[MaintenanceWindow(name="quiet hours", days=other_days,
                                                                   start="01:00", end="02:00")]))
    request_id = _propose(api, "Patch web-02 with Group-2", as_user("alice", "requester"))
    response = api.post(f"/api/v1/requests/{request_id}/approve", headers=as_user("bob", "approver"))
    assert response.status_code == 409
    assert "quiet hours" in response.json()["detail"] and "next" in response.json()["detail"]
