"""Record the job events of real runs of playbooks/patch.yml, for the AWX double to replay.

Runs the reference playbook with ansible-runner (the event callback AWX itself uses) against this machine
through `connection: local`, ALWAYS in check mode (`--check`; the run refuses to start without it), so nothing
on the machine changes: every task that acts honours check mode (apt simulates, the reboot is skipped in check
mode) and the ones marked `check_mode: false` only read (df, pgrep, apt-get --simulate, uptime).

Four streams, two hosts each (both this machine, so the events interleave as they do for a real fleet):
- success      both hosts pass;
- item_failed  host web-02 needs more free space on /var than there is (an extra var templated per host): one
               item of the "Check free disk space" loop fails (runner_item_on_failed) and the task fails with
               "One or more items failed";
- unreachable  host web-02 is an SSH host on a closed port of 127.0.0.1 (runner_on_unreachable);
- stopped      the run is stopped (as an AWX cancel stops it) once the "Patching" play has started.

Usage (once; the JSON files are committed and the tests read only them):
    .venv/bin/pip install ansible-runner
    .venv/bin/python -m bench.record_streams            # writes awx_double/streams/*.json
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "playbooks" / "patch.yml"
OUT = ROOT / "awx_double" / "streams"
MAX_EVENT_RES = 700000  # AWX's MAX_EVENT_RES_DATA, passed to the callback as AWX does
LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}

SCENARIOS = {
    "success": {"web-01": LOCAL, "web-02": LOCAL},
    "item_failed": {"web-01": LOCAL, "web-02": LOCAL},
    "unreachable": {"web-01": LOCAL, "web-02": {"ansible_connection": "ssh", "ansible_host": "127.0.0.1",
                                                "ansible_port": 1, "ansible_user": "nobody"}},
    "stopped": {"web-01": LOCAL, "web-02": LOCAL},
}

# Extra vars win over the play's vars; templated per host, so only web-02 needs more space than /var has.
EXTRA_VARS = {"item_failed": {"min_free_mb_var": "{{ 99999999 if inventory_hostname == 'web-02' else 1 }}"}}


def record(name: str, hosts: dict[str, dict]) -> dict:
    import ansible_runner

    events: list[dict] = []
    stop = {"now": False}

    def on_event(event: dict) -> bool:
        events.append(event)
        if name == "stopped" and event.get("event") == "playbook_on_play_start" \
                and (event.get("event_data") or {}).get("play") == "Patching":
            stop["now"] = True
        return True

    cmdline = "--check"
    assert "--check" in cmdline.split()  # never without check mode
    with tempfile.TemporaryDirectory() as tmp:
        inventory = {"all": {"hosts": hosts}}
        result = ansible_runner.run(
            private_data_dir=tmp, playbook=str(PLAYBOOK), inventory=inventory, cmdline=cmdline,
            extravars={"patchpilot_request_id": "recorded-" + name, "update_scope": "security",
                       "reboot_policy": "if_needed", "package_lock_wait_seconds": 10, **EXTRA_VARS.get(name, {})},
            envvars={"MAX_EVENT_RES": str(MAX_EVENT_RES), "ANSIBLE_HOST_KEY_CHECKING": "False"},
            event_handler=on_event, cancel_callback=lambda: stop["now"], quiet=True,
        )
        status, rc = result.status, result.rc
    shown = " ".join(e.get("stdout", "") for e in events)
    if "check_mode=True" not in shown:
        raise SystemExit(f"{name}: the run did not report check mode; refusing to keep it")
    return {
        "scenario": name,
        "recorded_with": {
            "ansible-core": version("ansible-core"), "ansible-runner": version("ansible-runner"),
            "python": platform.python_version(), "os": _os_name(), "mode": "check (--check), connection local",
            "max_event_res": MAX_EVENT_RES,
        },
        "hosts": sorted(hosts),
        "runner_status": status, "rc": rc,
        "events": events,
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def main(argv: list[str]) -> int:
    # ansible-playbook lives next to this interpreter (the venv's bin), which may not be on PATH
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    OUT.mkdir(parents=True, exist_ok=True)
    for name in argv or list(SCENARIOS):
        data = record(name, SCENARIOS[name])
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"{path.relative_to(ROOT)}: {len(data['events'])} events, {path.stat().st_size} bytes, "
              f"status {data['runner_status']} rc {data['rc']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
