"""playbooks/patch.yml: the four stage plays, check mode, the extra variables patchpilot sends."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .render import PLAYBOOK, REPO_ROOT

STAGES = ["Pre-checks", "Patching", "Reboot", "Post-checks"]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def plays() -> list[dict]:
    with PLAYBOOK.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _tasks(plays: list[dict]) -> list[dict]:
    sections = ("pre_tasks", "tasks", "post_tasks", "handlers")
    return [task for play in plays for section in sections for task in play.get(section) or []]


def _module(task: dict) -> str:
    keys = set(task) - {"name", "when", "register", "vars", "loop", "loop_control", "changed_when", "failed_when",
                        "check_mode", "until", "retries", "delay", "become", "tags", "notify", "environment", "no_log"}
    assert len(keys) == 1, f"{task.get('name')}: cannot tell the module from {sorted(keys)}"
    return keys.pop()


def _when(task: dict) -> list[str]:
    when = task.get("when") or []
    return [when] if isinstance(when, str) else list(when)


def test_four_stage_plays_in_order(plays: list[dict]) -> None:
    assert [play["name"] for play in plays] == STAGES


def test_every_task_is_named_and_uses_fqcn(plays: list[dict]) -> None:
    for task in _tasks(plays):
        assert task.get("name"), task
        assert _module(task).startswith("ansible.builtin."), task["name"]


def test_reboot_is_guarded_by_check_mode(plays: list[dict]) -> None:
    reboots = [t for t in _tasks(plays) if _module(t) == "ansible.builtin.reboot"]
    assert reboots, "the Reboot play must reboot"
    for task in reboots:
        assert "not ansible_check_mode" in _when(task), task["name"]
    reboot_play = next(p for p in plays if p["name"] == "Reboot")
    assert reboots[0] in reboot_play["tasks"]


def test_tasks_forced_to_run_in_check_mode_are_read_only(plays: list[dict]) -> None:
    """`check_mode: false` makes a task run for real under --check: only read-only commands may do that."""
    read_only = {("df",), ("pgrep",), ("uptime",), ("needs-restarting",), ("apt-get", "--simulate"),
                 ("dnf", "-q", "updateinfo")}
    for task in _tasks(plays):
        if task.get("check_mode") is not False:
            continue
        assert task.get("changed_when") is False, task["name"]
        assert _module(task) == "ansible.builtin.command", task["name"]
        argv = task["ansible.builtin.command"]["argv"]
        words = re.findall(r"[\w.-]+", argv) if isinstance(argv, str) else argv  # a templated argv: its literal words
        assert any(tuple(words[: len(prefix)]) == prefix for prefix in read_only), f"{task['name']}: {argv}"


def test_state_changing_commands_skip_in_check_mode(plays: list[dict]) -> None:
    for task in _tasks(plays):
        runs_a_command = _module(task) in {"ansible.builtin.command", "ansible.builtin.shell"}
        if runs_a_command and task.get("check_mode") is not False:
            assert "not ansible_check_mode" in _when(task), task["name"]


def test_extra_variables(plays: list[dict]) -> None:
    text = PLAYBOOK.read_text(encoding="utf-8")
    debug_msgs = [str(t["ansible.builtin.debug"]) for t in _tasks(plays) if _module(t) == "ansible.builtin.debug"]
    assert any("patchpilot_request_id" in msg for msg in debug_msgs), "echo patchpilot_request_id in a debug task"
    for name in ("update_scope", "severities", "reboot_policy", "post_check_services"):
        assert name in text
    assert "needs-restarting" in text and "/var/run/reboot-required" in text


def test_patch_groups_use_values_the_playbook_accepts() -> None:
    with (REPO_ROOT / "fixtures" / "patch-groups.yml").open(encoding="utf-8") as fh:
        groups = yaml.safe_load(fh)
    for name, group in groups.items():
        extra = group.get("extra_vars") or {}
        assert extra.get("update_scope", "security") in {"security", "security_bugfix", "full"}, name
        assert extra.get("reboot_policy", "if_needed") in {"never", "if_needed", "always"}, name
        assert isinstance(extra.get("severities", []), list), name


@pytest.mark.parametrize(
    ("scope", "line", "selected"),
    [
        ("security",
         "Inst libssl3 [3.0.11-1~deb12u1] (3.0.11-1~deb12u2 Debian-Security:12/stable-security [amd64])", True),
        ("security",
         "Inst libgcrypt20 [1.10.1-3] "
         "(1.10.1-3+deb12u1 Debian:12.9/stable, Debian-Security:12/stable-security [amd64])", True),
        ("security", "Inst openssl [3.0.2-0ubuntu1.15] (3.0.2-0ubuntu1.18 Ubuntu:22.04/jammy-security [amd64])", True),
        ("security", "Inst tzdata [2024a-0+deb12u1] (2025b-0+deb12u1 Debian:12.11/stable-updates [all])", False),
        ("security", "Inst base-files [12.4+deb12u11] (12.4+deb12u15 Debian:12.15/stable [amd64])", False),
        ("security_bugfix", "Inst tzdata [2024a-0+deb12u1] (2025b-0+deb12u1 Debian:12.11/stable-updates [all])", True),
        ("security_bugfix", "Inst base-files [12.4+deb12u11] (12.4+deb12u15 Debian:12.15/stable [amd64])", False),
    ],
)
def test_apt_origin_filter(plays: list[dict], scope: str, line: str, selected: bool) -> None:
    patterns = next(p for p in plays if p["name"] == "Patching")["vars"]["apt_origin_patterns"]
    assert bool(re.search(patterns[scope], line)) is selected


# ------------------------------------------------------------------------------------------ with Ansible


def _ansible_tool(name: str) -> str | None:
    candidate = VENV_BIN / name
    return str(candidate) if candidate.exists() else shutil.which(name)


def _ansible_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_HOME=str(tmp_path / "home"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_RETRY_FILES_ENABLED="0")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_ansible_syntax_check(tmp_path: Path) -> None:
    tool = _ansible_tool("ansible-playbook")
    if tool is None:
        pytest.skip("ansible-core is not installed (pip install ansible-core)")
    result = subprocess.run([tool, "--syntax-check", "-i", "localhost,", str(PLAYBOOK)], capture_output=True,
                            text=True, timeout=120, env=_ansible_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile(tmp_path: Path) -> None:
    pytest.importorskip("ansiblelint", reason="ansible-lint is not installed (pip install ansible-lint ansible-core)")
    tool = _ansible_tool("ansible-lint")
    assert tool, "ansible-lint is importable but its command is missing"
    result = subprocess.run([tool, "--offline", "--nocolor", "--profile", "production", PLAYBOOK.name],
                            capture_output=True, text=True, timeout=180, cwd=PLAYBOOK.parent,
                            env=_ansible_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_mode_run_changes_nothing_and_never_reboots(tmp_path: Path) -> None:
    """Run the whole playbook with --check against this machine: it must pass and skip the reboot."""
    tool = _ansible_tool("ansible-playbook")
    if tool is None:
        pytest.skip("ansible-core is not installed (pip install ansible-core)")
    python = shutil.which("python3", path="/usr/bin") or sys.executable
    family = None
    if Path("/etc/debian_version").exists() and shutil.which("apt-get"):
        family = "Debian"
        if subprocess.run([python, "-c", "import apt"], capture_output=True).returncode != 0:
            pytest.skip(f"the apt module needs python3-apt for {python} to run in check mode")
    elif Path("/etc/redhat-release").exists() and shutil.which("dnf"):
        family = "RedHat"
    if family is None:
        pytest.skip("this machine is neither a Debian nor a RedHat family host with its package manager")
    extra = ('{"patchpilot_request_id": "req-check-mode", "reboot_policy": "always", "update_scope": "security", '
             '"min_free_mb_root": 1, "min_free_mb_var": 1, "package_lock_wait_seconds": 10}')
    result = subprocess.run(
        [tool, "--check", "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={python}",
         "-e", "ansible_become=false", "-e", extra, str(PLAYBOOK)],
        capture_output=True, text=True, timeout=300, env=_ansible_env(tmp_path),
    )
    output = result.stdout + result.stderr
    if family == "RedHat" and "needs-restarting" in output and result.returncode != 0:
        pytest.skip("needs-restarting is not installed on this RedHat host")
    assert result.returncode == 0, output[-4000:]
    assert "req-check-mode" in output
    assert re.search(r"TASK \[Reboot the host\][^\n]*\n(skipping|\s*skipping): \[localhost\]", output), output[-4000:]
    assert "Would reboot (check mode: not rebooting)" in output
    for stage in STAGES:
        assert f"PLAY [{stage}]" in output
