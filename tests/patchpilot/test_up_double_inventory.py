"""`patchpilot up --double-inventory F --double-patch-groups G`: a fleet patchpilot has never seen, with no policy and
its own job template in its own organization, answers a chat about one of its hosts with a proposal, through the
real path (the inventory synced from the AWX double into PostgreSQL), with no other setting."""

import os
import signal
import subprocess
import sys

import httpx
import pytest
import yaml
from test_up import CONFIGURED, ROOT, admin_token, wait_until_up

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INVENTORY = {"all": {"children": {
    "harbour": {"children": {
        "harbour_cranes": {"hosts": {
            "crane-ctl-7": {"ansible_host": "crane-ctl-7.port.example", "os_family": "Debian"},
            "crane-ctl-8": {"ansible_host": "crane-ctl-8.port.example", "os_family": "Debian"}}},
        "harbour_gates": {"hosts": {"gate-scan-1": {"os_family": "RedHat"}}}}},
    "warehouse": {"hosts": {"shelf-bot-3": {"os_family": "RedHat"}}}}}}
PATCH_GROUPS = {"quarterly": {"description": "Quarterly OS baseline", "job_template": "OS baseline (port)",
                              "organization": "Port Authority", "extra_vars": {"update_scope": "full"}}}
SETTINGS = ("INVENTORY_SOURCE", "AWX_INVENTORY", "INVENTORY_FILE", "PATCH_GROUPS_FILE", "POLICY_FILE",
            "AWX_DEFAULT_JOB_TEMPLATE")


def test_up_with_a_fleet_file_it_never_saw_proposes_for_its_hosts(tmp_path, ports):
    inventory, groups = tmp_path / "harbour.yml", tmp_path / "harbour-groups.yml"
    inventory.write_text(yaml.safe_dump(INVENTORY))
    groups.write_text(yaml.safe_dump(PATCH_GROUPS))
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED + SETTINGS}
    argv = [sys.executable, "-m", "patchpilot", "up", "--state-dir", str(tmp_path / "state"), "--awx-speed", "20",
            "--no-ui", "--double-inventory", str(inventory), "--double-patch-groups", str(groups)]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = "".join(wait_until_up(proc))
        assert "inventory synced from AWX: snapshot 1, 4 hosts" in output, output
        api, auth = f"http://127.0.0.1:{ports['api']}", {"Authorization": f"Bearer {admin_token(output)}"}
        chat = httpx.post(f"{api}/api/v1/chat", json={"text": "patch crane-ctl-7 with quarterly"}, headers=auth,
                          timeout=10).json()
        assert chat["proposal"] is not None, chat["reply"]
        assert [h["name"] for h in chat["proposal"]["hosts"]] == ["crane-ctl-7"]
        system = httpx.get(f"{api}/api/v1/system", headers=auth, timeout=10).json()
        assert system["inventory"]["source"] == "awx" and system["inventory"]["hosts"] == 4
        assert system["inventory"]["problems"] == [], system["inventory"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
