"""The API routes the UI reads: the truthful timeline, the approvals inbox, the live view of a request, meta."""

import json
import time
from pathlib import Path

import pytest
from conftest import bearer

from api.services import timeline as timeline_service
from api.services.timeline import timeline
from core.identity import ROLES
from core.intent import REBOOT_LABELS, Action, RebootPolicy
from core.inventory import load_catalog
from core.states import (
    ACTIVE,
    CANCELABLE,
    JOBS_SHOWN,
    TERMINAL,
    TIMELINE_STAGES,
    RequestState,
    Stage,
    StageStatus,
)

ALICE, BOB = bearer("alice"), bearer("bob")


def _view(state, stages, **extra):
    return {"state": state,
            "stages": [{"stage": s, "at": f"2026-11-30T10:00:0{i}+00:00"} for i, s in enumerate(stages)],
            "finished_at": "2026-11-30T10:00:09+00:00" if state in ("succeeded", "failed", "canceled") else None,
            "reboot": "if_needed", "check_mode": False, **extra}


def by_stage(steps):
    return {s["stage"]: (s["status"], s["label"]) for s in steps}


def test_a_reboot_play_whose_tasks_were_all_skipped_reads_skipped_and_finished_stages_read_in_the_past():
    plays = {"prechecks": {"ran": 3, "skipped": 0, "failed": 0}, "patching": {"ran": 3, "skipped": 0, "failed": 0},
             "reboot": {"ran": 0, "skipped": 2, "failed": 0}, "postchecks": {"ran": 2, "skipped": 0, "failed": 0}}
    every_stage = ["prechecks", "patching", "reboot", "postchecks", "completed"]
    steps = by_stage(timeline(_view("succeeded", every_stage), plays))
    assert steps == {"prechecks": ("done", "Pre-checks passed"), "patching": ("done", "Patched"),
                     "reboot": ("skipped", "Reboot skipped (not needed)"),
                     "postchecks": ("done", "Post-checks passed"), "completed": ("done", "Patching completed")}
    dry = by_stage(timeline(_view("succeeded", every_stage[:-1], check_mode=True), plays))
    assert dry["reboot"] == ("skipped", "Reboot skipped (dry run)")
    assert dry["completed"] == ("done", "Dry run completed")


def test_only_the_stage_running_now_is_in_progress():
    plays = {"prechecks": {"ran": 3, "skipped": 0, "failed": 0}, "patching": {"ran": 1, "skipped": 0, "failed": 0}}
    steps = by_stage(timeline(_view("running", ["prechecks", "patching"]), plays))
    assert steps["prechecks"] == ("done", "Pre-checks passed")
    assert steps["patching"] == ("current", "Patching in progress")
    assert steps["reboot"][0] == steps["postchecks"][0] == steps["completed"][0] == "pending"


def test_a_failed_or_canceled_run_names_where_it_stopped_and_who_canceled():
    plays = {"prechecks": {"ran": 3, "skipped": 0, "failed": 0}, "patching": {"ran": 1, "skipped": 0, "failed": 1}}
    failed = by_stage(timeline(_view("failed", ["prechecks", "patching"]), plays))
    assert failed["patching"] == ("failed", "Patching failed")
    assert failed["reboot"] == ("not_run", "Reboot not run")
    canceled = by_stage(timeline(_view("canceled", ["prechecks", "patching"], decided_by="alice"),
                                 {"prechecks": plays["prechecks"], "patching": {"ran": 1, "skipped": 0, "failed": 0}}))
    assert canceled["patching"] == ("canceled", "Canceled during patching")
    assert canceled["completed"] == ("canceled", "Canceled by alice")


def test_a_precheck_only_run_skips_what_it_did_not_need():
    plays = {"prechecks": {"ran": 2, "skipped": 0, "failed": 0}}
    steps = by_stage(timeline(_view("succeeded", ["prechecks", "completed"]), plays))
    assert steps["patching"][0] == steps["reboot"][0] == steps["postchecks"][0] == "skipped"


FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FLEETS = {
    "demo": (FIXTURES / "demo-inventory.yml", FIXTURES / "patch-groups.yml", FIXTURES / "policy.yml"),
    "enterprise": (FIXTURES / "enterprise" / "inventory.yml", FIXTURES / "enterprise" / "patch-groups.yml",
                   FIXTURES / "enterprise" / "policy.yml"),
}


@pytest.mark.parametrize("fleet", sorted(FLEETS))
def test_meta_gives_every_word_the_ui_needs_from_core_and_the_policy(fleet):
    catalog = load_catalog(*FLEETS[fleet])
    meta = json.loads(json.dumps(timeline_service.meta(catalog)))  # what the route sends: plain JSON
    assert meta == timeline_service.meta(catalog)  # the enum members serialise as their plain values

    states = {s["value"]: s for s in meta["states"]}
    assert list(states) == [s.value for s in RequestState]
    for value, info in states.items():
        assert info["state"] == value and info["label"] and info["icon"]
        assert (info["terminal"], info["active"], info["cancelable"]) == (
            value in TERMINAL, value in ACTIVE, value in CANCELABLE)
    assert states["proposed"]["label"] == "waiting for approval" and not states["running"]["terminal"]

    assert [s["value"] for s in meta["stages"]] == [s.value for s in TIMELINE_STAGES]
    for stage in meta["stages"]:
        assert stage["stage"] == stage["value"] and stage["label"] == stage["title"] and stage["label"]
        assert set(stage["texts"]) == set(meta["stage_statuses"]) == {s.value for s in StageStatus}
        assert stage["labels"] == stage["texts"]
    assert set(meta["stage_labels"]) == {s.value for s in Stage}

    production = sorted(catalog.policy.production())
    assert production and meta["production_environments"] == production
    assert meta["environments"] == meta["environment_order"]
    assert meta["environments"][:len(production)] == production
    assert set(meta["environments"]) >= set(catalog.policy.environments)
    assert meta["roles"] == list(ROLES)

    assert meta["reboot_policies"] == [{"value": p.value, "label": REBOOT_LABELS[p]} for p in RebootPolicy]
    assert {"value": "never", "label": "no reboot"} in meta["reboot_policies"]
    assert [a["value"] for a in meta["actions"]] == [a.value for a in Action]
    assert all(a["label"] for a in meta["actions"])
    assert {name: set(states) for name, states in meta["jobs_shown"].items()} == {
        name: {s.value for s in shown} for name, shown in JOBS_SHOWN.items()}
    assert set(meta["host_statuses"]) >= {"ok", "changed", "failed", "unreachable", "skipped"}


@pytest.mark.integration
def test_inbox_live_view_and_meta_over_a_real_run(api, awx_double, worker_process):
    meta = api.get("/api/v1/meta").json()
    assert meta["production_environments"] == ["prod"] and meta["environment_order"][0] == "prod"
    assert [s["stage"] for s in meta["stages"]][-1] == "completed"
    assert {s["state"]: s["terminal"] for s in meta["states"]}["succeeded"] is True

    chat = api.post("/api/v1/chat", json={"text": "Patch server web-01 with Group-1"}, headers=ALICE).json()
    request_id = chat["proposal"]["id"]
    inbox = api.get("/api/v1/inbox", headers=BOB).json()
    item = next(i for i in inbox["items"] if i["id"] == request_id)
    assert inbox["count"] >= 1 and item["requested_by"] == "alice" and item["production"] is True
    assert item["hosts_by_environment"] == {"prod": ["web-01"]} and item["expires_at"]
    mine = api.get("/api/v1/inbox", headers=ALICE).json()
    assert request_id not in [i["id"] for i in mine["items"]] and request_id in [i["id"] for i in mine["mine"]]

    # The requester is told before clicking that four-eyes needs someone else; she may still withdraw it.
    live = api.get(f"/api/v1/requests/{request_id}/live", headers=ALICE).json()
    assert live["allowed"]["approve"] is None or "four-eyes" in live["allowed"]["approve"] or \
        "approver role" in live["allowed"]["approve"]
    assert live["allowed"]["reject"] is None
    assert api.get(f"/api/v1/requests/{request_id}/live", headers=BOB).json()["allowed"]["approve"] is None

    assert api.post(f"/api/v1/requests/{request_id}/approve", headers=BOB).status_code == 200
    assert request_id not in [i["id"] for i in api.get("/api/v1/inbox", headers=BOB).json()["items"]]
    deadline = time.monotonic() + 180  # generous: the machine is shared
    while time.monotonic() < deadline:
        live = api.get(f"/api/v1/requests/{request_id}/live", headers=ALICE).json()
        if live["request"]["terminal"]:
            break
        time.sleep(0.3)
    assert live["request"]["state"] == "succeeded", live
    steps = by_stage(live["timeline"])
    assert steps["reboot"] == ("skipped", "Reboot skipped (not needed)")  # web-01 needs no reboot on Group-1
    assert steps["patching"] == ("done", "Patched") and steps["completed"] == ("done", "Patching completed")
    assert live["allowed"]["cancel"] and live["tasks"]
    assert any(t["task"] and t["task"].startswith("Apply updates") and t["host"] == "web-01" for t in live["tasks"])
    assert api.get("/api/v1/requests/" + "0" * 32 + "/live").status_code == 404
