"""Fault injection on real processes: a uvicorn API, Celery workers, Redis, PostgreSQL and the AWX double.

Each test asserts the outcome from the database (through the API) and from the double's own launch counter.
The module runs its own Redis (and, for the restart test, its own PostgreSQL) so it can stop them, and so its
queues never meet the shared test worker's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import bearer, ensure_test_tokens

from patchpilot.embedded import EmbeddedPostgres, pick_port, stop_process, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]

USER = bearer("alice")
APPROVER = bearer("bob")
VIEWER = bearer("vic")


class Stack:
    """An API process and worker processes sharing one environment."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs = env, logs
        self.api_proc: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.api_url = ""

    def start_api(self) -> Stack:
        port = pick_port(19100)
        self.api_url = f"http://127.0.0.1:{port}"
        self.api_proc = self._spawn("api", [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                                            "--port", str(port), "--no-access-log"], self.env)
        wait_for_port(port, 30, proc=self.api_proc)
        return self

    def start_worker(self, **extra_env: str) -> subprocess.Popen:
        name = f"worker-{uuid.uuid4().hex[:6]}"
        log = self.logs / f"{name}.log"
        proc = self._spawn(name, [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker",
                                  "-B", "--concurrency", "2", "--prefetch-multiplier", "1", "--loglevel", "INFO",
                                  "--schedule", str(self.logs / f"{name}.schedule"), "-n", f"{name}@%h"],
                           {**self.env, **extra_env})
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {log.read_text()[-3000:]}")
            time.sleep(0.2)
        self.workers.append(proc)
        return proc

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def stop_workers(self) -> None:
        for proc in self.workers:
            stop_process(proc)
        self.workers.clear()

    def stop(self) -> None:
        self.stop_workers()
        if self.api_proc:
            stop_process(self.api_proc)

    # --- API helpers ----------------------------------------------------------------------------
    def chat(self, text: str) -> dict:
        response = httpx.post(f"{self.api_url}/api/v1/chat", json={"text": text}, headers=USER, timeout=20)
        assert response.status_code == 200, response.text
        return response.json()

    def propose(self, text: str) -> str:
        body = self.chat(text)
        assert body["proposal"], body
        return body["proposal"]["id"]

    def approve(self, request_id: str) -> httpx.Response:
        return httpx.post(f"{self.api_url}/api/v1/requests/{request_id}/approve", headers=APPROVER, timeout=20)

    def get(self, request_id: str) -> dict:
        return httpx.get(f"{self.api_url}/api/v1/requests/{request_id}", headers=VIEWER, timeout=20).json()

    def wait(self, request_id: str, predicate, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        view: dict = {}
        while time.monotonic() < deadline:
            try:
                view = self.get(request_id)
                if predicate(view):
                    return view
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting; last view: {view}")

    def events(self, request_id: str) -> list[dict]:
        answer = httpx.get(f"{self.api_url}/api/v1/requests/{request_id}/events", headers=VIEWER, timeout=20)
        return answer.json()["items"]


def terminal(view: dict) -> bool:
    return view.get("terminal", False)


def wait_exit(proc: subprocess.Popen, timeout: float = 30) -> int:
    return proc.wait(timeout=timeout)


@pytest.fixture
def stack(own_database, own_redis, awx_double, tmp_path):
    """The stack under test, on a database of its own: the session's Celery worker (started by other tests) runs
    follow rounds on the shared test database and would poll this stack's requests in place of its workers."""
    import redis as redis_lib

    ensure_test_tokens(own_database)
    redis_lib.Redis.from_url(own_redis.url).flushall()
    env = {
        "DATABASE_URL": own_database, "REDIS_URL": own_redis.url,
        "AWX_URL": awx_double.url, "AWX_TOKEN": awx_double.token,
        "FOLLOW_POLL_SECONDS": "0.5", "SWEEP_INTERVAL_SECONDS": "1", "STUCK_AFTER_SECONDS": "4",
        "AWX_RETRY_ATTEMPTS": "4", "AWX_TIMEOUT_SECONDS": "3", "LAUNCH_FENCE_SECONDS": "8",
    }
    s = Stack(env, tmp_path).start_api()
    yield s
    s.stop()


def launches(awx_double, request_id: str) -> int:
    return awx_double.stats()["launches_by_request"].get(request_id, 0)


def assert_events_exactly_once(stack: Stack, request_id: str) -> None:
    counters = [e["counter"] for e in stack.events(request_id)]
    assert counters == list(range(1, len(counters) + 1)), counters
    assert any(e["event"] == "playbook_on_stats" for e in stack.events(request_id))


# --------------------------------------------------------------------------------- worker killed


@pytest.mark.parametrize("point", ["before_launch", "after_launch"])
def test_worker_killed_during_launch_ends_with_exactly_one_job(stack, awx_double, point):
    doomed = stack.start_worker(PATCHPILOT_CRASHPOINTS=point)
    request_id = stack.propose("Patch web-01 with Group-1")
    assert stack.approve(request_id).status_code == 200
    assert wait_exit(doomed) == -signal.SIGKILL
    view = stack.get(request_id)
    assert view["state"] == "launching" and view["awx_job_id"] is None
    assert launches(awx_double, request_id) == (1 if point == "after_launch" else 0)

    stack.start_worker()  # the sweep finds the stuck request; recovery adopts or launches
    view = stack.wait(request_id, terminal)
    assert view["state"] == "succeeded", view
    assert launches(awx_double, request_id) == 1
    assert_events_exactly_once(stack, request_id)


def test_worker_killed_while_following_resumes_without_gaps(stack, awx_double):
    doomed = stack.start_worker(PATCHPILOT_CRASHPOINTS="while_following")
    request_id = stack.propose("Patch web-02 and web-03 with Group-2")
    stack.approve(request_id)
    assert wait_exit(doomed) == -signal.SIGKILL
    assert stack.get(request_id)["state"] == "running"
    stack.start_worker()
    view = stack.wait(request_id, terminal)
    assert view["state"] == "succeeded"
    assert launches(awx_double, request_id) == 1
    assert_events_exactly_once(stack, request_id)


def test_redelivered_launch_and_follow_tasks_do_nothing_twice(stack, awx_double):
    from celery import Celery

    stack.start_worker()
    request_id = stack.propose("Patch db-01 with Group-1")
    stack.approve(request_id)
    sender = Celery(broker=stack.env["REDIS_URL"])
    for _ in range(3):  # what a broker redelivery looks like to the worker
        sender.send_task("worker.tasks.launch_request", args=[request_id])
        sender.send_task("worker.tasks.follow_request", args=[request_id])
    view = stack.wait(request_id, terminal)
    for _ in range(3):
        sender.send_task("worker.tasks.launch_request", args=[request_id])
    time.sleep(2)
    assert view["state"] == "succeeded"
    assert launches(awx_double, request_id) == 1
    assert_events_exactly_once(stack, request_id)


def test_ten_concurrent_approvals_over_http_launch_once(stack, awx_double):
    from concurrent.futures import ThreadPoolExecutor

    stack.start_worker()
    request_id = stack.propose("Patch lb-01 with Group-1")
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: stack.approve(request_id).status_code, range(10)))
    assert codes.count(200) == 1 and codes.count(409) == 9
    assert stack.wait(request_id, terminal)["state"] == "succeeded"
    assert launches(awx_double, request_id) == 1


# --------------------------------------------------------------------------------- Redis faults


def test_request_approved_while_redis_is_down_runs_once_redis_is_back(stack, awx_double, own_redis):
    stack.start_worker()
    request_id = stack.propose("Patch app-01 with Group-1")
    own_redis.stop()
    try:
        started = time.monotonic()
        response = stack.approve(request_id)
        assert response.status_code == 200 and response.json()["state"] == "approved"
        assert time.monotonic() - started < 15  # the click does not hang on the broker
        time.sleep(2)
        assert stack.get(request_id)["state"] == "approved"
    finally:
        own_redis.start(own_redis.data_dir / "redis.log")
    view = stack.wait(request_id, terminal, timeout=90)
    assert view["state"] == "succeeded"
    assert launches(awx_double, request_id) == 1


def test_launch_message_lost_by_redis_is_re_driven_from_postgres(stack, awx_double, own_redis):
    import redis as redis_lib

    request_id = stack.propose("Patch app-02 with Group-3")
    stack.approve(request_id)  # enqueued, but no worker is running yet
    assert stack.get(request_id)["state"] == "queued"
    redis_lib.Redis.from_url(own_redis.url).flushall()  # the test Redis keeps nothing on disk: a restart is this
    stack.start_worker()
    view = stack.wait(request_id, terminal, timeout=90)
    assert view["state"] == "succeeded"
    assert launches(awx_double, request_id) == 1


# --------------------------------------------------------------------------------- AWX faults


def test_5xx_burst_is_retried_and_the_run_completes(stack, awx_double):
    stack.start_worker()
    request_id = stack.propose("Patch web-04 with Group-1")
    stack.approve(request_id)
    stack.wait(request_id, lambda v: v["state"] == "running")
    awx_double.scenario(server_errors=3)
    view = stack.wait(request_id, terminal)
    assert view["state"] == "succeeded"
    assert launches(awx_double, request_id) == 1
    assert_events_exactly_once(stack, request_id)


def test_429_with_retry_after_is_honoured(stack, awx_double):
    stack.start_worker()
    request_id = stack.propose("Patch cache-01 with Group-2")
    stack.approve(request_id)
    stack.wait(request_id, lambda v: v["state"] == "running")
    awx_double.scenario(rate_limit={"count": 2, "retry_after": 1})
    assert stack.wait(request_id, terminal)["state"] == "succeeded"
    assert launches(awx_double, request_id) == 1


def test_awx_down_for_good_ends_in_error_with_a_readable_reason(stack, awx_double):
    stack.start_worker(FOLLOW_ERROR_BUDGET="2")
    request_id = stack.propose("Patch stg-web-01 with Group-1")
    stack.approve(request_id)
    stack.wait(request_id, lambda v: v["state"] == "running")
    awx_double.scenario(server_errors=10_000)
    view = stack.wait(request_id, terminal, timeout=120)
    assert view["state"] == "error"
    assert "AWX" in view["failure_reason"] and "Traceback" not in view["failure_reason"]


def test_5xx_on_the_launch_itself_recovers_without_a_second_job(stack, awx_double):
    awx_double.scenario(launch_hang_seconds=5)  # the job is created, the answer comes after our 3 s timeout
    stack.start_worker()
    request_id = stack.propose("Patch stg-app-01 with Group-1")
    stack.approve(request_id)
    stack.wait(request_id, lambda v: v["failure_reason"] and "launch attempt" in v["failure_reason"])
    awx_double.scenario(launch_hang_seconds=0)
    view = stack.wait(request_id, terminal, timeout=90)
    assert view["state"] == "succeeded", view
    assert launches(awx_double, request_id) == 1


def test_rejected_token_is_an_error_without_a_retry_storm(stack, awx_double):
    stack.start_worker(AWX_TOKEN="not-the-token")
    request_id = stack.propose("Patch dev-web-01 with Group-1")
    stack.approve(request_id)
    view = stack.wait(request_id, terminal)
    assert view["state"] == "error"
    assert "AWX rejected the token" in view["failure_reason"]
    assert "not-the-token" not in view["failure_reason"]
    requests_before = awx_double.stats()["requests"]
    time.sleep(3)
    assert awx_double.stats()["requests"] - requests_before <= 2  # no retry storm
    assert launches(awx_double, request_id) == 0


def test_read_only_token_cannot_launch(stack, awx_double):
    awx_double.scenario(read_only_token="read-only-token")
    stack.start_worker(AWX_TOKEN="read-only-token")
    request_id = stack.propose("Patch dev-app-01 with Group-1")
    stack.approve(request_id)
    view = stack.wait(request_id, terminal)
    assert view["state"] == "error" and "AWX rejected the token" in view["failure_reason"]
    assert launches(awx_double, request_id) == 0


def test_duplicated_and_out_of_order_event_pages_are_stored_once(stack, awx_double):
    awx_double.scenario(duplicate_pages=True, slow_events=True)
    stack.start_worker()
    request_id = stack.propose("Patch web-01, web-02, web-03 and web-04 with Group-1")
    stack.approve(request_id)
    view = stack.wait(request_id, terminal, timeout=90)
    assert view["state"] == "succeeded"
    assert_events_exactly_once(stack, request_id)
    job = httpx.get(f"{awx_double.url}jobs/{view['awx_job_id']}/job_events/?page_size=1",
                    headers={"Authorization": f"Bearer {awx_double.token}"}).json()
    assert len(stack.events(request_id)) == job["count"]


# --------------------------------------------------------------------------------- cancel and expiry


def test_cancel_after_the_job_finished_is_409(stack, awx_double):
    stack.start_worker()
    request_id = stack.propose("Patch lb-02 with Group-1")
    stack.approve(request_id)
    assert stack.wait(request_id, terminal)["state"] == "succeeded"
    response = httpx.post(f"{stack.api_url}/api/v1/requests/{request_id}/cancel", headers=USER)
    assert response.status_code == 409 and "succeeded" in response.json()["detail"]


def test_unapproved_proposal_expires_and_cannot_be_approved(stack, awx_double):
    from sqlalchemy import update
    from sqlmodel import Session

    from core.db import get_engine
    from core.models import PatchRequest, utcnow

    stack.start_worker()
    request_id = stack.propose("Patch db-02 with Group-1")
    with Session(get_engine()) as session:
        session.execute(update(PatchRequest).where(PatchRequest.id == request_id).values(expires_at=utcnow()))
        session.commit()
    assert stack.wait(request_id, lambda v: v["state"] == "expired")["state"] == "expired"  # by the sweep
    response = stack.approve(request_id)
    assert response.status_code == 409
    assert launches(awx_double, request_id) == 0


# --------------------------------------------------------------------------------- PostgreSQL restart


def test_postgres_restart_under_load_503_then_recovery(awx_double, own_redis, tmp_path):
    from patchpilot.cli import migrate

    pg = EmbeddedPostgres(tmp_path / "pg", pick_port(19432)).start(tmp_path / "pg.log")
    saved = os.environ.get("DATABASE_URL")
    try:
        url = pg.ensure_database("patchpilot")
        migrate(url)
        ensure_test_tokens(url)
        env = {"DATABASE_URL": url, "REDIS_URL": own_redis.url, "AWX_URL": awx_double.url,
               "AWX_TOKEN": awx_double.token, "FOLLOW_POLL_SECONDS": "0.5", "SWEEP_INTERVAL_SECONDS": "1",
               "STUCK_AFTER_SECONDS": "4"}
        stack = Stack(env, tmp_path).start_api()
        try:
            stack.start_worker()
            request_id = stack.propose("Patch web-03 with Group-3")
            stack.approve(request_id)
            stack.wait(request_id, lambda v: v["state"] == "running")
            pg.stop()
            outage = [httpx.get(f"{stack.api_url}/api/v1/requests/{request_id}", headers=VIEWER, timeout=20)
                      for _ in range(3)]
            outage.append(httpx.post(f"{stack.api_url}/api/v1/chat", json={"text": "Patch web-01 with Group-1"},
                                     headers=USER, timeout=20))
            assert {r.status_code for r in outage} == {503}
            assert all("database" in r.json()["detail"].lower() for r in outage)
            assert httpx.get(f"{stack.api_url}/readyz", timeout=20).status_code == 503
            time.sleep(2)
            pg.start(tmp_path / "pg.log")
            view = stack.wait(request_id, terminal, timeout=120)  # the API recovered without a restart
            assert view["state"] == "succeeded"
            assert launches(awx_double, request_id) == 1
            assert_events_exactly_once(stack, request_id)
        finally:
            stack.stop()
    finally:
        if saved is not None:
            os.environ["DATABASE_URL"] = saved
        from core.db import reset_engines
        from core.settings import reset_settings_cache

        reset_settings_cache()
        reset_engines()
        pg.stop()


# --------------------------------------------------------------------------------- compound faults


@pytest.fixture
def own_pg_stack(awx_double, own_redis, tmp_path):
    """A stack on a PostgreSQL of its own, which the test may restart."""
    import redis as redis_lib

    from patchpilot.cli import migrate

    redis_lib.Redis.from_url(own_redis.url).flushall()
    pg = EmbeddedPostgres(tmp_path / "pg", pick_port(19532)).start(tmp_path / "pg.log")
    saved = os.environ.get("DATABASE_URL")
    try:
        url = pg.ensure_database("patchpilot")
        migrate(url)
        ensure_test_tokens(url)
        env = {"DATABASE_URL": url, "REDIS_URL": own_redis.url, "AWX_URL": awx_double.url,
               "AWX_TOKEN": awx_double.token, "FOLLOW_POLL_SECONDS": "0.5", "SWEEP_INTERVAL_SECONDS": "1",
               "STUCK_AFTER_SECONDS": "4", "AWX_TIMEOUT_SECONDS": "3", "LAUNCH_FENCE_SECONDS": "10"}
        stack = Stack(env, tmp_path).start_api()
        stack.pg = pg
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        if saved is not None:
            os.environ["DATABASE_URL"] = saved
        from core.db import reset_engines
        from core.settings import reset_settings_cache

        reset_settings_cache()
        reset_engines()
        pg.stop()


def test_slow_awx_on_the_launch_path_and_a_postgres_restart_launch_one_job(own_pg_stack, awx_double):
    """Worker slot A waits out a 429 (Retry-After 20 s) inside the launch; PostgreSQL restarts meanwhile, which
    drops A's lock connection; the sweep re-drives the request and slot B launches. A wakes to a replaced token
    (or B's job in AWX) and launches nothing."""
    stack = own_pg_stack
    stack.start_worker()
    awx_double.scenario(rate_limit={"count": 1, "retry_after": 20, "path": "/launch/"})
    request_id = stack.propose("Patch web-01 with Group-1")
    assert stack.approve(request_id).status_code == 200
    deadline = time.monotonic() + 30
    while awx_double.stats()["launches"] == 0 and httpx.get(f"{awx_double.root}/_double/scenario").json()[
            "rate_limit"]["count"] == 1:
        assert time.monotonic() < deadline, "the launch never reached AWX"
        time.sleep(0.2)
    time.sleep(0.5)  # A is asleep on Retry-After
    os.killpg(os.getpgid(stack.pg.proc.pid), signal.SIGINT)  # a restart: fast shutdown ends every session
    stack.pg.proc.wait(timeout=30)
    time.sleep(1)
    stack.pg.start(stack.logs / "pg.log")
    view = stack.wait(request_id, terminal, timeout=120)
    assert view["state"] == "succeeded", view
    deadline = time.monotonic() + 60
    while True:  # A wakes from its Retry-After and stands down: fenced, or it finds B's job in AWX
        logs = "".join(p.read_text(errors="replace") for p in stack.logs.glob("worker-*.log"))
        if "launch: fenced" in logs or "launch: recovered" in logs:
            break
        assert time.monotonic() < deadline, logs[-4000:]
        time.sleep(0.5)
    assert logs.count("launch: launched") == 1
    assert launches(awx_double, request_id) == 1
    assert stack.get(request_id)["duplicate_awx_jobs"] == []


HELD = {"held_launch_and_follow": ("launch_request", "follow_request"), "held_sweep_and_tick": ("sweep", "follow_due")}


def _send_in_hand(redis_url: str, request_id: str, kinds: tuple[str, ...]) -> None:
    """Messages the worker takes and holds unacknowledged (an ETA a minute away): two, its prefetch limit."""
    from celery import Celery

    sender = Celery(broker=redis_url)
    for kind in kinds:
        args = [request_id] if kind in ("launch_request", "follow_request") else []
        sender.send_task(f"worker.tasks.{kind}", args=args, countdown=60)
    sender.close()


@pytest.mark.parametrize("in_hand", ["launch_running", *HELD])
def test_the_worker_outlives_redis_killed_with_tasks_in_hand(stack, awx_double, own_redis, in_hand):
    """Every kind of task in hand when Redis is SIGKILLed: executing (a launch waiting on AWX) or held
    unacknowledged; the worker must stay up, reconnect, and still run the next request."""
    heartbeat = stack.logs / "heartbeat"
    worker = stack.start_worker(WORKER_HEARTBEAT_FILE=str(heartbeat))
    log = sorted(stack.logs.glob("worker-*.log"))[-1]
    if in_hand == "launch_running":
        awx_double.scenario(launch_hang_seconds=4)  # the launch task is executing when Redis dies
        request_id = stack.propose("Patch web-02 with Group-1")
        stack.approve(request_id)
        deadline = time.monotonic() + 20
        while awx_double.stats()["launches"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    else:
        request_id = stack.propose("Patch web-03 with Group-1")
        seen = len(log.read_text(errors="replace"))
        _send_in_hand(own_redis.url, request_id, HELD[in_hand])
        deadline = time.monotonic() + 20
        while not all(re.search(rf"worker\.tasks\.{kind}\[[^]]+\] received", log.read_text(errors="replace")[seen:])
                      for kind in HELD[in_hand]):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
    own_redis.proc.kill()  # SIGKILL: no goodbye to the clients
    own_redis.proc.wait()
    time.sleep(6)
    assert worker.poll() is None, log.read_text()[-3000:]
    own_redis.start(own_redis.data_dir / "redis.log")
    deadline = time.monotonic() + 30
    while log.read_text(errors="replace").count("Connected to redis") < 2:
        assert worker.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    assert "Unrecoverable error" not in log.read_text(errors="replace")
    awx_double.scenario(launch_hang_seconds=0)
    if in_hand != "launch_running":
        stack.approve(request_id)
    view = stack.wait(request_id, terminal, timeout=90)  # the worker still works
    assert view["state"] == "succeeded", view
    assert launches(awx_double, request_id) == 1
    assert worker.poll() is None
    assert time.time() - heartbeat.stat().st_mtime < 15  # the event loop runs: the liveness probe is content
