"""Logs carry the patch request id; metrics expose what PostgreSQL knows."""

import json
import logging
import sys

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
    from conftest import bearer
    from prometheus_client import generate_latest

    from core.observability import metrics_registry

    api.post("/api/v1/chat", json={"text": "Patch web-01 with Group-1"}, headers=bearer("alice"))
    text = generate_latest(metrics_registry()).decode()
    assert 'patchpilot_requests{state="proposed"} 1.0' in text
    assert "patchpilot_follow_lag_seconds" in text


def test_json_log_lines_keep_the_traceback_as_a_string():
    try:
        {}["missing"]
    except KeyError:
        record = logging.LogRecord("patchpilot.worker", logging.ERROR, __file__, 1, "poll failed", (), sys.exc_info())
    _ContextFilter().filter(record)
    body = json.loads(JsonFormatter().format(record))
    assert body["exc_type"] == "KeyError" and body["exc_message"] == "'missing'"
    assert isinstance(body["traceback"], str)
    assert body["traceback"].startswith("Traceback (most recent call last):")
    assert 'test_json_log_lines_keep_the_traceback_as_a_string' in body["traceback"]
    assert body["traceback"].rstrip().endswith("KeyError: 'missing'")
    assert "\n" not in line_of(JsonFormatter().format(record))  # still one line per record


def line_of(text: str) -> str:
    assert text.count("\n") == 0, text
    return text


def test_configured_json_logging_keeps_the_traceback_of_log_exception(capsys):
    from core.observability import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("patchpilot.test").exception("it broke")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    body = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert body["message"] == "it broke" and "RuntimeError: boom" in body["traceback"]
