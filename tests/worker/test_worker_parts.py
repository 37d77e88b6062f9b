"""The worker's parts that need no service: the per-process context, per-host results and stages from job events,
and a worker that refuses to start without a broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.models import HostResult
from core.settings import get_settings
from core.stage_map import load_stage_map
from core.statuses import HostStatus
from worker import context
from worker.events import stage_change
from worker.host_results import apply_host_event, stats_results

ROOT = Path(__file__).resolve().parents[2]


# --- the context ----------------------------------------------------------------------------------------------


def test_one_context_per_process_and_settings_with_one_reset():
    settings = get_settings().model_copy(update={"awx_url": "https://awx.example.com/api/v2/",
                                                 "awx_token": SecretStr("t"), "follow_round_threads": 3,
                                                 "follow_poll_seconds": 2.0})
    context.reset_worker_context()
    try:
        first = context.worker_context(settings)
        client = first.client()
        assert context.worker_context(settings) is first and first.client() is client
        assert first.statuses().client is client and first.statuses().max_age == 2.0
        assert first.round_pool() is first.round_pool() is not None
        changed = settings.model_copy(update={"follow_round_threads": 1})
        second = context.worker_context(changed)  # the settings changed (a test reset them): made again
        assert second is not first and second.round_pool() is None and second.client() is not client
        context.reset_worker_context()
        assert context.worker_context(changed) is not second
    finally:
        context.reset_worker_context()


# --- per-host results -----------------------------------------------------------------------------------------


def _event(kind: str, **fields) -> dict:
    res = fields.pop("res", {})
    return {"event": kind, "host_name": "web-01", "task": fields.pop("task", "Apply"), "changed": False,
            "event_data": {"res": res, **fields}}


def test_a_host_runs_until_its_task_ends_and_a_failure_sticks():
    row = HostResult(request_id="r", host="web-01", status=HostStatus.PENDING, ok=0, changed=0, failed=0,
                     unreachable=0, skipped=0)
    apply_host_event(row, _event("runner_on_start"))
    assert row.status == "running"
    apply_host_event(row, _event("runner_on_ok", res={"changed": True}))
    assert (row.status, row.ok, row.changed) == ("changed", 1, 1)
    apply_host_event(row, _event("runner_on_failed", task="Probe", ignore_errors=True, res={"msg": "ignored"}))
    assert row.status == "changed" and row.failed == 0  # an ignored failure is no failure
    apply_host_event(row, _event("runner_item_on_failed", task="Disk", res={"msg": "full", "item": "/var"}))
    apply_host_event(row, _event("runner_on_failed", task="Disk", res={"msg": "One or more items failed"}))
    assert row.status == "failed" and row.message == "Disk (item /var): full"
    apply_host_event(row, _event("runner_on_start", task="Later"))
    apply_host_event(row, _event("runner_on_ok", task="Later"))
    assert row.status == "failed"


def test_the_final_stats_set_each_hosts_status():
    results = stats_results({"ok": {"a": 3, "b": 2, "c": 1}, "changed": {"b": 1}, "failures": {"c": 1},
                             "dark": {"d": 1}, "skipped": {"e": 4}})
    assert {host: r["status"] for host, r in results.items()} == {
        "a": "ok", "b": "changed", "c": "failed", "d": "unreachable", "e": "skipped"}
    assert results["b"] == {"status": "changed", "ok": 2, "changed": 1, "failed": 0, "unreachable": 0, "skipped": 0}


def test_stages_come_from_the_stage_map():
    stages = load_stage_map(None)
    assert stage_change({"event": "playbook_on_play_start", "play": "Pre-checks"}, stages, "Patch Linux") == (
        "prechecks", None)
    play = stage_change({"event": "playbook_on_play_start", "play": "Snapshot VMs"}, stages, "Patch Linux")
    assert play is not None and play[0] == "patching" and play[1] == "Snapshot VMs"
    assert stage_change({"event": "runner_on_ok", "play": "Reboot"}, stages, "Patch Linux") is None


# --- the broker -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("program", [["worker", "--concurrency", "1"], ["beat", "--schedule", "{tmp}/schedule"]])
def test_a_worker_or_beat_without_redis_url_stops_at_once_and_says_why(program, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PATCHPILOT_SECRETS_DIR")}
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app",
            *(arg.format(tmp=tmp_path) for arg in program)]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "patchpilot cannot start: REDIS_URL is not set" in done.stdout + done.stderr
