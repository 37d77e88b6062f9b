"""What AWX answers, read: the errors of an AWX call, a launch's result, and the helpers that turn a response into
them (Retry-After, AWX's explanation of a refusal, a job's extra_vars). No HTTP client here: `worker.awx_client` is
the only code that talks to AWX.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import yaml


class AWXError(Exception):
    """A failed AWX call. `kind` says what went wrong, `retryable` whether the same call may be tried again later.

    kind: auth | not_found | bad_request | server | timeout | connection | refused | ignored_fields
    """

    def __init__(self, message: str, *, kind: str, status_code: int | None = None, retryable: bool = False,
                 job_id: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.status_code = status_code
        self.retryable = retryable
        self.job_id = job_id  # set when a job was launched before the failure (ignored_fields)


class AWXLaunchRefused(AWXError):
    """We refused to launch: AWX would have dropped the limit or the extra vars (and patched the wrong hosts)."""

    def __init__(self, message: str):
        super().__init__(message, kind="refused")


@dataclass
class LaunchResult:
    job_id: int
    status: str
    ignored_fields: dict[str, Any] = field(default_factory=dict)


class Transient(Exception):
    """A failure worth another attempt; `retry_after` carries the server's hint in seconds."""

    def __init__(self, reason: str, *, kind: str, status_code: int | None = None,
                 retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.status_code = status_code
        self.retry_after = retry_after


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def describe_body(response: httpx.Response) -> str:
    """AWX's explanation: `detail`, or the 400 field map flattened to `field: message`."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())
        return text[:200]
    if isinstance(body, dict):
        if isinstance(body.get("detail"), str):
            return body["detail"]
        parts = []
        for name, messages in body.items():
            text = "; ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
            parts.append(f"{name}: {text}")
        return ", ".join(parts)
    return str(body)[:200]


def status_line(response: httpx.Response) -> str:
    return f"{response.status_code} {response.reason_phrase}".strip()


def parse_extra_vars(value: Any) -> dict[str, Any]:
    """A job's `extra_vars` is a JSON (sometimes YAML) string."""
    if isinstance(value, dict):
        return value
    if not value:
        return {}
    try:
        parsed = yaml.safe_load(value)  # JSON is YAML too
    except yaml.YAMLError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def organization_name(template: dict[str, Any]) -> str | None:
    organization = (template.get("summary_fields") or {}).get("organization") or {}
    return organization.get("name")


def error_for(response: httpx.Response, what: str, redact: Callable[[str], str]) -> AWXError:
    """A final answer (no retry left or none allowed) as a readable, token-free AWXError."""
    status = response.status_code
    reason = redact(describe_body(response))
    if status == 401:
        return AWXError(f"AWX rejected the token (401): {reason}", kind="auth", status_code=401)
    if status == 403:
        return AWXError(f"AWX refused the {what} for this token (403): {reason}", kind="auth", status_code=403)
    if status == 404:
        return AWXError(f"AWX found nothing for the {what} (404): {reason}", kind="not_found", status_code=404)
    if status == 429 or status >= 500:
        return AWXError(f"AWX failed the {what}: {status_line(response)}: {reason}", kind="server",
                        status_code=status)
    return AWXError(f"AWX refused the {what} ({status}): {reason}", kind="bad_request", status_code=status)


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON object AWX answered, or an AWXError saying what came instead."""
    try:
        body = response.json()
    except ValueError:
        raise AWXError(f"AWX answered {response.request.url.path} with something that is not JSON "
                       "(a login page from a proxy?).", kind="server", status_code=response.status_code) from None
    if not isinstance(body, dict):
        raise AWXError(f"AWX answered {response.request.url.path} with an unexpected body.", kind="server",
                       status_code=response.status_code)
    return body
