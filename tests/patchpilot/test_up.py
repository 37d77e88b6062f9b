"""`patchpilot up` on embedded services: it starts, serves a patch run, and stops leaving no process behind;
after a crash a second `up` cleans what the first one left."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
CONFIGURED = ("DATABASE_URL", "REDIS_URL", "AWX_URL", "AWX_TOKEN", "API_URL")


def start_up(state_dir: Path, ports: dict[str, int]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED}  # embedded everything
    argv = [sys.executable, "-m", "patchpilot", "up", "--state-dir", str(state_dir), "--awx-speed", "20", "--no-ui"]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until_up(proc: subprocess.Popen, timeout: float = 120) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError("up exited early:\n" + "".join(lines))
        lines.append(line)
        if "Press Ctrl-C to stop." in line:
            return lines
    raise AssertionError("up did not become ready:\n" + "".join(lines))


def admin_token(output: str) -> str:
    match = re.search(r"Local admin API token .*: (pp_\S+)", output)
    assert match, output
    return match.group(1)


def approve_and_wait(api: str, auth: dict[str, str], request_id: str, timeout: float = 60) -> dict:
    """Approve a proposal and follow it until it ends (or the time is up): the request's last view."""
    assert httpx.post(f"{api}/api/v1/requests/{request_id}/approve", headers=auth, timeout=10).status_code == 200
    deadline = time.monotonic() + timeout
    while True:
        view = httpx.get(f"{api}/api/v1/requests/{request_id}", headers=auth, timeout=10).json()
        if view["terminal"] or time.monotonic() > deadline:
            return view
        time.sleep(0.3)


def recorded_pids(state_dir: Path) -> list[int]:
    return list(json.loads((state_dir / "pids.json").read_text()).values())


def assert_all_gone(pids: list[int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return
        time.sleep(0.3)
    raise AssertionError(f"processes left behind: {alive}")


def test_up_runs_a_patch_and_stops_cleanly(tmp_path, ports):
    proc = start_up(tmp_path / "state", ports)
    try:
        output = "".join(wait_until_up(proc))
        assert f"http://127.0.0.1:{ports['api']}" in output
        auth = {"Authorization": f"Bearer {admin_token(output)}"}
        assert "PostgreSQL (embedded)" in output and "Redis (embedded)" in output and "AWX test double" in output
        pids = recorded_pids(tmp_path / "state")
        assert len(pids) == 5  # postgres, redis, awx double, api, worker

        api = f"http://127.0.0.1:{ports['api']}"
        assert httpx.get(f"{api}/api/v1/me", timeout=10).status_code == 401  # no token, no access
        for user, role in (("alice", "requester"), ("bob", "approver")):  # the printed demo identities
            demo = re.search(rf"demo {role} {user}: (pp_\S+)", output).group(1)
            me = httpx.get(f"{api}/api/v1/me", headers={"Authorization": f"Bearer {demo}"}, timeout=10).json()
            assert me == {"user": user, "roles": [role], "via": "token"}
        # The local admin may approve their own request outside production (the demo policy allows it).
        chat = httpx.post(f"{api}/api/v1/chat", json={"text": "Patch server dev-web-01 with Group-1"},
                          headers=auth, timeout=10).json()
        request_id = chat["proposal"]["id"]
        view = approve_and_wait(api, auth, request_id, timeout=60)
        assert view["state"] == "succeeded" and view["stages"][-1]["label"] == "Patching completed"
        metrics = httpx.get(f"http://127.0.0.1:{ports['worker-metrics']}/metrics", timeout=10).text
        assert 'patchpilot_requests{state="succeeded"} 1.0' in metrics
        assert 'patchpilot_awx_launches_total{outcome="launched"} 1.0' in metrics
        api_metrics = httpx.get(f"http://127.0.0.1:{ports['api-metrics']}/metrics", timeout=10).text
        assert 'patchpilot_request_transitions_total{to_state="approved"} 1.0' in api_metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert "stopped." in rest
    assert_all_gone(pids)
    assert not (tmp_path / "state" / "pids.json").exists()


def test_second_up_after_a_crash_cleans_up_and_reuses_the_data(tmp_path, ports):
    state = tmp_path / "state"
    first = start_up(state, ports)
    first_output = "".join(wait_until_up(first))
    api = f"http://127.0.0.1:{ports['api']}"
    auth = {"Authorization": f"Bearer {admin_token(first_output)}"}
    chat = httpx.post(f"{api}/api/v1/chat", json={"text": "Patch web-02 with Group-2"}, headers=auth, timeout=10).json()
    orphans = recorded_pids(state)
    first.kill()  # the launcher dies without cleaning up; its children live on
    first.wait()
    assert any(psutil.pid_exists(p) for p in orphans)

    second = start_up(state, ports)
    try:
        output = "".join(wait_until_up(second))
        assert "cleaned" in output
        assert_all_gone(orphans)
        assert admin_token(output) == admin_token(first_output)  # the quick-start token is kept
        view = httpx.get(f"{api}/api/v1/requests/{chat['proposal']['id']}", headers=auth, timeout=10).json()
        assert view["state"] == "proposed"  # the embedded database kept the data
        pids = recorded_pids(state)
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=60)
    assert second.returncode == 0
    assert_all_gone(pids)


def test_up_restarts_a_child_that_dies_and_the_ui_keeps_working(tmp_path, ports):
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED}
    argv = [sys.executable, "-m", "patchpilot", "up", "--state-dir", str(state), "--awx-speed", "20"]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        lines += wait_until_up(proc, timeout=180)
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        reader.start()
        api = f"http://127.0.0.1:{ports['api']}"
        ui = f"http://127.0.0.1:{ports['ui']}/_stcore/health"
        auth = {"Authorization": f"Bearer {admin_token(''.join(lines))}"}
        assert httpx.get(ui, timeout=10).status_code == 200

        for name in ("api", "worker"):
            pid = json.loads((state / "pids.json").read_text())[name]
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            deadline = killed + 30
            while True:
                pids = json.loads((state / "pids.json").read_text())
                if pids[name] != pid and any(f"{name} restarted" in line for line in lines):
                    break
                assert proc.poll() is None, "".join(lines)
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.2)
            while True:  # back within seconds
                try:
                    if httpx.get(f"{api}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.2)
            assert time.monotonic() - killed < 20
            assert httpx.get(ui, timeout=10).status_code == 200  # the UI never went away
            assert any(f"{name} exited with code" in line for line in lines)
            leftovers = [p for p in psutil.process_iter() if _in_group(p, pid)]
            assert not leftovers, leftovers  # its pool and embedded beat went with it

        # The restarted worker and API still run a patch to the end.
        chat = httpx.post(f"{api}/api/v1/chat", json={"text": "Patch server dev-app-01 with Group-1"},
                          headers=auth, timeout=10).json()
        request_id = chat["proposal"]["id"]
        view = approve_and_wait(api, auth, request_id, timeout=90)
        assert view["state"] == "succeeded", view
        pids = recorded_pids(state)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C still stops everything
        proc.wait(timeout=90)
    assert proc.returncode == 0, "".join(lines)
    assert_all_gone(pids)


def _in_group(proc: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE
    except (ProcessLookupError, psutil.Error):
        return False
