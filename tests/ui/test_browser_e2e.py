"""The whole system in a real browser: `patchpilot up` on embedded services and two people in two headless
Chromium contexts driven by Playwright. alice (requester) proposes a production patch in the chat; bob
(approver) finds it in his approvals inbox, opens its link and approves; both pages follow the run live to
completion with a truthful timeline and the AWX job number; a local webhook receiver gets the four messages;
then SIGTERM stops everything and no process is left behind.

Screenshots go to test-artifacts/ (proposal-card.png, inbox.png, progress-completed.png) with the measured
latencies (latency.json); on a failure the pages as they were (failure-*.png) and the tails of the service logs
are kept there too. Skipped when no Chromium is installed (`.ci/system-packages.sh` installs Debian's).
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

import httpx
import psutil
import pytest
import yaml

from patchpilot.embedded import pick_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
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
PHONE = {"width": 390, "height": 844}


def find_chromium() -> str | None:
    for candidate in (os.environ.get("PATCHPILOT_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class Up:
    """`patchpilot up` as a child process, its output collected by a thread so it never blocks on a full pipe."""

    def __init__(self, state_dir: Path, extra_env: dict[str, str] | None = None):
        self.state_dir = state_dir
        self.lines: list[str] = []
        self.ports = {name: pick_port(port) for name, port in
                      {"api": 19100, "ui": 19501, "awx": 19152, "pg": 19432, "redis": 19379}.items()}
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        env.update(PYTHONUNBUFFERED="1", LLM_PROVIDER="none", UI_BASE_URL=f"http://127.0.0.1:{self.ports['ui']}",
                   **(extra_env or {}))
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
                raise AssertionError(
                    f"patchpilot up exited with {self.proc.returncode}:\n{self.output}{self.log_tails()}")
            time.sleep(0.2)
        raise AssertionError(f"patchpilot up was not up within {timeout:.0f}s:\n{self.output}{self.log_tails()}")

    def printed(self, pattern: str) -> str:
        """The first group of a line `up` printed (its URLs, the admin token)."""
        match = re.search(pattern, self.output, re.MULTILINE)
        assert match, f"no line matching {pattern!r}:\n{self.output}"
        return match.group(1)

    def admin_token(self) -> str:
        return self.printed(r"^Local admin API token \(also the UI's default\): (pp_\S+)$")

    def demo_token(self, user: str) -> str:
        """The quick start's demo people, whose tokens `up` prints (`  demo requester alice: pp_…`)."""
        return self.printed(rf"^\s*demo \w+ {user}: (pp_\S+)$")

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
def stack(tmp_path, receiver):
    hooks = [{"name": name, "url": f"{receiver.url}/{name}", "format": name} for name in ("slack", "teams", "generic")]
    up = Up(tmp_path / "state", {"NOTIFY_WEBHOOKS": json.dumps(hooks), "NOTIFY_INTERVAL_SECONDS": "0.5"})
    yield up
    if up.proc.poll() is None:  # the test failed before its own clean stop
        try:
            up.stop(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill_everything()


@pytest.fixture
def browser(tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium executable (/usr/bin/chromium); .ci/system-packages.sh installs Debian's chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs the `playwright` Python package (pip install playwright); "
                    "it drives the system Chromium, no browser download is needed")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def new_page(browser, viewport=VIEWPORT):
    """A browser context of its own (cookies, session): one person."""
    context = browser.new_context(viewport=viewport, locale="en-US")
    context.set_default_timeout(30_000)
    return context.new_page()


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


def proposal_card(page):
    main = page.get_by_test_id("stMainBlockContainer")
    return (main.get_by_test_id("stVerticalBlock").filter(has_text="Target hosts")
            .filter(has=page.get_by_role("button", name="Approve", exact=True)).last)


STAGE_SHOWN = re.compile(r"^(Pre-checks running|Pre-checks passed)$")


@pytest.mark.timeout(300)
def test_four_eyes_hand_off_live_run_and_notifications_in_two_browsers(stack, browser, receiver):
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)  # two browsers and the whole stack share 2 cores
    ARTIFACTS.mkdir(exist_ok=True)
    group = yaml.safe_load((ROOT / "fixtures" / "patch-groups.yml").read_text())["Group-1"]
    ui_url = stack.wait_until_up().rstrip("/")
    pids = stack.recorded_pids()
    assert set(pids) == {"EmbeddedPostgres", "EmbeddedRedis", "awx-double", "api", "worker", "ui"}, pids
    started = set(pids.values()) | {p.pid for p in psutil.Process(stack.proc.pid).children(recursive=True)}
    admin_token = stack.admin_token()
    tokens = {user: stack.demo_token(user) for user in (REQUESTER, APPROVER)}
    alice, bob = new_page(browser), new_page(browser)
    pages = {"alice": alice, "bob": bob}

    try:
        # --- alice proposes a production patch -------------------------------------------------------
        alice.goto(ui_url, wait_until="domcontentloaded")
        main = alice.get_by_test_id("stMainBlockContainer")
        sidebar = alice.get_by_test_id("stSidebar")
        chat = alice.get_by_test_id("stChatInputTextArea")
        expect(chat).to_be_editable(timeout=60_000)
        expect(sidebar).to_contain_text("offline rules parser")
        expect(sidebar).to_contain_text("🟢 API · 🟢 Database · 🟢 Broker · 🟢 AWX")
        expect(sidebar.get_by_label("API token", exact=True)).to_have_value(admin_token)
        expect(sidebar).to_contain_text("Signed in as admin (admin)")
        # No developer controls in the header: an operator could read "Stop" as stopping the patch run.
        expect(alice.get_by_test_id("stAppDeployButton")).to_be_hidden()
        expect(alice.get_by_role("button", name="Stop", exact=True)).to_have_count(0)

        sign_in(alice, "pp_not-a-token", None)
        expect(sidebar).to_contain_text("Not signed in: paste an API token")
        expect(sidebar).to_contain_text("the API token is unknown or revoked")

        sign_in(alice, tokens[REQUESTER], f"{REQUESTER} (requester)")
        expect(chat).to_be_editable()
        chat.fill(PROMPT)
        chat.press("Enter")

        card = proposal_card(alice)
        approve = card.get_by_role("button", name="Approve", exact=True)
        reject = card.get_by_role("button", name="Reject", exact=True)
        expect(card).to_be_visible(timeout=60_000)  # the first chat turn loads the parser's vocabulary
        # Production needs someone else: Approve is off before any click, with the reason; she may withdraw it.
        expect(approve).to_be_disabled()
        expect(reject).to_be_enabled()
        expect(card).to_contain_text("Patch proposal · 1 host · 📝 proposed · requested by alice")
        expect(card).to_contain_text("approving needs the approver role")
        expect(card).to_contain_text("prod (1): web-01")
        expect(card).to_contain_text(f"Patch group: Group-1 — {group['description']}")
        expect(card).to_contain_text("Reboot: Reboot only if needed")
        expect(card).to_contain_text("Dry run: no — changes will be applied")
        # The conversation is in the URL: a reload keeps it.
        expect(alice).to_have_url(re.compile(r"\?conversation=[0-9a-f]{32}$"))
        alice.reload(wait_until="domcontentloaded")
        sign_in(alice, tokens[REQUESTER], f"{REQUESTER} (requester)")
        expect(card).to_contain_text("Patch proposal · 1 host · 📝 proposed")
        wait_idle(alice)
        card.scroll_into_view_if_needed()
        alice.screenshot(path=str(ARTIFACTS / "proposal-card.png"), animations="disabled")

        # --- bob finds it in his inbox and opens its link ---------------------------------------------
        bob.goto(ui_url, wait_until="domcontentloaded")
        bob_sidebar = bob.get_by_test_id("stSidebar")
        bob_main = bob.get_by_test_id("stMainBlockContainer")
        sign_in(bob, tokens[APPROVER], f"{APPROVER} (approver)")
        expect(bob_sidebar).to_contain_text("📥 1 waiting for your approval")
        bob_sidebar.get_by_role("radiogroup").get_by_text("Approvals", exact=True).click()
        expect(bob_main).to_contain_text("1 proposal waiting for your approval")
        entry = bob_main.get_by_test_id("stVerticalBlock").filter(has_text="alice asks:").last
        expect(entry).to_contain_text("alice asks: Patch prod (1): web-01 with Group-1")
        expect(entry).to_contain_text("expires at")
        link = re.search(r"\?request=([0-9a-f]{32})", entry.inner_text())
        assert link, entry.inner_text()
        request_id = link.group(1)
        wait_idle(bob)
        bob.screenshot(path=str(ARTIFACTS / "inbox.png"), animations="disabled")

        bob.goto(f"{ui_url}/?request={request_id}", wait_until="domcontentloaded")
        sign_in(bob, tokens[APPROVER], f"{APPROVER} (approver)")
        expect(bob).to_have_url(re.compile(rf"\?request={request_id}$"))
        bob_card = proposal_card(bob)
        bob_approve = bob_card.get_by_role("button", name="Approve", exact=True)
        expect(bob_approve).to_be_enabled()
        wait_idle(bob)
        bob_approve.click()
        clicked = time.monotonic()
        expect(bob_main.get_by_text(STAGE_SHOWN)).to_be_visible(timeout=60_000)
        first_stage = time.monotonic() - clicked

        # --- alice's page notices on its own, and both follow the run to its end ----------------------
        expect(main).to_contain_text(f"Approved by {APPROVER}", timeout=30_000)
        expect(main.get_by_role("button", name="Approve", exact=True)).to_have_count(0)
        expect(main.get_by_role("button", name="Reject", exact=True)).to_have_count(0)
        job = None
        for who, page in pages.items():
            body = page.get_by_test_id("stMainBlockContainer")
            done = body.get_by_test_id("stAlertContentSuccess").filter(has_text="Patching completed: web-01")
            expect(done).to_be_visible(timeout=90_000)
            # The truthful timeline: web-01 needed no reboot (the job events say skipped), and after the end
            # nothing reads "in progress".
            expect(body.get_by_text("Reboot skipped (not needed)", exact=True)).to_be_visible()
            expect(body.get_by_text("Patched", exact=True)).to_be_visible()
            expect(body.get_by_text("Post-checks passed", exact=True)).to_be_visible()
            expect(body).not_to_contain_text("in progress")
            expect(body).not_to_contain_text("Traceback")
            # What the run changed, package by package, from its package task's results.
            expect(body.get_by_text(re.compile(r"^Packages changed: \d+ on 1 host$"))).to_be_visible()
            text = body.inner_text()
            found = re.search(r"AWX job (\d+) · ✅ succeeded", text)
            assert found, (who, text)
            assert job in (None, found.group(1)), (job, found.group(1))
            job = found.group(1)
            assert "Run " not in text and "None" not in text, text
        # The chat says how it ended, with the same name.
        expect(main).to_contain_text(f"AWX job {job} succeeded: web-01")

        # st.dataframe draws on a canvas; its cells are also in the canvas's accessible table, read here.
        hosts = bob_main.get_by_test_id("stDataFrame").filter(has=bob.locator("th", has_text="unreachable"))
        row = hosts.locator("tbody tr").filter(has=bob.locator("td", has_text=re.compile(r"^web-01$")))
        expect(row).to_have_count(1)
        cells = row.locator("td")
        expect(cells.nth(1)).to_have_text(re.compile(r"^(ok|changed)$"))
        expect(cells.nth(4)).to_have_text("0")
        expect(cells.nth(5)).to_have_text("0")
        wait_idle(bob)
        hosts.scroll_into_view_if_needed()
        bob.mouse.move(VIEWPORT["width"] - 10, VIEWPORT["height"] // 2)
        bob.screenshot(path=str(ARTIFACTS / "progress-completed.png"), animations="disabled")

        # --- the Jobs page lists the run under the same name, and no proposal -------------------------
        bob_main.get_by_role("button", name="← Back").click()
        bob_sidebar.get_by_role("radiogroup").get_by_text("Jobs", exact=True).click()
        table = bob_main.get_by_test_id("stDataFrame").filter(has=bob.locator("th", has_text="requested by"))
        job_cell = bob.locator("td", has_text=re.compile(rf"^AWX job {job}$"))
        expect(table.locator("tbody tr").filter(has=job_cell)).to_have_count(1)
        expect(table.locator("td", has_text=re.compile(r"proposed|rejected"))).to_have_count(0)

        # --- the webhooks got the hand-off and the outcome --------------------------------------------
        deadline = time.monotonic() + 30
        kinds: list[str] = []
        while time.monotonic() < deadline:
            kinds = [b["event"] for b in receiver.bodies.get("/generic", []) if b.get("request_id") == request_id]
            if kinds == ["awaiting_approval", "approved", "started", "succeeded"]:
                break
            time.sleep(0.2)
        assert kinds == ["awaiting_approval", "approved", "started", "succeeded"], (kinds, receiver.bodies)
        first = receiver.bodies["/generic"][0]
        # UI_BASE_URL + ?request=<id> (the port asked for: `up` takes the next free one when another test holds it)
        assert first["link"] == f"http://127.0.0.1:{stack.ports['ui']}/?request={request_id}"
        assert len(receiver.bodies.get("/slack", [])) >= 4 and len(receiver.bodies.get("/teams", [])) >= 4
        (ARTIFACTS / "latency.json").write_text(json.dumps({"approve_to_first_stage_s": round(first_stage, 3)}))

        # --- alice cancels a run of hers: asked first, then who asked and what it may leave behind ------
        double_root = stack.printed(r"^\s*AWX test double\s+(http://\S+?)/api/v2/\s*$")
        httpx.post(f"{double_root}/_double/scenario", json={"job_seconds": 600}, timeout=10).raise_for_status()
        chat.fill("Patch server dev-web-01 with Group-1")
        chat.press("Enter")
        expect(main).to_contain_text("dev (1): dev-web-01", timeout=60_000)
        api_url = stack.printed(r"^\s*API\s+(http://\S+)\s*$")
        waiting = httpx.get(f"{api_url}/api/v1/inbox", headers={"Authorization": f"Bearer {tokens[APPROVER]}"},
                            timeout=10).json()["items"]
        second = next(item["id"] for item in waiting if item["hosts"] == ["dev-web-01"])
        httpx.post(f"{api_url}/api/v1/requests/{second}/approve",
                   headers={"Authorization": f"Bearer {tokens[APPROVER]}"}, timeout=10).raise_for_status()
        expect(main.get_by_text("Patching in progress", exact=True)).to_be_visible(timeout=60_000)
        main.get_by_role("button", name="Cancel run…").click()
        expect(main).to_contain_text("may be left half-patched")
        main.get_by_role("button", name="Yes, cancel the run").click()
        expect(main.get_by_text("Canceled by alice during patching", exact=True)).to_be_visible(timeout=60_000)
        expect(main).to_contain_text("may be half-patched: check it before putting it back into service")
        expect(main.get_by_role("button", name="Cancel run…")).to_have_count(0)
        expect(main).not_to_contain_text("no reason given")
        expect(main.get_by_text("100 %", exact=True)).to_have_count(1)  # only the finished run reads 100 %
        httpx.post(f"{double_root}/_double/scenario", json={"job_seconds": None}, timeout=10).raise_for_status()

        # --- on a phone, who is acting and the run's name are on the first screen ----------------------
        phone = new_page(browser, PHONE)
        pages["phone"] = phone
        phone.goto(f"{ui_url}/?request={request_id}", wait_until="domcontentloaded")
        phone_main = phone.get_by_test_id("stMainBlockContainer")
        expect(phone_main.get_by_text(re.compile(r"^Signed in as admin"))).to_be_in_viewport(timeout=30_000)
        expect(phone_main.get_by_text(re.compile(r"^Patch proposal · 1 host · ✅ succeeded"))).to_be_in_viewport()
        expect(phone_main).to_contain_text(f"AWX job {job} · ✅ succeeded")

        # --- an API outage: the status line turns red, the page says it keeps trying, and it recovers on its
        # own once the API answers again (the API is frozen, not stopped: `up` would restart it at once) ------
        api_group = stack.recorded_pids()["api"]
        os.killpg(api_group, signal.SIGSTOP)
        try:
            expect(sidebar).to_contain_text("API unreachable", timeout=45_000)
            expect(main).to_contain_text("The patchpilot API does not answer")
        finally:
            os.killpg(api_group, signal.SIGCONT)
        expect(sidebar).to_contain_text("🟢 API · 🟢 Database · 🟢 Broker · 🟢 AWX", timeout=45_000)
        expect(main).not_to_contain_text("does not answer", timeout=30_000)
        expect(main).to_contain_text(f"AWX job {job} succeeded: web-01")  # the conversation is back
    except BaseException:
        for who, page in pages.items():
            with contextlib.suppress(Exception):  # the screenshot is a clue, not the failure
                page.screenshot(path=str(ARTIFACTS / f"failure-{who}.png"))
        (ARTIFACTS / "failure-logs.txt").write_text(stack.output + stack.log_tails(4000))
        raise

    for page in pages.values():
        page.context.close()
    returncode = stack.stop(timeout=60)
    assert returncode == 0, stack.output
    assert "stopped." in stack.output
    deadline = time.monotonic() + 20
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not alive(started), f"left behind: {alive(started)}\n{stack.output}"
    assert not (stack.state_dir / "pids.json").exists()
