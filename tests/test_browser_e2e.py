"""The whole system in a real browser: `patchpilot up` on embedded services, headless Chromium driven by
Playwright signs in with a requester's API token, types the README's example into the chat, hands over to an
approver's token, approves the proposal and watches the run to "Patching completed"; then SIGTERM stops
everything and no process is left behind.

Screenshots go to test-artifacts/ (proposal-card.png, progress-completed.png); on a failure the page as it
was (failure.png) and the tails of the service logs are kept there too. Skipped when no Chromium is installed
(`.ci/browser.sh` installs Debian's).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from patchpilot.embedded import pick_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
PROMPT = "Patch server web-01 with Group-1"
# web-01 is production: someone other than the requester approves (each signs in with their own API token).
REQUESTER, APPROVER = "alice", "bob"
# Configuration that would make `up` use outside services, another fleet or another identity: the test wants its own.
NOT_INHERITED = ("DATABASE_URL", "REDIS_URL", "AWX_URL", "AWX_TOKEN", "API_URL", "PATCHPILOT_STATE_DIR",
                 "INVENTORY_FILE", "PATCH_GROUPS_FILE", "PATCHPILOT_TOKEN", "AUTH_MODE")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}


def find_chromium() -> str | None:
    for candidate in (os.environ.get("PATCHPILOT_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class Up:
    """`patchpilot up` as a child process, its output collected by a thread so it never blocks on a full pipe."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.lines: list[str] = []
        self.ports = {name: pick_port(port) for name, port in
                      {"api": 19100, "ui": 19501, "awx": 19152, "pg": 19432, "redis": 19379}.items()}
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        env.update(PYTHONUNBUFFERED="1", LLM_PROVIDER="none")
        self.env = env
        argv = [sys.executable, "-m", "patchpilot", "up", "--state-dir", str(state_dir), "--awx-speed", "10"]
        for name, port in self.ports.items():
            argv += [f"--{name}-port", str(port)]
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until_up(self, timeout: float = 120) -> str:
        """The UI's URL, once `up` printed that everything is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("patchpilot is up" in line for line in self.lines) and "Press Ctrl-C" in self.output:
                match = re.search(r"^\s*UI\s+(http://\S+)", self.output, re.MULTILINE)
                assert match, self.output
                return match.group(1)
            if self.proc.poll() is not None:
                raise AssertionError(f"patchpilot up exited with {self.proc.returncode}:\n{self.output}{self.log_tails()}")
            time.sleep(0.2)
        raise AssertionError(f"patchpilot up was not up within {timeout:.0f}s:\n{self.output}{self.log_tails()}")

    def printed(self, pattern: str) -> str:
        """The first group of a line `up` printed (its URLs, the admin token)."""
        match = re.search(pattern, self.output, re.MULTILINE)
        assert match, f"no line matching {pattern!r}:\n{self.output}"
        return match.group(1)

    def admin_token(self) -> str:
        return self.printed(r"^Local admin API token \(also the UI's default\): (pp_\S+)$")

    def create_token(self, user: str, role: str) -> str:
        """`patchpilot token create` against the embedded PostgreSQL `up` started."""
        database_url = self.printed(r"^\s*PostgreSQL \(embedded\)\s+(\S+)$")
        created = subprocess.run([sys.executable, "-m", "patchpilot", "token", "create", user, "--role", role],
                                 cwd=ROOT, env={**self.env, "DATABASE_URL": database_url},
                                 capture_output=True, text=True, timeout=60, check=False)
        assert created.returncode == 0, created.stdout + created.stderr
        token = created.stdout.strip()
        assert token.startswith("pp_"), created.stdout
        return token

    def recorded_pids(self) -> dict[str, int]:
        return json.loads((self.state_dir / "pids.json").read_text())

    def log_tails(self, chars: int = 1500) -> str:
        parts = []
        for log in sorted((self.state_dir / "logs").glob("*.log")):
            parts.append(f"\n--- {log.name} ---\n{log.read_text(errors='replace')[-chars:]}")
        return "".join(parts)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._reader.join(timeout=5)

    def kill_everything(self) -> None:
        """Last resort after a failed test: the launcher's group and every group it recorded."""
        groups = {self.proc.pid}
        try:
            groups.update(v for v in self.recorded_pids().values() if isinstance(v, int))
        except (OSError, ValueError):
            pass
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait(timeout=10)


def alive(pids: set[int]) -> list[int]:
    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.fixture
def stack(tmp_path):
    up = Up(tmp_path / "state")
    yield up
    if up.proc.poll() is None:  # the test failed before its own clean stop
        try:
            up.stop(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill_everything()


@pytest.fixture
def browser_page(tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium executable (/usr/bin/chromium); .ci/browser.sh installs Debian's chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs the `playwright` Python package (pip install playwright); "
                    "it drives the system Chromium, no browser download is needed")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport=VIEWPORT, locale="en-US",
        )
        context.set_default_timeout(30_000)
        page = context.pages[0] if context.pages else context.new_page()
        try:
            yield page
        finally:
            context.close()


def wait_idle(page) -> None:
    """Until Streamlit finished the current run (its 'Running…' indicator is gone)."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=30_000)


def sign_in(page, token: str, who: str | None) -> None:
    """Paste an API token into the sidebar's field; the sidebar then names who the API sees (`who`)."""
    from playwright.sync_api import expect

    sidebar = page.get_by_test_id("stSidebar")
    field = sidebar.get_by_label("API token", exact=True)
    expect(field).to_have_attribute("type", "password")
    field.fill(token)
    field.press("Enter")
    if who is not None:
        expect(sidebar).to_contain_text(f"Signed in as {who}", timeout=30_000)
    wait_idle(page)


@pytest.mark.timeout(240)
def test_chat_approve_and_watch_the_run_in_a_browser(stack, browser_page):
    from playwright.sync_api import expect

    page = browser_page
    ARTIFACTS.mkdir(exist_ok=True)
    group = yaml.safe_load((ROOT / "fixtures" / "patch-groups.yml").read_text())["Group-1"]
    ui_url = stack.wait_until_up()
    pids = stack.recorded_pids()
    assert set(pids) == {"EmbeddedPostgres", "EmbeddedRedis", "awx-double", "api", "worker", "ui"}, pids
    started = set(pids.values()) | {p.pid for p in psutil.Process(stack.proc.pid).children(recursive=True)}
    admin_token = stack.admin_token()
    tokens = {REQUESTER: stack.create_token(REQUESTER, "requester"), APPROVER: stack.create_token(APPROVER, "approver")}

    try:
        page.goto(ui_url, wait_until="domcontentloaded")
        main = page.get_by_test_id("stMainBlockContainer")
        sidebar = page.get_by_test_id("stSidebar")
        chat = page.get_by_test_id("stChatInputTextArea")
        expect(chat).to_be_editable(timeout=60_000)
        expect(sidebar).to_contain_text("offline rules parser")
        expect(sidebar).to_contain_text("🟢 API · 🟢 Database · 🟢 Broker · 🟢 AWX")
        # `up` hands the UI its local admin token as the default identity.
        expect(sidebar.get_by_label("API token", exact=True)).to_have_value(admin_token)
        expect(sidebar).to_contain_text("Signed in as admin (admin)")

        # A token that is not one: the sidebar says how to sign in, no traceback.
        sign_in(page, "pp_not-a-token", None)
        expect(sidebar).to_contain_text("Not signed in: paste an API token")
        expect(sidebar).to_contain_text("the API token is unknown or revoked")

        sign_in(page, tokens[REQUESTER], f"{REQUESTER} (requester)")
        expect(chat).to_be_editable()
        chat.fill(PROMPT)
        chat.press("Enter")

        approve = main.get_by_role("button", name="Approve", exact=True)
        reject = main.get_by_role("button", name="Reject", exact=True)
        # The requester may withdraw her proposal but not approve it: that is an approver's click.
        expect(reject).to_be_enabled()
        expect(approve).to_be_disabled()
        card = (main.get_by_test_id("stVerticalBlock").filter(has_text="Target hosts")
                .filter(has=page.get_by_role("button", name="Approve", exact=True)).last)
        expect(card).to_contain_text("Patch proposal · 1 host · 📝 proposed")
        expect(card).to_contain_text(f"Signed in as {REQUESTER} (requester): approving needs the approver role.")
        expect(card).to_contain_text("prod (1): web-01")
        expect(card).to_contain_text(f"Patch group: Group-1 — {group['description']}")
        expect(card).to_contain_text("Reboot: Reboot only if needed")
        expect(card).to_contain_text("Dry run: no — changes will be applied")
        wait_idle(page)
        card.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "proposal-card.png"), animations="disabled")

        # The approver takes over the browser: their token goes with every API call from now on.
        sign_in(page, tokens[APPROVER], f"{APPROVER} (approver)")
        expect(approve).to_be_enabled()
        approve.click()
        # Both buttons go disabled at once (a double click sends one request) and the run is followed live.
        # (While Streamlit redraws, the previous run's card can linger for a moment: no enabled button may remain.)
        for name in ("Approve", "Reject"):
            expect(main.get_by_role("button", name=name, exact=True, disabled=False)).to_have_count(0, timeout=15_000)
            expect(main.get_by_role("button", name=name, exact=True, disabled=True)).not_to_have_count(0)
        expect(card).to_contain_text(f"Approved by {APPROVER}")
        # The run's outcome, then the timeline's last stage with the API's label.
        completed = main.get_by_test_id("stAlertContentSuccess").get_by_text("Patching completed", exact=True)
        expect(completed).to_be_visible(timeout=90_000)
        expect(main.get_by_role("strong").filter(has_text=re.compile(r"^Patching completed$"))).to_be_visible()
        expect(main).to_contain_text("✅ succeeded")
        expect(main).not_to_contain_text("Traceback")

        # st.dataframe draws on a canvas; its cells are also in the canvas's accessible table, read here.
        hosts = main.get_by_test_id("stDataFrame").filter(has=page.locator("th", has_text="unreachable"))
        row = hosts.locator("tbody tr").filter(has=page.locator("td", has_text=re.compile(r"^web-01$")))
        expect(row).to_have_count(1)
        cells = row.locator("td")
        expect(cells.nth(1)).to_have_text(re.compile(r"^(ok|changed)$"))  # status
        expect(cells.nth(4)).to_have_text("0")  # failed
        expect(cells.nth(5)).to_have_text("0")  # unreachable
        assert int(cells.nth(2).inner_text()) > 0, cells.all_inner_texts()  # ok tasks
        wait_idle(page)
        hosts.scroll_into_view_if_needed()
        page.mouse.move(VIEWPORT["width"] - 10, VIEWPORT["height"] // 2)  # hover nothing (no table toolbar)
        page.screenshot(path=str(ARTIFACTS / "progress-completed.png"), animations="disabled")
    except BaseException:
        with contextlib.suppress(Exception):  # the screenshot is a clue, not the failure
            page.screenshot(path=str(ARTIFACTS / "failure.png"))
        (ARTIFACTS / "failure-logs.txt").write_text(stack.output + stack.log_tails(4000))
        raise

    page.context.close()
    returncode = stack.stop(timeout=60)
    assert returncode == 0, stack.output
    assert "stopped." in stack.output
    deadline = time.monotonic() + 20
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not alive(started), f"left behind: {alive(started)}\n{stack.output}"
    assert not (stack.state_dir / "pids.json").exists()
