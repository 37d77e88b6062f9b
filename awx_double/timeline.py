"""The event stream of one simulated run of the reference patch playbook.

Pure data: given the limited hosts and the scenario, it lists every Ansible event the run emits, each stamped with
the moment (in job seconds since launch) at which ansible-runner emits it. The state module decides what a client
can see at a given clock; nothing here knows about HTTP or wall time.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

# Job seconds (at speed 1.0) at which the status moves on. A whole run lasts about 30 s at speed 1.0.
WAITING_AT = 0.6
RUN_START = 1.5
RUN_END = 28.0

PLAYBOOK = "patch.yml"

EVENT_DISPLAY = {
    "playbook_on_start": "Playbook Started",
    "playbook_on_play_start": "Play Started",
    "playbook_on_task_start": "Task Started",
    "runner_on_ok": "Host OK",
    "runner_on_failed": "Host Failed",
    "runner_on_unreachable": "Host Unreachable",
    "runner_on_skipped": "Host Skipped",
    "playbook_on_stats": "Playbook Complete",
    "verbose": "Verbose",
    # the rest of AWX's JobEvent.EVENT_TYPES, which recorded streams replay
    "runner_on_start": "Host Started",
    "runner_on_error": "Host Failure",
    "runner_on_no_hosts": "No Hosts Remaining",
    "runner_on_async_poll": "Host Polling",
    "runner_on_async_ok": "Host Async OK",
    "runner_on_async_failed": "Host Async Failure",
    "runner_item_on_ok": "Item OK",
    "runner_item_on_failed": "Item Failed",
    "runner_item_on_skipped": "Item Skipped",
    "runner_retry": "Host Retry",
    "runner_on_file_diff": "File Difference",
    "playbook_on_notify": "Running Handlers",
    "playbook_on_include": "Including File",
    "playbook_on_no_hosts_matched": "No Hosts Matched",
    "playbook_on_no_hosts_remaining": "No Hosts Remaining",
    "playbook_on_setup": "Gathering Facts",
    "debug": "Debug",
    "deprecated": "Deprecated",
    "warning": "Warning",
    "system_warning": "System Warning",
    "error": "Error",
}

STAT_KEYS = ("ok", "changed", "dark", "failures", "skipped", "rescued", "ignored")

# Relative durations: applying updates and rebooting take long, checks are quick.
_TASK_START_WEIGHT = 0.2
_PLAY_START_WEIGHT = 0.3


@dataclass(frozen=True)
class PlannedEvent:
    counter: int
    event: str
    emit_at: float  # job seconds since launch
    stdout: str
    play: str = ""
    task: str = ""
    host_name: str | None = None
    failed: bool = False
    changed: bool = False
    event_data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunPlan:
    """Everything a run will emit, and how it ends if nobody cancels it."""

    events: tuple[PlannedEvent, ...]
    final_status: str  # "successful" | "failed"
    ends_at: float  # job seconds at which the status turns terminal
    stats: dict[str, dict[str, int]]  # Ansible's per-host totals, {} when the playbook never started


@dataclass(frozen=True)
class RunOptions:
    job_type: str = "run"  # "check" is a dry run: nothing changes, no reboot
    reboot_policy: str = "if_needed"  # never | if_needed | always
    update_scope: str = "security"
    unreachable_hosts: frozenset[str] = frozenset()
    failed_hosts: frozenset[str] = frozenset()
    run_end: float = RUN_END  # job seconds at which the run ends; longer runs spread the same events wider


def reboot_required(host: str, update_scope: str) -> bool:
    """Deterministic per host, so tests and demos repeat; a full update always brings a new kernel."""
    return update_scope == "full" or zlib.crc32(host.encode()) % 2 == 0


# What the updates bring, per scope: (package, installed, offered) in dnf's epoch:version-release form.
_UPDATES = {
    "security": [("openssl-libs", "1:3.0.7-25.el9", "1:3.0.7-27.el9"), ("glibc", "2.34-100.el9", "2.34-125.el9")],
    "security_bugfix": [("openssl-libs", "1:3.0.7-25.el9", "1:3.0.7-27.el9"), ("glibc", "2.34-100.el9", "2.34-125.el9"),
                        ("systemd", "252-32.el9", "252-46.el9")],
}
_KERNEL = ("kernel-core", "5.14.0-427.el9", "5.14.0-503.el9")


def package_lines(host: str, update_scope: str) -> list[str]:
    """dnf's `results` for the update task (ansible-core's dnf module, check mode included): the new package
    installed and the old one removed, per package; a kernel where the host will want a reboot."""
    updates = list(_UPDATES.get(update_scope, [*_UPDATES["security_bugfix"], ("bash", "5.1.8-6.el9", "5.1.8-9.el9")]))
    if reboot_required(host, update_scope):
        updates.append(_KERNEL)
    return [line for name, old, new in updates
            for line in (f"Installed: {name}-{new}.x86_64", f"Removed: {name}-{old}.x86_64")]


class _Recorder:
    """Collects events with a relative cost; `plan_run` later spreads them over the running window."""

    def __init__(self) -> None:
        self.items: list[tuple[float, dict[str, Any]]] = []
        self.cost = 0.0

    def emit(self, weight: float, **event: Any) -> None:
        self.cost += weight
        self.items.append((self.cost, event))


def _banner(text: str) -> str:
    return f"\r\n{text} " + "*" * max(3, 72 - len(text))


def _play_tasks(options: RunOptions) -> list[tuple[str, list[tuple[str, float]]]]:
    scope = options.update_scope
    return [
        ("Pre-checks", [("Gathering Facts", 2.0), ("Check free disk space", 1.0),
                        ("Check package repositories are reachable", 1.0)]),
        ("Patching", [("Refresh package metadata", 1.5), (f"Apply updates ({scope})", 5.0),
                      ("Check whether a reboot is required", 1.0)]),
        ("Reboot", [("Reboot the host", 4.0), ("Wait for the host to come back", 2.0)]),
        ("Post-checks", [("Check the running kernel", 1.0), ("Check services are running", 1.0)]),
    ]


def _host_result(play: str, task: str, host: str, options: RunOptions) -> tuple[str, bool, dict[str, Any]]:
    """(event name, changed, res) of one task on one host that is still in the play."""
    dry_run = options.job_type == "check"
    if task == "Gathering Facts" and host in options.unreachable_hosts:
        msg = f"Failed to connect to the host via ssh: ssh: connect to host {host} port 22: Connection timed out"
        return "runner_on_unreachable", False, {"changed": False, "msg": msg, "unreachable": True}
    if task.startswith("Apply updates"):
        if host in options.failed_hosts:
            msg = "Depsolve Error occurred: package conflicts with an installed package"
            return "runner_on_failed", False, {"changed": False, "failed": True, "msg": msg, "rc": 1}
        return "runner_on_ok", not dry_run, {"changed": not dry_run, "msg": "Updates applied" if not dry_run
                                             else "Check mode: updates would be applied",
                                             "results": package_lines(host, options.update_scope)}
    if task == "Check whether a reboot is required":
        return "runner_on_ok", False, {"changed": False,
                                       "reboot_required": reboot_required(host, options.update_scope)}
    if play == "Reboot":
        wanted = {"never": False, "always": True}.get(
            options.reboot_policy, reboot_required(host, options.update_scope))
        if dry_run or not wanted:
            return "runner_on_skipped", False, {"changed": False, "skipped": True,
                                                "skip_reason": "Conditional result was False"}
        rebooted = task == "Reboot the host"
        return "runner_on_ok", rebooted, {"changed": rebooted}
    return "runner_on_ok", False, {"changed": False}


def _result_stdout(event: str, host: str, changed: bool, res: dict[str, Any]) -> str:
    if event == "runner_on_unreachable":
        return f"fatal: [{host}]: UNREACHABLE! => {json.dumps(res)}"
    if event == "runner_on_failed":
        return f"fatal: [{host}]: FAILED! => {json.dumps(res)}"
    if event == "runner_on_skipped":
        return f"skipping: [{host}]"
    return f"{'changed' if changed else 'ok'}: [{host}]"


def _recap(stats: dict[str, dict[str, int]], hosts: list[str]) -> str:
    lines = [_banner("PLAY RECAP")]
    for host in hosts:
        count = {key: stats[key].get(host, 0) for key in STAT_KEYS}
        lines.append(
            f"{host:<26} : ok={count['ok']:<4} changed={count['changed']:<4} unreachable={count['dark']:<4} "
            f"failed={count['failures']:<4} skipped={count['skipped']:<4} rescued={count['rescued']:<4} "
            f"ignored={count['ignored']}"
        )
    return "\r\n".join(lines)


def plan_run(hosts: list[str], options: RunOptions) -> RunPlan:
    """The events of one run over `hosts` (already resolved from the limit), in emission order."""
    if not hosts:
        return _no_hosts_matched()
    rec = _Recorder()
    stats: dict[str, dict[str, int]] = {key: {} for key in STAT_KEYS}

    def count(key: str, host: str) -> None:
        stats[key][host] = stats[key].get(host, 0) + 1

    rec.emit(0.2, event="playbook_on_start", stdout="", event_data={"playbook": PLAYBOOK})
    alive = list(hosts)
    for play, tasks in _play_tasks(options):
        if not alive:
            # Ansible stops the playbook once every host has failed or become unreachable.
            rec.emit(0.1, event="verbose", stdout="\r\nNO MORE HOSTS LEFT " + "*" * 50)
            break
        rec.emit(_PLAY_START_WEIGHT, event="playbook_on_play_start", play=play, stdout=_banner(f"PLAY [{play}]"),
                 event_data={"play": play, "name": play, "pattern": "all"})
        for task, weight in tasks:
            if not alive:
                break
            rec.emit(_TASK_START_WEIGHT, event="playbook_on_task_start", play=play, task=task,
                     stdout=_banner(f"TASK [{task}]"), event_data={"play": play, "task": task, "name": task})
            for host in list(alive):
                event, changed, res = _host_result(play, task, host, options)
                failed = event in ("runner_on_failed", "runner_on_unreachable")
                if event == "runner_on_ok":
                    count("ok", host)
                    if changed:
                        count("changed", host)
                elif event == "runner_on_skipped":
                    count("skipped", host)
                elif event == "runner_on_failed":
                    count("failures", host)
                else:
                    count("dark", host)
                if failed:
                    alive.remove(host)  # a failed or unreachable host gets no further tasks
                data = {"play": play, "task": task, "host": host, "res": res}
                if task.startswith("Apply updates"):
                    data["resolved_action"] = "ansible.builtin.dnf"
                rec.emit(weight / len(hosts), event=event, play=play, task=task, host_name=host,
                         changed=changed, failed=failed, stdout=_result_stdout(event, host, changed, res),
                         event_data=data)
    totals = {key: dict(sorted(per_host.items())) for key, per_host in stats.items()}
    rec.emit(_PLAY_START_WEIGHT, event="playbook_on_stats", stdout=_recap(totals, hosts),
             event_data={**totals, "processed": dict.fromkeys(hosts, 1), "playbook": PLAYBOOK, "artifact_data": {}})
    failed_run = bool(totals["dark"] or totals["failures"])
    return RunPlan(events=_spread(rec, options.run_end), final_status="failed" if failed_run else "successful",
                   ends_at=options.run_end, stats=totals)


def _spread(rec: _Recorder, run_end: float = RUN_END) -> tuple[PlannedEvent, ...]:
    """Map cumulative costs onto the running window, leaving the last half second for the process to exit."""
    window = run_end - 0.5 - RUN_START
    return tuple(
        PlannedEvent(counter=i, emit_at=RUN_START + window * cost / rec.cost, **event)
        for i, (cost, event) in enumerate(rec.items, start=1)
    )


def _no_hosts_matched() -> RunPlan:
    """ansible-playbook refuses to start when the limit matches nothing; the job fails quickly."""
    lines = ("[WARNING]: Could not match supplied host pattern, ignoring: the given limit",
             "ERROR! Specified inventory, host pattern and/or --limit leaves us with no hosts to target.")
    events = tuple(PlannedEvent(counter=i, event="verbose", emit_at=RUN_START + 0.2 * i, stdout=line)
                   for i, line in enumerate(lines, start=1))
    return RunPlan(events=events, final_status="failed", ends_at=RUN_START + 1.0, stats={})
