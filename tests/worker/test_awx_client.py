"""Unit tests of the AWX client against recorded contract shapes (httpx.MockTransport: no sockets)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import awx_contract_samples as samples
import httpx
import pytest
from pydantic import SecretStr

from core.settings import Settings
from worker.awx_client import AWXClient, AWXError, AWXLaunchRefused, LaunchResult

TOKEN = "s3cret-token-value"
BASE = "https://awx.example.com/api/v2/"
LAUNCH = "/api/v2/job_templates/7/launch/"

Reply = dict[str, Any] | Exception | Callable[[httpx.Request], httpx.Response]


def reply(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"status": status, "body": body, "headers": headers or {}}


class FakeAWX:
    """Routes (method, path) to queued replies; the last reply of a queue repeats. Records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(404, json=samples.NOT_FOUND)
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        if callable(item):
            return item(request)
        if item["body"] is None:
            return httpx.Response(item["status"], headers=item["headers"])
        return httpx.Response(item["status"], json=item["body"], headers=item["headers"])


@pytest.fixture
def awx() -> FakeAWX:
    return FakeAWX()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(awx: FakeAWX, sleeps: list[float]) -> AWXClient:
    with AWXClient(BASE, TOKEN, transport=httpx.MockTransport(awx), sleep=sleeps.append) as awx_client:
        yield awx_client


def ready_to_launch(awx: FakeAWX, *, job_id: int = 41, **asks: bool) -> None:
    awx.on("GET", LAUNCH, reply(body=samples.launch_requirements(**asks)))
    awx.on("POST", LAUNCH, reply(201, samples.launched(job_id), {"Location": f"/api/v2/jobs/{job_id}/"}))


# --- launch --------------------------------------------------------------------------------------

def test_launch_sends_limit_vars_and_job_type_once(client: AWXClient, awx: FakeAWX) -> None:
    ready_to_launch(awx)
    result = client.launch(7, limit="web-01,web-02", extra_vars={"patchpilot_request_id": "r1"}, job_type="check")
    assert result == LaunchResult(job_id=41, status="pending", ignored_fields={})
    [post] = awx.calls("POST", LAUNCH)
    assert json.loads(post.content) == {"limit": "web-01,web-02", "extra_vars": {"patchpilot_request_id": "r1"},
                                        "job_type": "check"}
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("asks", "job_type", "field"),
    [({"limit": False}, "run", "limit"), ({"variables": False}, "run", "extra_vars"),
     ({"job_type": False}, "check", "job_type")],
)
def test_launch_refused_when_template_would_ignore_a_field(client: AWXClient, awx: FakeAWX, asks: dict,
                                                           job_type: str, field: str) -> None:
    ready_to_launch(awx, **asks)
    with pytest.raises(AWXLaunchRefused) as caught:
        client.launch(7, limit="web-01", extra_vars={}, job_type=job_type)
    assert caught.value.kind == "refused"
    assert field in str(caught.value)
    assert awx.calls("POST", LAUNCH) == []


def test_run_launch_allowed_when_only_job_type_is_not_prompted(client: AWXClient, awx: FakeAWX) -> None:
    ready_to_launch(awx, job_type=False)
    assert client.launch(7, limit="web-01", extra_vars={}).job_id == 41


@pytest.mark.parametrize("limit", ["", "   "])
def test_empty_limit_refused_before_any_request(client: AWXClient, awx: FakeAWX, limit: str) -> None:
    with pytest.raises(AWXLaunchRefused, match="whole inventory"):
        client.launch(7, limit=limit, extra_vars={})
    assert awx.requests == []


def test_ignored_fields_cancel_the_job_and_fail(client: AWXClient, awx: FakeAWX) -> None:
    awx.on("GET", LAUNCH, reply(body=samples.launch_requirements()))
    awx.on("POST", LAUNCH, reply(201, samples.launched(42, ignored_fields={"limit": "web-01"})))
    awx.on("POST", "/api/v2/jobs/42/cancel/", reply(202))
    with pytest.raises(AWXError) as caught:
        client.launch(7, limit="web-01", extra_vars={})
    assert caught.value.kind == "ignored_fields"
    assert caught.value.job_id == 42
    assert "limit" in str(caught.value) and "cancelled" in str(caught.value)
    assert len(awx.calls("POST", "/api/v2/jobs/42/cancel/")) == 1


@pytest.mark.parametrize(
    ("failure", "kind"),
    [(reply(503, {"detail": "Service unavailable."}), "server"),
     (reply(502), "server"),
     (httpx.ReadTimeout("read timed out"), "timeout"),
     (httpx.ConnectError("connection reset"), "connection")],
)
def test_launch_post_is_never_retried(client: AWXClient, awx: FakeAWX, sleeps: list[float], failure: Reply,
                                      kind: str) -> None:
    awx.on("GET", LAUNCH, reply(body=samples.launch_requirements()))
    awx.on("POST", LAUNCH, failure, reply(201, samples.launched(43)))
    with pytest.raises(AWXError) as caught:
        client.launch(7, limit="web-01", extra_vars={})
    assert caught.value.kind == kind
    assert caught.value.retryable is False
    assert len(awx.calls("POST", LAUNCH)) == 1
    assert sleeps == []


def test_launch_400_reports_the_field_map(client: AWXClient, awx: FakeAWX) -> None:
    awx.on("GET", LAUNCH, reply(body=samples.launch_requirements()))
    awx.on("POST", LAUNCH, reply(400, samples.BAD_LAUNCH))
    with pytest.raises(AWXError, match="limit: Not a valid string") as caught:
        client.launch(7, limit="web-01", extra_vars={})
    assert caught.value.kind == "bad_request"


def test_launch_403_for_a_read_only_token(client: AWXClient, awx: FakeAWX) -> None:
    awx.on("GET", LAUNCH, reply(body=samples.launch_requirements()))
    awx.on("POST", LAUNCH, reply(403, samples.FORBIDDEN))
    with pytest.raises(AWXError) as caught:
        client.launch(7, limit="web-01", extra_vars={})
    assert (caught.value.kind, caught.value.status_code) == ("auth", 403)


# --- retries of reads ----------------------------------------------------------------------------

def test_get_retried_through_a_503_burst(client: AWXClient, awx: FakeAWX, sleeps: list[float]) -> None:
    awx.on("GET", "/api/v2/jobs/5/", reply(503), reply(503), reply(body=samples.job(5)))
    assert client.get_job(5)["status"] == "running"
    assert len(awx.calls("GET", "/api/v2/jobs/5/")) == 3
    assert len(sleeps) == 2 and all(0 <= s <= 30 for s in sleeps)


def test_429_honours_retry_after_capped_by_max_wait(awx: FakeAWX) -> None:
    sleeps: list[float] = []
    awx.on("GET", "/api/v2/jobs/5/", reply(429, {"detail": "slow down"}, {"Retry-After": "7"}),
           reply(429, None, {"Retry-After": "120"}), reply(body=samples.job(5)))
    with AWXClient(BASE, TOKEN, transport=httpx.MockTransport(awx), sleep=sleeps.append,
                   max_wait_seconds=30) as client:
        client.get_job(5)
    assert sleeps == [7.0, 30.0]


def test_get_gives_up_after_the_configured_attempts(awx: FakeAWX, sleeps: list[float]) -> None:
    awx.on("GET", "/api/v2/jobs/5/", reply(503))
    with AWXClient(BASE, TOKEN, transport=httpx.MockTransport(awx), sleep=sleeps.append,
                   retry_attempts=5) as client, pytest.raises(AWXError) as caught:
        client.get_job(5)
    assert caught.value.retryable is True
    assert caught.value.kind == "server" and caught.value.status_code == 503
    assert "after 5 attempts: 503 Service Unavailable" in str(caught.value)
    assert len(awx.calls("GET", "/api/v2/jobs/5/")) == 5


def test_read_timeouts_are_retried_then_reported(client: AWXClient, awx: FakeAWX) -> None:
    awx.on("GET", "/api/v2/jobs/5/", httpx.ReadTimeout("slow"))
    with pytest.raises(AWXError) as caught:
        client.get_job(5)
    assert (caught.value.kind, caught.value.retryable) == ("timeout", True)
    assert len(awx.calls("GET", "/api/v2/jobs/5/")) == 5


@pytest.mark.parametrize("body", [samples.INVALID_TOKEN, samples.UNAUTHORIZED])
def test_401_is_not_retried(client: AWXClient, awx: FakeAWX, sleeps: list[float], body: dict) -> None:
    awx.on("GET", "/api/v2/jobs/5/", reply(401, body))
    with pytest.raises(AWXError) as caught:
        client.get_job(5)
    assert caught.value.kind == "auth" and caught.value.retryable is False
    assert str(caught.value).startswith("AWX rejected the token (401): ")
    assert len(awx.requests) == 1 and sleeps == []


def test_404_is_not_found(client: AWXClient, awx: FakeAWX) -> None:
    with pytest.raises(AWXError) as caught:
        client.get_job(999)
    assert (caught.value.kind, caught.value.status_code) == ("not_found", 404)


# --- templates, cancel, pages ----------------------------------------------------------------------

def test_find_job_template_by_exact_name(client: AWXClient, awx: FakeAWX) -> None:
    awx.on("GET", "/api/v2/job_templates/", reply(body=samples.page([samples.JOB_TEMPLATE])))
    assert client.find_job_template("Patch Linux")["id"] == 7
    assert awx.requests[0].url.params["name"] == "Patch Linux"
    with pytest.raises(AWXError, match="no job template named 'Patch Windows'") as caught:
        client.find_job_template("Patch Windows")
    assert caught.value.kind == "not_found"


def test_cancel_202_then_405(client: AWXClient, awx: FakeAWX) -> None:
    awx.on("POST", "/api/v2/jobs/5/cancel/", reply(503), reply(202), reply(405, samples.METHOD_NOT_ALLOWED))
    assert client.cancel(5) is True  # the 503 was retried: cancel is idempotent
    assert client.cancel(5) is False
    assert len(awx.calls("POST", "/api/v2/jobs/5/cancel/")) == 3


@pytest.mark.parametrize("base", ["https://awx.example.com/api/v2/", "https://aap.example.com/api/controller/v2"])
def test_job_events_follow_next_links_and_drop_repeats(awx: FakeAWX, base: str) -> None:
    prefix = httpx.URL(base if base.endswith("/") else base + "/").path
    events_path = f"{prefix}jobs/5/job_events/"
    second = f"{events_path}?counter__gt=3&order_by=counter&page_size=200&page=2"
    awx.on("GET", events_path,
           reply(body=samples.page([samples.event(4), samples.event(5), samples.event(7)], next_link=second,
                                   count=6)),
           reply(body=samples.page([samples.event(7), samples.event(8)], count=6)))
    with AWXClient(base, TOKEN, transport=httpx.MockTransport(awx)) as client:
        events = client.job_events(5, after_counter=3)
    assert [e["counter"] for e in events] == [4, 5, 7, 8]
    first, follow = awx.requests
    assert dict(first.url.params) == {"counter__gt": "3", "order_by": "counter", "page_size": "200",
                                      "no_truncate": "1"}
    assert str(follow.url) == f"https://{httpx.URL(base).host}{second}"


def test_host_summaries(client: AWXClient, awx: FakeAWX) -> None:
    rows = [samples.host_summary("web-01"), samples.host_summary("web-02", dark=1)]
    awx.on("GET", "/api/v2/jobs/5/job_host_summaries/", reply(body=samples.page(rows)))
    summaries = client.host_summaries(5)
    assert [(s["host_name"], s["failed"]) for s in summaries] == [("web-01", False), ("web-02", True)]


def test_jobs_for_request_come_from_one_list_request(client: AWXClient, awx: FakeAWX) -> None:
    rows = [samples.job_list_item(13, request_id="req-1"), samples.job_list_item(12, request_id="other"),
            samples.job_list_item(11, request_id="req-1", status="pending")]
    awx.on("GET", "/api/v2/job_templates/7/jobs/", reply(body=samples.page(rows)))
    after = datetime(2025, 3, 1, 10, 0, 30, tzinfo=UTC)
    assert [job["id"] for job in client.jobs_for_request(7, "req-1", after)] == [11, 13]  # oldest first
    assert client.find_job_by_request_id(7, "req-1", after) == 11
    assert client.jobs_for_request(7, "req-2", after) == []
    listing = awx.calls("GET", "/api/v2/job_templates/7/jobs/")[0]
    assert listing.url.params["created__gte"] == "2025-03-01T09:59:30Z"  # a minute earlier, for clock skew
    assert listing.url.params["order_by"] == "id"
    assert not awx.calls("GET", "/api/v2/jobs/11/")  # list rows carry extra_vars: no detail read
    assert not any("extra_vars" in str(r.url) for r in awx.requests)  # filtering on it answers 403


def test_find_job_by_request_id_reads_the_detail_of_rows_without_extra_vars(client: AWXClient,
                                                                           awx: FakeAWX) -> None:
    awx.on("GET", "/api/v2/job_templates/7/jobs/",
           reply(body=samples.page([samples.job_list_item(12, with_extra_vars=False),
                                    samples.job_list_item(11, with_extra_vars=False)])))
    awx.on("GET", "/api/v2/jobs/12/", reply(body=samples.job(12, request_id="other")))
    awx.on("GET", "/api/v2/jobs/11/", reply(body=samples.job(11, request_id="req-1")))
    after = datetime(2025, 3, 1, 10, 0, 30, tzinfo=UTC)
    assert client.find_job_by_request_id(7, "req-1", after) == 11
    assert client.find_job_by_request_id(7, "req-2", after) is None
    assert not any("extra_vars" in str(r.url) for r in awx.requests)


def test_waits_count_the_backoff_sleeps_of_this_thread(client: AWXClient, awx: FakeAWX,
                                                       sleeps: list[float]) -> None:
    awx.on("GET", "/api/v2/jobs/5/", reply(429, {"detail": "slow down"}, headers={"Retry-After": "25"}),
           reply(body=samples.job(5)))
    before = client.waits()
    client.get_job(5)
    assert client.waits() == before + 1 and sleeps == [25.0]
    client.get_job(5)
    assert client.waits() == before + 1


# --- secrets --------------------------------------------------------------------------------------

def test_token_never_in_errors_reprs_or_logs(client: AWXClient, awx: FakeAWX,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="patchpilot.awx")
    awx.on("GET", "/api/v2/jobs/5/", reply(503), reply(401, {"detail": f"Bad token {TOKEN}"}))
    with pytest.raises(AWXError) as caught:
        client.get_job(5)
    assert "***" in str(caught.value)
    for text in (str(caught.value), repr(caught.value), repr(client), caplog.text):
        assert TOKEN not in text


def test_from_settings_uses_the_awx_settings() -> None:
    settings = Settings(awx_url="https://aap.example.com/api/controller/v2", awx_token=SecretStr(TOKEN),
                        awx_timeout_seconds=3.0, awx_retry_attempts=2)
    with AWXClient.from_settings(settings) as client:
        assert client.base_url == "https://aap.example.com/api/controller/v2/"
        assert client._attempts == 2
    with pytest.raises(RuntimeError, match="AWX_URL"):
        AWXClient.from_settings(Settings(awx_url=None, awx_token=None))
