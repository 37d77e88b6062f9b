"""Logs carry the patch request id; metrics expose what PostgreSQL knows."""

import json
import logging

from core.observability import JsonFormatter, _ContextFilter, bind_request


def _record(message: str) -> logging.LogRecord:
    record = logging.LogRecord("patchpilot.worker", logging.INFO, __file__, 1, message, (), None)
    _ContextFilter().filter(record)
    return record


def test_json_log_lines_carry_the_bound_request_and_job():
    with bind_request("a" * 32, job_id=42):
        line = JsonFormatter().format(_record("launched"))
    body = json.loads(line)
    assert body["message"] == "launched" and body["level"] == "info"
    assert body["patch_request_id"] == "a" * 32 and body["awx_job_id"] == 42


def test_binding_ends_with_its_context():
    with bind_request("b" * 32):
        pass
    assert "patch_request_id" not in json.loads(JsonFormatter().format(_record("idle")))


def test_metrics_report_requests_by_state_from_the_database(api):
    from prometheus_client import generate_latest

    from conftest import bearer
    from core.observability import metrics_registry

    api.post("/api/v1/chat", json={"text": "Patch web-01 with Group-1"}, headers=bearer("alice"))
    text = generate_latest(metrics_registry()).decode()
    assert 'patchpilot_requests{state="proposed"} 1.0' in text
    assert "patchpilot_follow_lag_seconds" in text
