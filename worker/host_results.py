"""Per-host results from job events: pure functions over a `HostResult` row and AWX's event data.

`runner_on_start` (one per host per task) marks a host running; a task's result (ok, failed, unreachable, skipped,
async) sets its state from the results so far; item events keep it running, and a failed item keeps its own reason,
which the task's "One or more items failed" never overwrites. A host that failed once stays failed. The packages a
package task changed (in a dry run: would change) are kept per host (`core.package_changes`).
"""

from __future__ import annotations

import json
import re

from core.models import HostResult
from core.package_changes import merge, package_changes
from core.statuses import HOST_FAILED, HostStatus

_TASK_RESULTS = {"runner_on_ok": HostStatus.OK, "runner_on_async_ok": HostStatus.OK,
                 "runner_on_failed": HostStatus.FAILED, "runner_on_error": HostStatus.FAILED,
                 "runner_on_async_failed": HostStatus.FAILED, "runner_on_unreachable": HostStatus.UNREACHABLE,
                 "runner_on_skipped": HostStatus.SKIPPED}
# Events that say a task is under way on the host, with no result yet.
_IN_FLIGHT = frozenset({"runner_on_start", "runner_retry", "runner_on_async_poll", "runner_item_on_ok",
                        "runner_item_on_skipped", "runner_item_on_failed"})
_GENERIC_ITEM_FAILURE = "One or more items failed"
_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
# playbook_on_stats keys -> HostResult counters
_STATS_KEYS = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable", "skipped": "skipped"}


def says_something_about_the_host(kind: str) -> bool:
    """runner_on_no_hosts, runner_on_file_diff, ... say nothing about a host's state."""
    return kind in _TASK_RESULTS or kind in _IN_FLIGHT


def apply_host_event(row: HostResult, e: dict) -> None:
    """One host's event applied to its row."""
    kind = str(e.get("event", ""))
    data = e.get("event_data") or {}
    task = e.get("task") or data.get("task") or ""
    ignored = bool(data.get("ignore_errors"))
    result = _TASK_RESULTS.get(kind)
    sticky = row.status in HOST_FAILED  # a host that failed once stays failed however events are ordered
    if kind == "runner_item_on_failed" and not ignored:
        row.message = failure_message(task, data, e, item=True)
    if result is None:
        if not sticky and kind in _IN_FLIGHT:
            row.status = HostStatus.RUNNING
        return
    if result == HostStatus.FAILED and ignored:
        result = HostStatus.OK
    _count_result(row, result, task, data, e)
    if sticky:
        return
    if result in HOST_FAILED:
        row.status = result
    else:
        row.status = HostStatus.CHANGED if row.changed else HostStatus.OK if row.ok else HostStatus.SKIPPED


def _count_result(row: HostResult, result: HostStatus, task: str, data: dict, e: dict) -> None:
    res: dict = data["res"] if isinstance(data.get("res"), dict) else {}
    if result == HostStatus.OK:
        row.ok += 1
        row.changed += 1 if e.get("changed") or res.get("changed") else 0
        packages = package_changes(data.get("resolved_action"), res)
        if packages:  # a new list, so the JSON column sees the change
            row.packages = merge(row.packages or [], packages)
    elif result == HostStatus.SKIPPED:
        row.skipped += 1
    elif result == HostStatus.FAILED:
        row.failed += 1
        item_reason = row.message if row.message and row.message.startswith(f"{task} (item ") else None
        message = failure_message(task, data, e)
        row.message = item_reason if item_reason and _GENERIC_ITEM_FAILURE in message else message
    else:
        row.unreachable += 1
        row.message = failure_message(task, data, e)


def failure_message(task: str, data: dict, e: dict, *, item: bool = False) -> str:
    """'Check free disk space (item /var): Only 1234 MiB free on /var, 99999999 MiB needed.' -- the real reason:
    an item's own msg, or a failed task's msg, or its failed items' messages, or its stdout."""
    res: dict = data["res"] if isinstance(data.get("res"), dict) else {}
    msg = res.get("msg")
    if not item and (not msg or _GENERIC_ITEM_FAILURE in str(msg)):
        items = [r for r in (res.get("results") or []) if isinstance(r, dict) and r.get("failed")]
        if items:
            return "; ".join(f"{task} (item {_item_label(r)}): {r.get('msg') or r.get('stderr') or ''}".rstrip(": ")
                             for r in items)[:2000]
    if not msg:
        msg = res.get("stderr") or _ANSI_COLOUR.sub("", e.get("stdout") or "").strip()
    where = f"{task} (item {_item_label(res)})" if item else task
    return f"{where}: {msg}".strip(": ")[:2000]


def _item_label(res: dict) -> str:
    label = res.get("_ansible_item_label", res.get("item"))
    return label if isinstance(label, str) else json.dumps(label, default=str)[:200]


def stats_results(data: dict) -> dict[str, dict]:
    """playbook_on_stats -> per host, its counters and its final status."""
    hosts: set[str] = set()
    for source in _STATS_KEYS:
        hosts |= set((data.get(source) or {}).keys())
    out = {}
    for host in hosts:
        counts = {target: int((data.get(source) or {}).get(host, 0)) for source, target in _STATS_KEYS.items()}
        out[host] = {"status": _final_status(counts), **counts}
    return out


def _final_status(counts: dict[str, int]) -> HostStatus:
    for status in (HostStatus.UNREACHABLE, HostStatus.FAILED, HostStatus.CHANGED, HostStatus.OK):
        if counts[status.value]:
            return status
    return HostStatus.SKIPPED
