"""What real AWX does that a double written with the client would hide: recorded event streams (real ansible-runner
runs of playbooks/patch.yml in check mode, awx_double/streams/) replayed by the double, the cancel race (403 for a
finished job), 302 during an upgrade, sliced templates (a workflow job), stdout cut in event lists, `limit` reserved."""

from __future__ import annotations

import json
import time
from collections import Counter

import awx_contract_samples as samples
import httpx
import pytest
from starlette.datastructures import QueryParams
from test_awx_client import BASE, LAUNCH, TOKEN, FakeAWX, reply

from awx_double.listing import filter_items
from awx_double.recorded import STREAMS, load_stream, plan_recorded
from awx_double.timeline import EVENT_DISPLAY, RunOptions
from worker.awx_client import AWXClient, AWXError

# AWX's JobEvent.EVENT_TYPES (awx/main/models/events.py, 24.6)
AWX_EVENT_NAMES = set(EVENT_DISPLAY)


@pytest.fixture
def awx() -> FakeAWX:
    return FakeAWX()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(awx: FakeAWX, sleeps: list[float]):
    with AWXClient(BASE, TOKEN, transport=httpx.MockTransport(awx), sleep=sleeps.append) as awx_client:
        yield awx_client


# --- the recorded streams ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STREAMS)
def test_recorded_streams_name_their_versions_and_ran_in_check_mode(name: str) -> None:
    stream = load_stream(name)
    assert stream["recorded_with"]["ansible-core"] and stream["recorded_with"]["ansible-runner"]
    assert stream["recorded_with"]["mode"].startswith("check")
    events = stream["events"]
    assert "check_mode=True" in " ".join(e.get("stdout") or "" for e in events)
    assert {e["event"] for e in events} <= AWX_EVENT_NAMES
    assert [e["counter"] for e in events] == list(range(1, len(events) + 1))


def test_a_real_run_has_one_runner_on_start_per_host_per_task_and_item_events() -> None:
    events = load_stream("success")["events"]
    names = Counter(e["event"] for e in events)
    tasks = names["playbook_on_task_start"]
    assert names["runner_on_start"] == 2 * tasks  # two hosts
    assert names["runner_item_on_ok"] > 0 and names["playbook_on_stats"] == 1
    # the hosts' results interleave and finish in either order, as they do for a fleet
    order: dict[str, list[str]] = {}
    for e in events:
        if e["event"] == "runner_on_ok":
            order.setdefault(e["event_data"]["task"], []).append(e["event_data"]["host"])
    assert {tuple(hosts) for hosts in order.values()} == {("web-01", "web-02"), ("web-02", "web-01")}


def test_the_replay_maps_the_jobs_hosts_onto_the_recorded_ones() -> None:
    plan = plan_recorded(["db-01", "web-01", "web-02"], RunOptions(failed_hosts=frozenset({"db-01"})))
    assert plan.final_status == "failed"
    assert plan.stats["failures"] == {"db-01": 1} and set(plan.stats["ok"]) == {"db-01", "web-01", "web-02"}
    [item] = [e for e in plan.events if e.event == "runner_item_on_failed"]
    assert item.host_name == "db-01" and item.failed and "MiB free on /var" in item.event_data["res"]["msg"]
    assert "[db-01]" in item.stdout
    [task] = [e for e in plan.events if e.event == "runner_on_failed"]
    assert task.event_data["res"]["msg"] == "One or more items failed"
    assert [e.counter for e in plan.events] == list(range(1, len(plan.events) + 1))
    assert all(a.emit_at <= b.emit_at for a, b in zip(plan.events, plan.events[1:], strict=False))
    # real sizes: fact gathering and the apt simulation are tens of kilobytes each
    assert max(len(json.dumps(e.event_data)) for e in plan.events) > 30_000


def test_the_stopped_stream_ends_mid_run_in_error_with_no_stats() -> None:
    plan = plan_recorded(["web-01"], RunOptions(), "stopped")
    assert plan.final_status == "error" and plan.stats == {}
    assert plan.events[-1].event == "runner_on_start"  # stopped while a task had just started


# --- the client ------------------------------------------------------------------------------------------------


def test_cancel_answering_403_for_a_finished_job_means_already_finished(client: AWXClient, awx: FakeAWX) -> None:
    forbidden = getattr(samples, "FORBIDDEN", {"detail": "You do not have permission to perform this action."})
    awx.on("POST", "/api/v2/jobs/5/cancel/", reply(403, forbidden))
    awx.on("GET", "/api/v2/jobs/5/", reply(body=samples.job(5, status="successful")))
    assert client.cancel(5) is False


def test_cancel_answering_403_for_a_running_job_is_still_a_refusal(client: AWXClient, awx: FakeAWX) -> None:
    awx.on("POST", "/api/v2/jobs/5/cancel/", reply(403, {"detail": "You do not have permission."}))
    awx.on("GET", "/api/v2/jobs/5/", reply(body=samples.job(5, status="running")))
    with pytest.raises(AWXError) as caught:
        client.cancel(5)
    assert caught.value.kind == "auth" and caught.value.status_code == 403


def test_302_during_an_upgrade_is_waited_out_like_a_503(client: AWXClient, awx: FakeAWX, sleeps) -> None:
    moved = reply(302, None, {"Location": "/migrations_notran/"})
    awx.on("GET", "/api/v2/jobs/5/", moved, moved, reply(body=samples.job(5)))
    assert client.get_job(5)["id"] == 5
    assert len(sleeps) == 2 and not any(r.url.path == "/migrations_notran/" for r in awx.requests)


def test_endless_302_ends_in_a_retryable_error(client: AWXClient, awx: FakeAWX) -> None:
    awx.on("GET", "/api/v2/jobs/5/", reply(302, None, {"Location": "/migrations_notran/"}))
    with pytest.raises(AWXError) as caught:
        client.get_job(5)
    assert caught.value.retryable and caught.value.status_code == 302 and "upgrade" in str(caught.value)


def test_a_launch_that_starts_a_workflow_job_is_refused_and_the_workflow_canceled(client: AWXClient,
                                                                                  awx: FakeAWX) -> None:
    awx.on("GET", LAUNCH, reply(body=samples.launch_requirements()))
    awx.on("POST", LAUNCH, reply(201, {"workflow_job": 77, "id": 77, "type": "workflow_job", "ignored_fields": {},
                                       "status": "pending"}))
    awx.on("POST", "/api/v2/workflow_jobs/77/cancel/", reply(202))
    with pytest.raises(AWXError) as caught:
        client.launch(7, limit="web-01,web-02", extra_vars={})
    assert caught.value.kind == "refused" and "workflow job 77" in str(caught.value)
    assert len(awx.calls("POST", "/api/v2/workflow_jobs/77/cancel/")) == 1
    assert awx.calls("GET", "/api/v2/jobs/77/") == []


# --- the double behaves like AWX -------------------------------------------------------------------------------


def test_limit_is_a_reserved_query_parameter_not_a_filter() -> None:
    rows = [{"id": 1, "limit": "web-01"}, {"id": 2, "limit": "web-02"}]
    assert filter_items(rows, QueryParams("limit=web-01"), {"id": int, "limit": str}) == rows


@pytest.mark.integration
def test_the_double_replays_a_recorded_stream_with_awx_shapes(awx_double) -> None:
    awx_double.scenario(recorded_events="auto", failed_hosts=["web-02"])
    with AWXClient(awx_double.url, awx_double.token) as client:
        template = int(client.find_job_template("Patch Linux")["id"])
        job_id = client.launch(template, limit="web-01,web-02", extra_vars={"patchpilot_request_id": "rec"},
                               job_type="check").job_id
        deadline = time.monotonic() + 20
        while not client.get_job(job_id).get("event_processing_finished"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        events = client.job_events(job_id, 0)
        raw = httpx.get(f"{awx_double.url}jobs/{job_id}/job_events/", params={"page_size": 200},
                        headers={"Authorization": f"Bearer {awx_double.token}"}).json()["results"]
        # 403 for a cancel of a finished job, as AWX answers a non-superuser; the client reads it as finished
        answer = httpx.post(f"{awx_double.url}jobs/{job_id}/cancel/",
                            headers={"Authorization": f"Bearer {awx_double.token}"})
        assert answer.status_code == 403
        assert client.cancel(job_id) is False
        assert client.get_job(job_id)["status"] == "failed"
    names = Counter(e["event"] for e in events)
    assert names["runner_on_start"] > 0 and names["runner_item_on_failed"] == 1
    assert all(e["event_display"] for e in events)
    # lists cut stdout to EVENT_STDOUT_MAX_BYTES_DISPLAY, an ellipsis and the ANSI resets it cut off ...
    cut = [e["stdout"].replace("\x1b[0m", "") for e in raw if len(e["stdout"]) > 1000]
    assert cut and all(text.endswith("\u2026") and len(text) <= 1024 for text in cut)
    assert max(len(e["stdout"]) for e in events) > 1024  # ... unless no_truncate, which the client asks for


@pytest.mark.integration
def test_the_double_answers_302_while_upgrading(awx_double) -> None:
    awx_double.scenario(upgrading_requests=2)
    answer = httpx.get(f"{awx_double.url}jobs/", headers={"Authorization": f"Bearer {awx_double.token}"})
    assert answer.status_code == 302 and answer.headers["location"] == "/migrations_notran/"
    with AWXClient(awx_double.url, awx_double.token) as client:
        assert "results" in client._get("jobs/")  # the second 302 waited out


@pytest.mark.integration
def test_a_sliced_template_is_refused_before_launch_and_its_workflow_job_canceled_if_launched(awx_double) -> None:
    from worker.awx_client import AWXLaunchRefused

    awx_double.scenario(sliced_templates=["Patch Linux"])
    with AWXClient(awx_double.url, awx_double.token) as client:
        template = int(client.find_job_template("Patch Linux")["id"])
        with pytest.raises(AWXLaunchRefused, match="sliced"):
            client.launch(template, limit="web-01,web-02", extra_vars={})
        assert awx_double.stats()["launches"] == 0
        # slicing switched on between the check and the POST: AWX answers a workflow job, canceled at once
        with pytest.raises(AWXError, match="workflow job") as caught:
            client.launch(template, limit="web-01,web-02", extra_vars={}, prompts_checked=True)
    assert caught.value.kind == "refused" and "it was cancelled" in str(caught.value)
