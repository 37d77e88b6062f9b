"""Replays of recorded job events: what real AWX sends for a run of playbooks/patch.yml.

The streams in `awx_double/streams/` were recorded by `bench/record_streams.py` from ansible-runner (the event
callback AWX itself uses) running the reference playbook in check mode against two hosts; each file names the
versions it came from. A replay maps the job's hosts onto the recorded ones (hosts the scenario makes fail or
unreachable take the recorded bad host's events, the others the good host's), keeps the real event names
(`runner_on_start`, `runner_item_on_ok`, `runner_item_on_failed`, ...), their interleaving, their sizes and their
relative timing, and computes `failed` and `changed` as AWX's JobEvent does (`FAILED_EVENTS` unless
`ignore_errors`; `res.changed`; for the stats, their sums).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from awx_double.timeline import RUN_START, STAT_KEYS, PlannedEvent, RunOptions, RunPlan

STREAMS_DIR = Path(__file__).resolve().parent / "streams"
STREAMS = ("success", "item_failed", "unreachable", "stopped")
GOOD_HOST, BAD_HOST = "web-01", "web-02"  # the recorded hosts; web-02 is the one that fails in failure streams

# AWX's JobEvent.FAILED_EVENTS (awx/main/models/events.py): `failed` is set for these unless ignore_errors.
FAILED_EVENTS = frozenset({"runner_on_failed", "runner_on_error", "runner_on_unreachable", "runner_on_async_failed",
                           "runner_item_on_failed", "error"})


@cache
def load_stream(name: str) -> dict[str, Any]:
    """One recorded stream: {"scenario", "recorded_with", "hosts", "runner_status", "rc", "events"}."""
    if name not in STREAMS:
        raise ValueError(f"no recorded stream {name!r}; known: {', '.join(STREAMS)}")
    return json.loads((STREAMS_DIR / f"{name}.json").read_text())


def choose_stream(hosts: list[str], options: RunOptions) -> str:
    if options.unreachable_hosts & set(hosts):
        return "unreachable"
    if options.failed_hosts & set(hosts):
        return "item_failed"
    return "success"


def _seconds(created: str) -> float:
    return datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()


def _rename(event: dict[str, Any], recorded_host: str, host: str) -> tuple[str, dict[str, Any]]:
    stdout = (event.get("stdout") or "").replace(f"[{recorded_host}]", f"[{host}]")
    data = dict(event.get("event_data") or {})
    data["host"] = host
    if data.get("remote_addr") == recorded_host:
        data["remote_addr"] = host
    return stdout, data


def _flags(name: str, data: dict[str, Any]) -> tuple[bool, bool]:
    """(failed, changed) as AWX's JobEvent._update_from_event_data sets them."""
    if name == "playbook_on_stats":
        try:
            failed = bool(sum((data.get("failures") or {}).values()) + sum((data.get("dark") or {}).values()))
            return failed, bool(sum((data.get("changed") or {}).values()))
        except (AttributeError, TypeError):
            return False, False
    res = data.get("res")
    failed = name in FAILED_EVENTS and not data.get("ignore_errors", False)
    return failed, bool(isinstance(res, dict) and res.get("changed", False))


def plan_recorded(hosts: list[str], options: RunOptions, stream: str | None = None) -> RunPlan:
    """The events of a run over `hosts`, replayed from a recorded stream (chosen from the scenario's failing and
    unreachable hosts unless named). A stopped stream ends in `error` with no stats (a run reaped mid-way)."""
    name = stream or choose_stream(hosts, options)
    recorded = load_stream(name)
    bad = (options.unreachable_hosts | options.failed_hosts) if name in ("unreachable", "item_failed") else set()
    mapping: dict[str, list[str]] = {GOOD_HOST: [], BAD_HOST: []}
    for host in hosts:
        mapping[BAD_HOST if host in bad else GOOD_HOST].append(host)
    events = recorded["events"]
    first = _seconds(events[0]["created"])
    last = max(_seconds(e["created"]) for e in events)
    window = max(0.1, options.run_end - 0.5 - RUN_START)
    span = max(0.001, last - first)
    planned: list[PlannedEvent] = []
    stats: dict[str, dict[str, int]] = {}

    def add(event: dict[str, Any], stdout: str, data: dict[str, Any], host: str | None) -> None:
        failed, changed = _flags(event["event"], data)
        planned.append(PlannedEvent(
            counter=len(planned) + 1, event=event["event"],
            emit_at=RUN_START + window * (_seconds(event["created"]) - first) / span, stdout=stdout,
            play=str(data.get("play") or ""), task=str(data.get("task") or ""), host_name=host,
            failed=failed, changed=changed, event_data=data))

    for event in events:
        data = event.get("event_data") or {}
        recorded_host = data.get("host")
        if recorded_host:
            for host in mapping.get(recorded_host, []):
                add(event, *_rename(event, recorded_host, host), host)
        elif event["event"] == "playbook_on_stats":
            stats = {key: {host: int((data.get(key) or {}).get(recorded, 0))
                           for recorded, targets in mapping.items() for host in targets
                           if (data.get(key) or {}).get(recorded)}
                     for key in STAT_KEYS}
            data = {**data, **stats, "processed": dict.fromkeys(hosts, 1)}
            add(event, _recap_renamed(event.get("stdout") or "", mapping), data, None)
        else:
            add(event, event.get("stdout") or "", dict(data), None)
    if name == "stopped":
        final = "error"
    else:
        final = "failed" if stats.get("dark") or stats.get("failures") else "successful"
    return RunPlan(events=tuple(planned), final_status=final, ends_at=options.run_end, stats=stats)


def _recap_renamed(stdout: str, mapping: dict[str, list[str]]) -> str:
    """PLAY RECAP: one line per job host, copied from its recorded host's line."""
    lines = stdout.split("\r\n")
    out: list[str] = []
    for line in lines:
        recorded = next((h for h in mapping if h in line), None)  # a colour code, then the recorded host
        if recorded is None:
            out.append(line)
            continue
        out.extend(line.replace(recorded, host.ljust(len(recorded))) for host in mapping[recorded])
    return "\r\n".join(out)


def stream_info() -> list[dict[str, Any]]:
    """Each stream's versions, event count and size (for docs and tests)."""
    info = []
    for name in STREAMS:
        path = STREAMS_DIR / f"{name}.json"
        data = load_stream(name)
        info.append({"stream": name, "events": len(data["events"]), "bytes": path.stat().st_size,
                     **data["recorded_with"]})
    return info
