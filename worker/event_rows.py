"""An AWX job event as it is stored: pure functions, no database and no configuration of their own.

A job event's `event_data` can be hundreds of kilobytes per host (facts, package lists): it is stored whole when it
fits in EVENT_DATA_MAX_BYTES, else cut to what explains the result with a `_trimmed` marker. A failed event's
stdout is kept whole up to FAILURE_STDOUT_MAX_CHARS, others' up to EVENT_DATA_MAX_BYTES.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from core.models import utcnow
from core.settings import Settings

# AWX's JobEvent.FAILED_EVENTS: `failed` unless the task ignores errors.
FAILURE_EVENTS = frozenset({"runner_on_failed", "runner_on_error", "runner_on_unreachable", "runner_on_async_failed",
                            "runner_item_on_failed"})

# What of an oversized event_data is kept: its small top-level fields, and of its `res` what explains the result.
_RES_KEPT = ("msg", "rc", "changed", "failed", "skipped", "unreachable", "skip_reason", "item", "_ansible_item_label",
             "stderr", "reboot_required", "attempts", "retries", "ansible_job_id", "finished", "results")
_ITEM_KEPT = ("msg", "rc", "changed", "failed", "skipped", "item", "_ansible_item_label", "stderr")
_SMALL_FIELD = 512  # a top-level field of event_data at most this long (as JSON) is kept when the rest is cut
_MAX_ITEMS = 20


def event_row(request_id: str, e: dict, settings: Settings) -> dict:
    """The `job_events` row of one AWX event."""
    failure = str(e.get("event", "")) in FAILURE_EVENTS or bool(e.get("failed"))
    stdout = e.get("stdout") or None
    stdout_cap = settings.failure_stdout_max_chars if failure else settings.event_data_max_bytes
    if stdout and len(stdout) > stdout_cap:
        stdout = stdout[:stdout_cap] + f"\n[... {len(stdout) - stdout_cap} more characters not stored]"
    return {
        "request_id": request_id, "counter": int(e["counter"]), "event": str(e.get("event", ""))[:100],
        "host": (e.get("host_name") or None), "play": (e.get("play") or None),
        "task": (e.get("task") or "")[:500] or None,
        "failed": bool(e.get("failed")), "changed": bool(e.get("changed")),
        "stdout": stdout, "created": parse_time(e.get("created")),
        "data": trim_event_data(e.get("event_data") or None, settings.event_data_max_bytes), "stored_at": utcnow(),
    }


def trim_event_data(data: dict | None, max_bytes: int) -> dict | None:
    """event_data as stored: whole when its JSON fits in `max_bytes`, else its small fields and the result's
    explanation, cut to fit, with a `_trimmed` marker saying how big it was and what was left out."""
    if not data:
        return data
    size = len(json.dumps(data, default=str))
    if size <= max_bytes:
        return data
    field_cap = max(256, max_bytes // 8)
    kept = {key: value for key, value in data.items()
            if key != "res" and len(json.dumps(value, default=str)) <= _SMALL_FIELD}
    dropped = [key for key in data if key != "res" and key not in kept]
    res = data.get("res")
    if isinstance(res, dict):
        small = _explaining_result(res, field_cap)
        dropped += [f"res.{key}" for key in res if key not in small]
        kept["res"] = small
    kept["_trimmed"] = {"bytes": size, "max_bytes": max_bytes, "dropped": sorted(dropped)[:50]}
    if len(json.dumps(kept, default=str)) > max_bytes:  # still too big: keep the marker and the message only
        msg = _cut(res.get("msg") if isinstance(res, dict) else None, max(128, max_bytes // 4))
        kept = {k: kept[k] for k in ("host", "task", "play", "ignore_errors") if k in kept}
        kept["res"] = {"msg": msg} if msg else {}
        kept["_trimmed"] = {"bytes": size, "max_bytes": max_bytes, "dropped": ["everything but res.msg"]}
    return kept


def _explaining_result(res: dict, field_cap: int) -> dict[str, Any]:
    """What of a task's result explains it: its message, rc, stderr, flags and its failed (or talking) items."""
    small: dict[str, Any] = {}
    for key in _RES_KEPT:
        if key not in res:
            continue
        value = res[key]
        if key == "results" and isinstance(value, list):
            value = [_explaining_item(i, field_cap) for i in value
                     if not isinstance(i, dict) or i.get("failed") or i.get("msg")][:_MAX_ITEMS]
        small[key] = _cut(value, field_cap)
    return small


def _explaining_item(item: Any, field_cap: int) -> Any:
    if isinstance(item, dict):
        return {k: _cut(item.get(k), field_cap) for k in _ITEM_KEPT if k in item}
    return _cut(item, field_cap)


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"[... {len(value) - limit} more characters trimmed]"
    if not isinstance(value, (str, int, float, bool, type(None), list)) or (
            isinstance(value, list) and len(json.dumps(value, default=str)) > limit * 4):
        text = json.dumps(value, default=str)
        return text[:limit] + (f"[... {len(text) - limit} more characters trimmed]" if len(text) > limit else "")
    return value


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
