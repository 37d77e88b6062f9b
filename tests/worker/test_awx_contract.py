"""The AWX contract (/work/shared/specs/awx-contract.md as docs/awx-contract.md describes it), as assertions that run
against the AWX double and, when AWX_CONTRACT_URL and AWX_CONTRACT_TOKEN are set, against a real AWX / Automation
Controller: the manual check that the double still behaves like the real thing.

    AWX_CONTRACT_URL=https://awx.example.com/api/v2/ AWX_CONTRACT_TOKEN=... \\
    AWX_CONTRACT_TEMPLATE="Patch Linux" AWX_CONTRACT_LIMIT=some-test-host \\
        .venv/bin/python -m pytest tests/worker/test_awx_contract.py -k real

Against a real controller these read templates and jobs, and (only with AWX_CONTRACT_LIMIT) launch ONE job of the
template in check mode (job_type "check": ansible-playbook --check) limited to that one host, follow it, and try to
cancel it once it has finished. The template must prompt for limit, variables and job type (as patchpilot needs).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from awx_double.timeline import EVENT_DISPLAY
from worker.awx_client import AWXClient

AWX_EVENT_NAMES = set(EVENT_DISPLAY)  # AWX's JobEvent.EVENT_TYPES
RESULTS = {"runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable"}


@dataclass
class Target:
    name: str
    url: str
    token: str
    template: str
    limit: str | None  # a host to launch a check-mode run on; None: no launch

    def client(self) -> AWXClient:
        return AWXClient(self.url, self.token, verify=os.environ.get("AWX_CONTRACT_VERIFY_TLS", "true") != "false")

    def get(self, path: str, **params) -> httpx.Response:
        with httpx.Client(verify=os.environ.get("AWX_CONTRACT_VERIFY_TLS", "true") != "false", timeout=30) as http:
            return http.get(self.url + path, params=params, headers={"Authorization": f"Bearer {self.token}"})

    def post(self, path: str) -> httpx.Response:
        with httpx.Client(verify=os.environ.get("AWX_CONTRACT_VERIFY_TLS", "true") != "false", timeout=30) as http:
            return http.post(self.url + path, headers={"Authorization": f"Bearer {self.token}"})


@pytest.fixture(params=["double", "real"])
def target(request) -> Iterator[Target]:
    if request.param == "real":
        url, token = os.environ.get("AWX_CONTRACT_URL"), os.environ.get("AWX_CONTRACT_TOKEN")
        if not (url and token):
            pytest.skip("set AWX_CONTRACT_URL and AWX_CONTRACT_TOKEN to run the contract against a real AWX")
        yield Target("real", url if url.endswith("/") else url + "/", token,
                     os.environ.get("AWX_CONTRACT_TEMPLATE", "Patch Linux"), os.environ.get("AWX_CONTRACT_LIMIT"))
        return
    double = request.getfixturevalue("awx_double")
    double.scenario(recorded_events="auto")  # the recorded real event streams
    yield Target("double", double.url, double.token, "Patch Linux", "web-01")


@pytest.fixture
def finished_job(target: Target) -> Iterator[tuple[int, str]]:
    """(job id, request id) of one check-mode run followed until its events are all processed."""
    if not target.limit:
        pytest.skip("set AWX_CONTRACT_LIMIT to a host name to launch a check-mode run")
    request_id = "contract-" + uuid.uuid4().hex[:12]
    with target.client() as client:
        template_id = int(client.find_job_template(target.template)["id"])
        job_id = client.launch(template_id, limit=target.limit, job_type="check",
                               extra_vars={"patchpilot_request_id": request_id}).job_id
        deadline = time.monotonic() + float(os.environ.get("AWX_CONTRACT_TIMEOUT", "900"))
        while True:
            job = client.get_job(job_id)
            if job["status"] in ("successful", "failed", "error", "canceled") and job["event_processing_finished"]:
                break
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
            time.sleep(2.5)
    yield job_id, request_id


@pytest.mark.integration
def test_templates_name_their_organization_and_prompts(target: Target) -> None:
    with target.client() as client:
        template = client.find_job_template(target.template)
        needs = client.launch_requirements(int(template["id"]))
    assert isinstance(template["organization"], int)
    assert template["summary_fields"]["organization"]["name"]
    for flag in ("ask_limit_on_launch", "ask_variables_on_launch", "ask_job_type_on_launch"):
        assert isinstance(needs[flag], bool)
    assert int(needs["defaults"].get("job_slice_count", 1)) >= 1


@pytest.mark.integration
def test_limit_is_reserved_and_page_size_capped(target: Target) -> None:
    everything = target.get("jobs/", page_size=1).json()["count"]
    assert target.get("jobs/", page_size=1, limit="no-such-host-" + uuid.uuid4().hex).json()["count"] == everything
    big = target.get("jobs/", page_size=500)
    assert big.status_code == 200 and len(big.json()["results"]) <= 200


@pytest.mark.integration
def test_a_check_mode_run_sends_awx_events(target: Target, finished_job) -> None:
    job_id, _ = finished_job
    with target.client() as client:
        events = client.job_events(job_id, 0)
    counters = [e["counter"] for e in events]
    assert counters == sorted(set(counters)) and counters
    assert {e["event"] for e in events} <= AWX_EVENT_NAMES
    names = [e["event"] for e in events]
    assert "runner_on_start" in names and "playbook_on_stats" in names
    started = set()
    for e in events:
        key = (e["host_name"], e["event_data"].get("task_uuid") or e["task"])
        if e["event"] == "runner_on_start":
            started.add(key)
        elif e["event"] in RESULTS:
            assert key in started, f"{e['event']} of {key} without its runner_on_start"
    # lists cut stdout at 1024 characters (an ellipsis and the ANSI resets it cut off) unless no_truncate
    listed = target.get(f"jobs/{job_id}/job_events/", page_size=200, order_by="counter").json()["results"]
    assert all(len(e["stdout"].replace("\x1b[0m", "")) <= 1024 for e in listed)
    whole = {e["counter"]: e["stdout"] for e in events}
    for e in listed:
        text = e["stdout"]
        while text.endswith("\x1b[0m") and not whole[e["counter"]].endswith(text):
            text = text[:-len("\x1b[0m")]
        assert whole[e["counter"]].startswith(text.removesuffix("\u2026"))


@pytest.mark.integration
def test_job_rows_carry_extra_vars_but_not_event_processing_finished(target: Target, finished_job) -> None:
    job_id, request_id = finished_job
    with target.client() as client:
        template_id = int(client.find_job_template(target.template)["id"])
        rows = target.get(f"job_templates/{template_id}/jobs/", id=job_id).json()["results"]
        found = client.jobs_for_request(template_id, request_id, datetime.now(UTC).replace(year=2000))
        detail = client.get_job(job_id)
    assert [row["id"] for row in rows] == [job_id]
    assert "extra_vars" in rows[0] and "event_processing_finished" not in rows[0]
    assert [int(job["id"]) for job in found] == [job_id]
    assert detail["event_processing_finished"] is True


@pytest.mark.integration
def test_a_cancel_after_the_end_says_already_finished(target: Target, finished_job) -> None:
    job_id, _ = finished_job
    answer = target.post(f"jobs/{job_id}/cancel/")
    assert answer.status_code in (403, 405)  # 405 for a superuser's token, 403 for anyone else
    with target.client() as client:
        assert client.cancel(job_id) is False
