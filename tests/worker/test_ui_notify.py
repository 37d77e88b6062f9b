"""Webhook notifications (worker.notify) against a local HTTP receiver started by the test: the four-eyes
hand-off and the run's outcome reach Slack-, Teams- and generic-format webhooks; failures are retried and end
as dead letters in PostgreSQL."""

from __future__ import annotations

import time

import pytest
from conftest import bearer
from sqlalchemy import text

from core.inventory import get_catalog

pytestmark = pytest.mark.integration

ALICE, BOB = bearer("alice"), bearer("bob")


@pytest.fixture
def clean_outbox(db):
    from core.db import get_engine

    with get_engine().begin() as conn:
        conn.execute(text("DELETE FROM notifications"))
        conn.execute(text("DELETE FROM notify_cursor"))
    return db


def settings_with(receiver, **extra):
    from core.settings import get_settings

    hooks = [{"name": "slack", "url": receiver.url + "/slack", "format": "slack"},
             {"name": "teams", "url": receiver.url + "/teams", "format": "teams"},
             {"name": "generic", "url": receiver.url + "/generic", "format": "generic"}]
    return get_settings().model_copy(update={"notify_webhooks": hooks, "ui_base_url": "http://ui.example:8501",
                                             **extra})


def rounds_until(settings, done, timeout=30.0):
    from worker.notify import notify_round

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        notify_round(settings, get_catalog())
        if done():
            return
        time.sleep(0.2)
    raise AssertionError("the receiver did not get what was expected in time")


def test_the_hand_off_and_the_outcome_reach_every_webhook(api, awx_double, worker_process, receiver, clean_outbox):
    settings = settings_with(receiver)
    chat = api.post("/api/v1/chat", json={"text": "Patch server web-01 with Group-1"}, headers=ALICE).json()
    request_id = chat["proposal"]["id"]
    assert api.post(f"/api/v1/requests/{request_id}/approve", headers=BOB).status_code == 200
    deadline = time.monotonic() + 180  # generous: the machine is shared
    while api.get(f"/api/v1/requests/{request_id}").json()["state"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.3)

    def kinds():
        return [b["event"] for b in receiver.bodies.get("/generic", []) if b["request_id"] == request_id]

    rounds_until(settings, lambda: kinds() == ["awaiting_approval", "approved", "started", "succeeded"])
    generic = {b["event"]: b for b in receiver.bodies["/generic"] if b["request_id"] == request_id}
    assert generic["awaiting_approval"]["text"] == "alice asks for approval: Patch prod: web-01 with Group-1"
    assert generic["awaiting_approval"]["link"] == f"http://ui.example:8501/?request={request_id}"
    assert generic["approved"]["text"].startswith("bob approved alice's request")
    job = generic["succeeded"]["awx_job_id"]
    assert job and generic["started"]["text"].startswith(f"AWX job {job} started")
    assert generic["succeeded"]["text"].startswith(f"AWX job {job} succeeded: web-01 ")
    assert [h["host"] for h in generic["succeeded"]["host_results"]] == ["web-01"]
    slack = receiver.bodies["/slack"]
    assert len(slack) == 4 and all(set(b) == {"text", "blocks"} for b in slack)
    assert f"<http://ui.example:8501/?request={request_id}|Open in patchpilot>" in slack[0]["blocks"][0]["text"]["text"]
    teams = receiver.bodies["/teams"]
    assert len(teams) == 4 and all(b["@type"] == "MessageCard" for b in teams)
    assert teams[0]["potentialAction"][0]["targets"][0]["uri"].endswith(f"?request={request_id}")
    # Another round sends nothing twice.
    rounds_until(settings, lambda: True)
    assert len(receiver.bodies["/slack"]) == 4


def test_a_failing_webhook_is_retried_then_recorded_as_dead(api, receiver, clean_outbox, monkeypatch):
    from core.db import get_engine
    from worker import notify

    monkeypatch.setattr(notify, "BACKOFF_SECONDS", (0, 0, 0))
    settings = settings_with(receiver, notify_attempts=3)
    receiver.fail = {"/slack": 1, "/teams": 99}
    chat = api.post("/api/v1/chat", json={"text": "Patch server web-02 with Group-1"}, headers=ALICE).json()
    request_id = chat["proposal"]["id"]

    def settled():
        with get_engine().connect() as conn:
            states = dict(conn.execute(text("SELECT target, state FROM notifications WHERE request_id = :r"),
                                       {"r": request_id}).all())
        return states == {"slack": "sent", "teams": "dead", "generic": "sent"}

    rounds_until(settings, settled)
    with get_engine().connect() as conn:
        attempts, error = conn.execute(text("SELECT attempts, last_error FROM notifications "
                                            "WHERE request_id = :r AND target = 'teams'"), {"r": request_id}).one()
    assert attempts == 3 and error.startswith("HTTP 500")
    assert len(receiver.bodies["/slack"]) == 1  # the retry got through once, and only once


def test_no_webhook_configured_means_no_work(clean_outbox):
    from core.settings import get_settings
    from worker.notify import notify_round

    assert notify_round(get_settings().model_copy(update={"notify_webhooks": []}), get_catalog()) == {}
