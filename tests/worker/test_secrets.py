"""Secrets (the AWX token, the LLM key) come only from the environment or mounted files, and never appear in
logs, database rows, API responses or error pages: a full run with success, failure and error paths, then a
grep of everything it left behind."""

from __future__ import annotations

import httpx
import pytest
from conftest import bearer
from sqlalchemy import text

from core.settings import Settings

LLM_KEY = "sk-test-llm-key-4f1c2b9e7d"
WRONG_AWX_TOKEN = "awx-wrong-token-9a8b7c6d5e"


def test_secrets_can_be_mounted_as_files(tmp_path, monkeypatch):
    # The environment wins over files: clear what other tests put there.
    monkeypatch.delenv("AWX_TOKEN", raising=False)
    monkeypatch.delenv("LLM_API_KEY", raising=False)
    (tmp_path / "awx_token").write_text("token-from-a-mounted-file\n")
    (tmp_path / "llm_api_key").write_text("key-from-a-mounted-file")
    settings = Settings(_secrets_dir=str(tmp_path))
    assert settings.awx_token.get_secret_value() == "token-from-a-mounted-file"
    assert settings.llm_api_key.get_secret_value() == "key-from-a-mounted-file"
    assert "token-from-a-mounted-file" not in repr(settings) and "key-from" not in str(settings.model_dump())


@pytest.mark.integration
def test_no_secret_in_logs_rows_responses_or_errors(database_url, own_redis, awx_double, tmp_path, db):
    from test_faults import Stack

    env = {"DATABASE_URL": database_url, "REDIS_URL": own_redis.url, "AWX_URL": awx_double.url,
           "AWX_TOKEN": awx_double.token, "LLM_API_KEY": LLM_KEY, "LOG_LEVEL": "DEBUG",
           "FOLLOW_POLL_SECONDS": "0.5", "SWEEP_INTERVAL_SECONDS": "1", "STUCK_AFTER_SECONDS": "4",
           "AWX_RETRY_ATTEMPTS": "2", "AWX_TIMEOUT_SECONDS": "3"}
    stack = Stack(env, tmp_path).start_api()
    responses: list[str] = []
    try:
        stack.start_worker()
        ok = stack.propose("Patch web-01 with Group-1")  # success
        stack.approve(ok)
        awx_double.scenario(failed_hosts=["db-02"])
        failing = stack.propose("Patch db-02 with Group-1")  # a failed run
        stack.approve(failing)
        for request_id in (ok, failing):
            stack.wait(request_id, lambda v: v["terminal"])
        stack.stop_workers()
        stack.start_worker(AWX_TOKEN=WRONG_AWX_TOKEN)  # AWX rejects the token: an error with a reason
        rejected = stack.propose("Patch web-02 with Group-1")
        stack.approve(rejected)
        view = stack.wait(rejected, lambda v: v["terminal"])
        assert view["state"] == "error" and "AWX rejected the token" in view["failure_reason"]

        api = stack.api_url
        for path in ("/api/v1/requests", f"/api/v1/requests/{ok}", f"/api/v1/requests/{failing}/events",
                     f"/api/v1/requests/{rejected}", "/api/v1/system", "/api/v1/me", "/api/v1/audit?format=csv",
                     "/api/v1/conversations", "/openapi.json", "/readyz"):
            responses.append(httpx.get(api + path, headers=bearer("root"), timeout=20).text)
        # Error pages: bad bodies, unknown ids, wrong methods, no credentials.
        responses.append(httpx.post(api + "/api/v1/chat", content=b"{", headers=bearer("root")).text)
        responses.append(httpx.get(api + "/api/v1/requests/" + "f" * 32, headers=bearer("root")).text)
        responses.append(httpx.delete(api + "/api/v1/chat", headers=bearer("root")).text)
        responses.append(httpx.get(api + "/api/v1/requests").text)
    finally:
        stack.stop()

    logs = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))
    assert "launched AWX job" in logs  # the logs are really there
    from core.db import get_engine

    rows = []
    with get_engine().connect() as conn:
        tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        for table in tables:
            rows += [str(r) for r in conn.execute(text(f'SELECT row_to_json(t)::text FROM "{table}" t')).scalars()]
    assert len(rows) > 20
    everything = {"logs": logs, "database": "\n".join(rows), "responses": "\n".join(responses)}
    for where, content in everything.items():
        for secret in (awx_double.token, WRONG_AWX_TOKEN, LLM_KEY):
            assert secret not in content, f"a secret leaked into the {where}"
