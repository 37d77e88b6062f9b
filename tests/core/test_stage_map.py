"""Bring your own playbook: the stage a play or task starts comes from a per-template map (STAGE_MAP_FILE), the
reference playbook's play names by default; a play the map does not know shows under Patching by its own name."""

from pathlib import Path

import pytest
import yaml

from core.stage_map import REFERENCE_RULES, StageMapError, load_stage_map

CUSTOM = {
    "Linux monthly patching": [
        {"play": "Preflight*", "stage": "prechecks"},
        {"task": "yum update*", "stage": "patching"},
        {"play": "*reboot*", "stage": "reboot"},
        {"play": "Verify*", "stage": "postchecks"},
    ],
    "*": [{"play": "Checks", "stage": "prechecks"}],
}


@pytest.fixture
def custom(tmp_path) -> Path:
    path = tmp_path / "stages.yml"
    path.write_text(yaml.safe_dump(CUSTOM))
    return path


def test_the_default_is_the_reference_playbook():
    stages = load_stage_map(None)
    assert stages.rules_for("Patch Linux") == REFERENCE_RULES
    assert stages.play_stage("Patch Linux", "Pre-checks") == ("prechecks", None)
    assert stages.play_stage("Patch Linux", "post-checks ") == ("postchecks", None)
    assert stages.play_stage("Patch Linux", "Gather inventory facts") == ("patching", "Gather inventory facts")


def test_a_custom_map_per_template_with_play_and_task_patterns(custom):
    stages = load_stage_map(custom)
    assert stages.play_stage("Linux monthly patching", "PREFLIGHT checks") == ("prechecks", None)
    assert stages.stage_of("Linux monthly patching", "task", "yum update -y security") == "patching"
    assert stages.play_stage("Linux monthly patching", "Controlled reboot (if needed)") == ("reboot", None)
    assert stages.play_stage("Linux monthly patching", "Snapshot VMs") == ("patching", "Snapshot VMs")
    assert stages.stage_of("Linux monthly patching", "task", "Print a banner") is None
    # another template gets "*", not the reference names
    assert stages.play_stage("Windows", "Checks") == ("prechecks", None)
    assert stages.play_stage("Windows", "Pre-checks") == ("patching", "Pre-checks")


@pytest.mark.parametrize("body, message", [
    ({"T": [{"play": "x", "stage": "lunch"}]}, "stage"),
    ({"T": [{"play": "x", "task": "y", "stage": "reboot"}]}, "exactly one of play or task"),
    ({"T": []}, "needs a list of rules"),
    (["not", "a", "map"], "must map job template names"),
])
def test_a_broken_map_is_one_clear_error(tmp_path, body, message):
    path = tmp_path / "stages.yml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(StageMapError, match=message):
        load_stage_map(path)


@pytest.mark.integration
def test_the_follower_uses_the_map_and_names_an_unknown_play(own_database, custom, monkeypatch):
    from sqlalchemy import select

    from api.services import timeline
    from api.services.requests import stage_label
    from core.db import session_scope
    from core.models import JobEvent, PatchRequest, RequestStage
    from core.settings import reset_settings_cache
    from worker import execution

    groups = custom.parent / "patch-groups.yml"
    groups.write_text(yaml.safe_dump({"monthly": {"description": "Monthly", "job_template": "Linux monthly patching",
                                                  "extra_vars": {}}}))
    inventory = custom.parent / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"vm-1": {}}}}))
    for name, value in (("STAGE_MAP_FILE", custom), ("PATCH_GROUPS_FILE", groups), ("INVENTORY_FILE", inventory),
                        ("POLICY_FILE", Path(__file__).parents[2] / "fixtures" / "default-policy.yml"),
                        ("INVENTORY_SOURCE", "file")):
        monkeypatch.setenv(name, str(value))
    reset_settings_cache()
    try:
        with session_scope() as session:
            req = PatchRequest(action="patch", hosts=["vm-1"], patch_group="monthly", requested_by="alice",
                               state="running")
            session.add(req)
            session.flush()
            seen = []
            for event in ({"event": "playbook_on_play_start", "play": "Preflight checks"},
                          {"event": "playbook_on_play_start", "play": "Snapshot VMs"},
                          {"event": "playbook_on_task_start", "play": "Snapshot VMs", "task": "yum update all"},
                          {"event": "playbook_on_play_start", "play": "Controlled reboot"}):
                execution._apply_event(session, req, event)
                seen.append((req.stage, stage_label(req)))
            stages = list(session.execute(select(RequestStage.stage).where(RequestStage.request_id == req.id))
                          .scalars())
            for counter, (play, event) in enumerate((("Preflight checks", "runner_on_ok"),
                                                     ("Snapshot VMs", "runner_on_ok"),
                                                     ("Apply errata", "runner_on_failed"),
                                                     ("Controlled reboot", "runner_on_skipped")), start=1):
                session.add(JobEvent(request_id=req.id, counter=counter, event=event, host="vm-1", play=play,
                                     failed=event == "runner_on_failed"))
            session.flush()
            plays = timeline.play_summary(session, req.id)
        assert seen == [("prechecks", "Pre-checks started"),
                        ("patching", "Patching in progress: Snapshot VMs"),
                        ("patching", "Patching in progress"),
                        ("reboot", "Reboot in progress")]
        assert sorted(stages) == ["patching", "prechecks", "reboot"]
        # the timeline counts the plays the same way: two unknown plays under Patching
        assert {stage: (p["ran"], p["skipped"], p["failed"]) for stage, p in plays.items()} == {
            "prechecks": (1, 0, 0), "patching": (2, 0, 1), "reboot": (0, 1, 0)}
    finally:
        monkeypatch.undo()
        reset_settings_cache()
