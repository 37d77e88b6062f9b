"""The AWX double over real HTTP, driven through the production AWX client."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from awx_double.app import create_app
from worker.awx_client import AWXClient, AWXError, AWXLaunchRefused

pytestmark = pytest.mark.integration  # the double runs as a process on a local port

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "fixtures" / "demo-inventory.yml"
PATCH_GROUPS = ROOT / "fixtures" / "patch-groups.yml"
TOKEN = "double-test-token"
SPEED = 25.0  # a whole job in ~1.2 s
PLAYS = ["Pre-checks", "Patching", "Reboot", "Post-checks"]
TEMPLATE_ID = 7


class ManualClock:
    """A clock the test moves by hand, for moments that real time would only hit by luck."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Double:
    root: str  # http://127.0.0.1:port
    base_path: str

    @property
    def api(self) -> str:
        return self.root + self.base_path

    def control(self, method: str, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.request(method, f"{self.root}/_double/{name}", json=body)
        response.raise_for_status()
        return response.json()

    def scenario(self, **knobs: Any) -> dict[str, Any]:
        return self.control("POST", "scenario", knobs)

    def stats(self) -> dict[str, Any]:
        return self.control("GET", "stats")

    def client(self, token: str = TOKEN, **options: Any) -> AWXClient:
        options.setdefault("max_wait_seconds", 0.05)
        options.setdefault("timeout", 5.0)
        return AWXClient(self.api, token, **options)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _serve(app: Any, base_path: str) -> Iterator[Double]:
    """Run the app with uvicorn on a free port in a background thread."""
    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the double did not start"
        time.sleep(0.01)
    yield Double(root=f"http://127.0.0.1:{sock.getsockname()[1]}", base_path=base_path)
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture(scope="module")
def live_double() -> Iterator[Double]:
    yield from _serve(create_app(INVENTORY, PATCH_GROUPS, TOKEN, SPEED, "/api/v2/"), "/api/v2/")


@pytest.fixture
def double(live_double: Double) -> Double:
    live_double.control("POST", "reset")
    return live_double


@pytest.fixture(scope="module")
def manual_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def paused_double(manual_clock: ManualClock) -> Iterator[Double]:
    """Speed 1.0 on a hand-moved clock, behind the AAP gateway's base path."""
    app = create_app(INVENTORY, PATCH_GROUPS, TOKEN, 1.0, "/api/controller/v2/", clock=manual_clock)
    yield from _serve(app, "/api/controller/v2/")


def request_vars(**extra: Any) -> dict[str, Any]:
    return {"patchpilot_request_id": str(uuid.uuid4()), "update_scope": "security", **extra}


def follow(client: AWXClient, job_id: int, timeout: float = 15.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Follow a job as the worker does: advance over gap-free counters until event processing is finished."""
    seen: dict[int, dict[str, Any]] = {}
    cursor = 0
    deadline = time.monotonic() + timeout
    while True:
        job = client.get_job(job_id)
        for event in client.job_events(job_id, cursor):
            seen[event["counter"]] = event
        while cursor + 1 in seen:
            cursor += 1
        if job["event_processing_finished"]:
            assert cursor == len(seen), "events missing after event processing finished"
            return job, [seen[c] for c in sorted(seen)]
        assert time.monotonic() < deadline, f"job {job_id} did not finish: {job['status']}"
        time.sleep(0.05)


def launch(client: AWXClient, limit: str, **kwargs: Any) -> int:
    template = client.find_job_template("Patch Linux")
    kwargs.setdefault("extra_vars", request_vars())
    return client.launch(template["id"], limit=limit, **kwargs).job_id


def runner_events(events: list[dict[str, Any]], host: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["event"].startswith("runner_on_") and host in (None, e["host_name"])]


# --- a whole job -----------------------------------------------------------------------------------

def test_whole_job_runs_four_plays_and_reports_every_host(double: Double) -> None:
    hosts = ["db-01", "web-01", "web-02"]
    extra_vars = request_vars()
    with double.client() as client:
        job_id = launch(client, ",".join(hosts), extra_vars=extra_vars)
        job, events = follow(client, job_id)
        summaries = client.host_summaries(job_id)
        stdout = httpx.get(f"{double.api}jobs/{job_id}/stdout/?format=txt",
                           headers={"Authorization": f"Bearer {TOKEN}"}).text

    assert job["status"] == "successful" and job["failed"] is False
    assert job["limit"] == "db-01,web-01,web-02" and job["started"] and job["finished"]
    assert [e["counter"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["event"] == "playbook_on_start" and events[-1]["event"] == "playbook_on_stats"
    assert [e["play"] for e in events if e["event"] == "playbook_on_play_start"] == PLAYS
    stats = events[-1]["event_data"]
    assert sorted(stats["ok"]) == hosts and stats["dark"] == {} and stats["failures"] == {}
    assert all(stats["changed"][h] >= 1 for h in hosts)
    assert sorted(s["host_name"] for s in summaries) == hosts
    assert not any(s["failed"] for s in summaries)
    assert "PLAY RECAP" in stdout and "TASK [Gathering Facts]" in stdout
    stats_now = double.stats()
    assert stats_now["launches"] == 1
    assert stats_now["launches_by_request"] == {extra_vars["patchpilot_request_id"]: 1}
    assert stats_now["jobs"] == [job_id]


def test_status_moves_through_active_states(paused_double: Double, manual_clock: ManualClock) -> None:
    paused_double.control("POST", "reset")
    with paused_double.client() as client:
        job_id = launch(client, "web-01")
        launched_at = manual_clock.now
        statuses = {}
        for moment in (0.0, 1.0, 5.0, 28.5, 31.0):
            manual_clock.now = launched_at + moment
            job = client.get_job(job_id)
            statuses[moment] = (job["status"], job["event_processing_finished"])
    assert statuses == {0.0: ("pending", False), 1.0: ("waiting", False), 5.0: ("running", False),
                        28.5: ("successful", False), 31.0: ("successful", True)}


def test_unreachable_and_failing_hosts_fail_the_job(double: Double) -> None:
    double.scenario(unreachable_hosts=["web-02"], failed_hosts=["db-01"])
    with double.client() as client:
        job_id = launch(client, "db-01,web-01,web-02")
        job, events = follow(client, job_id)
        summaries = {s["host_name"]: s for s in client.host_summaries(job_id)}

    assert job["status"] == "failed" and job["failed"] is True
    assert [e["event"] for e in runner_events(events, "web-02")] == ["runner_on_unreachable"]
    db_events = runner_events(events, "db-01")
    assert db_events[-1]["event"] == "runner_on_failed" and db_events[-1]["play"] == "Patching"
    assert runner_events(events, "web-01")[-1]["play"] == "Post-checks"
    stats = events[-1]["event_data"]
    assert stats["dark"] == {"web-02": 1} and stats["failures"] == {"db-01": 1}
    assert summaries["web-02"]["dark"] == 1 and summaries["db-01"]["failures"] == 1
    assert [h for h, s in sorted(summaries.items()) if s["failed"]] == ["db-01", "web-02"]


def test_check_mode_changes_nothing_and_skips_the_reboot(double: Double) -> None:
    with double.client() as client:
        job_id = launch(client, "web-01,web-02", job_type="check", extra_vars=request_vars(reboot_policy="always"))
        job, events = follow(client, job_id)
    assert job["job_type"] == "check" and job["status"] == "successful"
    assert not any(e["changed"] for e in events)
    assert {e["event"] for e in runner_events(events) if e["play"] == "Reboot"} == {"runner_on_skipped"}


@pytest.mark.parametrize(("policy", "reboots"), [("never", 0), ("always", 2)])
def test_reboot_policy_drives_the_reboot_play(double: Double, policy: str, reboots: int) -> None:
    with double.client() as client:
        job_id = launch(client, "web-01,web-02", extra_vars=request_vars(reboot_policy=policy))
        _, events = follow(client, job_id)
    rebooted = [e for e in runner_events(events) if e["task"] == "Reboot the host" and e["changed"]]
    assert len(rebooted) == reboots


# --- cancel and launch safety ----------------------------------------------------------------------

def test_cancel_answers_202_then_403_or_405_once_finished(double: Double) -> None:
    """AWX answers a cancel of a finished job 403 (JobAccess.can_cancel is false) unless the token is a
    superuser's (405); the client reads both as "already finished"."""
    with double.client() as client:
        job_id = launch(client, "web-01,web-02")
        assert client.cancel(job_id) is True
        job, events = follow(client, job_id)
        assert job["status"] == "canceled"
        assert client.cancel(job_id) is False
        cancel_url = f"{double.api}jobs/{job_id}/cancel/"
        assert httpx.post(cancel_url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 403
        double.scenario(cancel_finished_status=405)
        assert httpx.post(cancel_url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405
        assert client.cancel(job_id) is False
    assert not any(e["event"] == "playbook_on_stats" for e in events)
    can_cancel = httpx.get(f"{double.api}jobs/{job_id}/cancel/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert can_cancel.json() == {"can_cancel": False}


def test_template_not_prompting_for_limit_is_refused_before_launch(double: Double) -> None:
    double.scenario(template_asks_limit=False)
    with double.client() as client, pytest.raises(AWXLaunchRefused, match="limit"):
        launch(client, "web-01")
    assert double.stats()["launches"] == 0


def test_ignored_limit_is_cancelled_at_once(double: Double, monkeypatch: pytest.MonkeyPatch) -> None:
    """The template is edited between the pre-check and the launch: AWX drops the limit and says so."""
    with double.client() as client:
        stale_requirements = client.launch_requirements(TEMPLATE_ID)
        double.scenario(template_asks_limit=False)
        monkeypatch.setattr(client, "launch_requirements", lambda template_id: stale_requirements)
        with pytest.raises(AWXError) as caught:
            client.launch(TEMPLATE_ID, limit="web-01", extra_vars=request_vars())
        assert caught.value.kind == "ignored_fields" and "limit" in str(caught.value)
        job, _ = follow(client, caught.value.job_id)
    assert job["limit"] == "" and job["status"] == "canceled"  # it had been launched on the whole inventory
    assert double.stats()["launches"] == 1


def test_lost_launch_answer_is_found_again_without_a_second_launch(double: Double) -> None:
    double.scenario(launch_hang_seconds=1.0)
    extra_vars = request_vars()
    before = datetime.now(UTC)
    with double.client(timeout=0.3) as client:
        with pytest.raises(AWXError) as caught:
            client.launch(TEMPLATE_ID, limit="web-01", extra_vars=extra_vars)
        assert (caught.value.kind, caught.value.retryable) == ("timeout", False)
        found = client.find_job_by_request_id(TEMPLATE_ID, extra_vars["patchpilot_request_id"], before)
        assert client.find_job_by_request_id(TEMPLATE_ID, "no-such-request", before) is None
    stats = double.stats()
    assert stats["jobs"] == [found]
    assert stats["launches_by_request"] == {extra_vars["patchpilot_request_id"]: 1}


def test_read_only_token_cannot_launch(double: Double) -> None:
    double.scenario(read_only_token="read-only")
    with double.client(token="read-only") as client:
        assert client.find_job_template("Patch Linux")["id"] == TEMPLATE_ID
        with pytest.raises(AWXError) as caught:
            client.launch(TEMPLATE_ID, limit="web-01", extra_vars=request_vars())
    assert (caught.value.kind, caught.value.status_code) == ("auth", 403)
    assert double.stats()["launches"] == 0


# --- gateway trouble and auth ----------------------------------------------------------------------

def test_503_burst_is_survived_by_client_retries(double: Double) -> None:
    double.scenario(server_errors=3)
    with double.client() as client:
        assert client.find_job_template("Patch Linux")["id"] == TEMPLATE_ID
    assert double.stats()["requests"] == 4


def test_endless_503_gives_a_readable_retryable_error(double: Double) -> None:
    double.scenario(server_errors=10)
    with (
        double.client(retry_attempts=3) as client,
        pytest.raises(AWXError, match="after 3 attempts: 503 Service Unavailable") as caught,
    ):
        client.find_job_template("Patch Linux")
    assert caught.value.retryable is True


def test_rate_limit_retry_after_is_honoured(double: Double) -> None:
    double.scenario(rate_limit={"count": 2, "retry_after": 3})
    sleeps: list[float] = []
    with double.client(max_wait_seconds=30, sleep=sleeps.append) as client:
        assert client.find_job_template("Patch Linux")["id"] == TEMPLATE_ID
    assert sleeps == [3.0, 3.0]


def test_auth_failures(double: Double) -> None:
    with (
        double.client(token="wrong-token") as client,
        pytest.raises(AWXError, match=r"rejected the token \(401\): Invalid token") as caught,
    ):
        client.find_job_template("Patch Linux")
    assert caught.value.kind == "auth" and "wrong-token" not in str(caught.value)
    anonymous = httpx.get(f"{double.api}job_templates/")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"detail": "Authentication credentials were not provided."}
    assert double.stats()["requests"] == 2


# --- listing contract ------------------------------------------------------------------------------

def test_bad_query_parameters_answer_4xx_not_500(double: Double) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    api = double.api
    with double.client() as client:
        job_id = launch(client, "web-01")
    cases = {
        f"jobs/{job_id}/job_events/?counter__gt=abc": 400,
        f"jobs/{job_id}/job_events/?page_size=0": 400,
        f"jobs/{job_id}/job_events/?order_by=nonsense": 400,
        f"job_templates/{TEMPLATE_ID}/jobs/?created__gte=yesterday": 400,
        f"job_templates/{TEMPLATE_ID}/jobs/?extra_vars__contains=x": 403,
        "jobs/?unknown_field=1": 400,
        "jobs/?page=99": 404,
        "jobs/abc/": 404,
        "jobs/999999/": 404,
    }
    answers = {path: httpx.get(api + path, headers=headers).status_code for path in cases}
    assert answers == cases
    bad_launch = httpx.post(f"{api}job_templates/{TEMPLATE_ID}/launch/", headers=headers,
                            json={"limit": 5, "job_type": "destroy"})
    assert bad_launch.status_code == 400
    assert set(bad_launch.json()) == {"limit", "job_type"}


def test_inventory_endpoints(double: Double) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    api = double.api
    hosts = httpx.get(f"{api}hosts/", params={"name": "web-01", "inventory": 1}, headers=headers).json()
    assert hosts["count"] == 1 and hosts["results"][0]["name"] == "web-01"
    inventories = httpx.get(f"{api}inventories/", headers=headers).json()
    assert [i["name"] for i in inventories["results"]] == ["Demo fleet"]
    groups = httpx.get(f"{api}inventories/1/groups/", params={"name": "web"}, headers=headers).json()
    members = httpx.get(f"{api}groups/{groups['results'][0]['id']}/all_hosts/", headers=headers).json()
    assert members["count"] == 7
    all_hosts = httpx.get(f"{api}inventories/1/hosts/", params={"page_size": 10}, headers=headers).json()
    assert all_hosts["count"] == 20 and all_hosts["next"].startswith("/api/v2/inventories/1/hosts/?")


def test_duplicate_pages_are_collapsed_by_the_client(double: Double) -> None:
    double.scenario(duplicate_pages=True)
    with double.client() as client:
        job_id = launch(client, "prod")
        _, events = follow(client, job_id)
    assert [e["counter"] for e in events] == list(range(1, len(events) + 1))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url: str | None = f"{double.api}jobs/{job_id}/job_events/?page_size=50"
    rows = 0
    while url:
        page = httpx.get(url, headers=headers).json()
        rows += len(page["results"])
        url = double.root + page["next"] if page["next"] else None
    assert rows > len(events)


# --- time-controlled behaviour ---------------------------------------------------------------------

def test_events_become_visible_in_batches_and_out_of_order(paused_double: Double,
                                                           manual_clock: ManualClock) -> None:
    paused_double.control("POST", "reset")
    with paused_double.client() as client:
        job_id = launch(client, "prod,staging,dev")  # enough events for two pages of 200
        launched_at = manual_clock.now
        gaps = 0
        for step in range(1, 31 * 4):
            manual_clock.now = launched_at + step / 4
            counters = [e["counter"] for e in client.job_events(job_id, 0)]
            gaps += counters != list(range(1, len(counters) + 1))
        job = client.get_job(job_id)
        events = client.job_events(job_id, 0)
    assert gaps > 0
    assert job["status"] == "successful" and job["event_processing_finished"] is True
    assert len(events) > 200 and [e["counter"] for e in events] == list(range(1, len(events) + 1))


def test_slow_events_trail_the_status(paused_double: Double, manual_clock: ManualClock) -> None:
    paused_double.control("POST", "reset")
    paused_double.scenario(slow_events=True)
    with paused_double.client() as client:
        job_id = launch(client, "web-01")
        launched_at = manual_clock.now
        manual_clock.now = launched_at + 29
        finished = client.get_job(job_id)
        trailing = client.job_events(job_id, 0)
        manual_clock.now = launched_at + 60
        processed = client.get_job(job_id)
        events = client.job_events(job_id, 0)
    assert finished["status"] == "successful" and finished["event_processing_finished"] is False
    assert not any(e["event"] == "playbook_on_stats" for e in trailing)
    assert processed["event_processing_finished"] is True and events[-1]["event"] == "playbook_on_stats"


# --- the command line ------------------------------------------------------------------------------

def test_command_line_starts_a_double_with_scenario_flags() -> None:
    sock = _free_socket()
    port = sock.getsockname()[1]
    sock.close()
    command = [sys.executable, "-m", "awx_double", "--port", str(port), "--inventory", str(INVENTORY),
               "--patch-groups", str(PATCH_GROUPS), "--token", TOKEN, "--speed", "50",
               "--base-path", "/api/controller/v2/", "--failed-hosts", "web-02", "--no-template-asks-limit",
               "--recorded-events", "auto", "--cancel-finished-status", "405"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, process.stderr.read().decode()
            try:
                scenario = httpx.get(f"http://127.0.0.1:{port}/_double/scenario").json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "python -m awx_double did not start"
                time.sleep(0.1)
        assert scenario["failed_hosts"] == ["web-02"] and scenario["template_asks_limit"] is False
        assert scenario["recorded_events"] == "auto" and scenario["cancel_finished_status"] == 405
        with AWXClient(f"http://127.0.0.1:{port}/api/controller/v2/", TOKEN) as client:
            assert client.launch_requirements(TEMPLATE_ID)["ask_limit_on_launch"] is False
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_job_seconds_stretches_the_run(paused_double: Double, manual_clock: ManualClock) -> None:
    paused_double.control("POST", "reset")
    paused_double.scenario(job_seconds=180)
    with paused_double.client() as client:
        job_id = launch(client, "web-01")
        launched_at = manual_clock.now
        manual_clock.now = launched_at + 90
        halfway = client.get_job(job_id)
        some = client.job_events(job_id, 0)
        manual_clock.now = launched_at + 200
        done = client.get_job(job_id)
        events = client.job_events(job_id, 0)
    paused_double.control("POST", "reset")
    assert halfway["status"] == "running" and 0 < len(some) < len(events)
    assert done["status"] == "successful" and done["event_processing_finished"] is True
    last = datetime.fromisoformat(events[-1]["created"].replace("Z", "+00:00")).timestamp()
    assert 170 < last - launched_at < 180
