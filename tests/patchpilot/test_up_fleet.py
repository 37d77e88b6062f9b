"""`patchpilot up --fleet DIR`: another fleet's inventory, patch groups and policy for every process, the AWX
double included, so a chat about that fleet's hosts runs end to end."""

import os
import signal
import subprocess
import sys

import httpx
import pytest
from test_up import CONFIGURED, ROOT, admin_token, approve_and_wait, wait_until_up

from patchpilot.cli import use_fleet

ENTERPRISE = ROOT / "fixtures" / "enterprise"


def test_use_fleet_points_every_setting_at_the_folder(monkeypatch):
    from core.settings import get_settings, reset_settings_cache

    monkeypatch.setattr(os, "environ", dict(os.environ))  # use_fleet writes the environment: keep it to this test
    try:
        use_fleet(str(ENTERPRISE))
        assert os.environ["INVENTORY_FILE"] == str(ENTERPRISE / "inventory.yml")
        assert get_settings().policy_file == ENTERPRISE / "policy.yml"
    finally:
        reset_settings_cache()


def test_a_folder_without_the_three_files_is_one_clear_error_and_changes_nothing(tmp_path):
    (tmp_path / "inventory.yml").write_text("all: {}\n")
    before = dict(os.environ)
    with pytest.raises(SystemExit, match="patch-groups.yml, policy.yml are missing"):
        use_fleet(str(tmp_path))
    assert dict(os.environ) == before  # no setting points at half a fleet


@pytest.mark.integration
def test_up_with_another_fleet_runs_a_chat_about_its_hosts(tmp_path, ports):
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED}
    argv = [sys.executable, "-m", "patchpilot", "up", "--state-dir", str(tmp_path / "state"), "--awx-speed", "20",
            "--no-ui", "--fleet", str(ENTERPRISE)]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = "".join(wait_until_up(proc))
        api, auth = f"http://127.0.0.1:{ports['api']}", {"Authorization": f"Bearer {admin_token(output)}"}
        # a short form that only one host of this fleet ends with, outside production (self-approval allowed)
        chat = httpx.post(f"{api}/api/v1/chat", json={"text": "patch dev web-03 in ber1 with the monthly baseline"},
                          headers=auth, timeout=10).json()
        assert chat["proposal"] is not None, chat["reply"]
        assert [h["name"] for h in chat["proposal"]["hosts"]] == ["ber1-dev-web-03"]
        assert chat["proposal"]["patch_group"] == "monthly-standard"
        request_id = chat["proposal"]["id"]
        view = approve_and_wait(api, auth, request_id)
        assert view["state"] == "succeeded", view  # the AWX double knows this fleet's hosts too
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
