"""Benchmark: Approve -> first stage visible *in the browser*, on the quick start.

    .venv/bin/python -m bench.ui_latency --runs 20 --speed 10
    .venv/bin/python -m bench.ui_latency --runs 20 --speed 10 --poll 0.5   # the worker polling every job sooner
    .venv/bin/python -m bench.ui_latency --runs 20 --speed 10 --first-poll 0.5   # a new job's first poll sooner

Starts `patchpilot up` (embedded PostgreSQL and Redis, the AWX double at `--speed`, API, worker with its beat, the
Streamlit UI) in a temporary state folder and drives Debian's Chromium through Playwright. Each run proposes a
patch of a non-production host through the API as the local admin (untimed; outside production the admin may
approve alone), opens the request's link `?request=<id>` in the browser, waits until the page is idle, clicks
**Approve**, and takes the time at which the page first shows the first stage ("Pre-checks running" or
"Pre-checks passed"): a MutationObserver in the page records it, so the measurement does not depend on how often
the test polls.

Same-run baseline: the double's floor, the moment the double lets any client read the first play-start event
(the request's `started_at`, stamped right after the launch POST returned, plus the double's own delay at this
speed). Reported: click -> first stage visible, double's first event readable -> first stage visible, and the
split from the request's timestamps: click -> approved (UI and API), approved -> launched (queue and launch),
launched -> stage stored (the double and the follower's first poll), stored -> visible (the UI's refresh and draw).

The worker runs the quick start's defaults unless told: `--poll` sets FOLLOW_POLL_SECONDS, `--first-poll`
FIRST_POLL_SECONDS (how long after the launch a job is first polled; every later poll keeps FOLLOW_POLL_SECONDS).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench.e2e import double_floor
from bench.stack import ROOT, summary, write_result
from core.settings import Settings
from core.states import TERMINAL

HOSTS = ["dev-web-01", "dev-app-01", "dev-db-01", "stg-web-01", "stg-web-02", "stg-app-01", "stg-db-01"]
SEEN_JS = """() => {
  window.__ppSeen = null;
  const pattern = /Pre-checks (running|passed)/;
  const look = () => {
    if (window.__ppSeen === null && pattern.test(document.body.textContent)) window.__ppSeen = Date.now();
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


class Up:
    def __init__(self, state_dir: Path, speed: float, poll: float | None = None, first_poll: float | None = None):
        env = {k: v for k, v in os.environ.items() if k not in (
            "DATABASE_URL", "REDIS_URL", "AWX_URL", "AWX_TOKEN", "API_URL", "PATCHPILOT_TOKEN", "AUTH_MODE")}
        env.update(PYTHONUNBUFFERED="1", LLM_PROVIDER="none", APPROVE_RATE_LIMIT="1000/minute",
                   CHAT_RATE_LIMIT="1000/minute")
        if poll is not None:
            env["FOLLOW_POLL_SECONDS"] = str(poll)
        if first_poll is not None:
            env["FIRST_POLL_SECONDS"] = str(first_poll)
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "patchpilot", "up", "--state-dir", str(state_dir),
                                      "--awx-speed", str(speed)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=lambda: [self.lines.append(line) for line in self.proc.stdout], daemon=True).start()

    def wait(self, timeout: float = 180) -> tuple[str, str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = "".join(self.lines)
            if "Press Ctrl-C" in out:
                ui = re.search(r"^\s*UI\s+(http://\S+)", out, re.M).group(1)
                api = re.search(r"^\s*API\s+(http://\S+)", out, re.M).group(1)
                token = re.search(r"^Local admin API token \(also the UI's default\): (pp_\S+)$", out, re.M).group(1)
                return ui.rstrip("/"), api.rstrip("/"), token
            if self.proc.poll() is not None:
                raise SystemExit(f"patchpilot up exited:\n{out}")
            time.sleep(0.2)
        raise SystemExit("patchpilot up did not come up in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def one_run(page, api: httpx.Client, ui: str, host: str) -> dict:
    from playwright.sync_api import expect

    proposal = api.post("/api/v1/chat", json={"text": f"Patch {host} with Group-1"})
    proposal.raise_for_status()
    request_id = proposal.json()["proposal"]["id"]
    page.goto(f"{ui}/?request={request_id}", wait_until="domcontentloaded")
    approve = page.get_by_role("button", name="Approve", exact=True)
    expect(approve).to_be_enabled(timeout=60_000)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=30_000)
    page.evaluate(SEEN_JS)
    clicked = time.time()
    approve.click()
    try:
        page.wait_for_function("window.__ppSeen !== null", timeout=60_000, polling=50)
    except Exception:
        page.screenshot(path=str(Path(tempfile.gettempdir()) / "ui_latency-failure.png"))
        raise
    seen = page.evaluate("window.__ppSeen") / 1000.0
    view = api.get(f"/api/v1/requests/{request_id}").json()
    deadline = time.monotonic() + 60
    while view["state"] not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.3)
        view = api.get(f"/api/v1/requests/{request_id}").json()
    approved, started = ts(view.get("approved_at")), ts(view.get("started_at"))
    stored = min((ts(s["at"]) for s in view.get("stages") or []), default=None)
    return {"request_id": request_id, "host": host, "clicked": clicked, "seen": seen, "approved_at": approved,
            "launched": started, "stage_stored": stored}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--poll", type=float, default=None,
                        help="FOLLOW_POLL_SECONDS for the worker (default: the quick start's, 2.5 s)")
    parser.add_argument("--first-poll", type=float, default=None,
                        help="FIRST_POLL_SECONDS for the worker (default: the quick start's, 1.0 s)")
    parser.add_argument("--chromium", default=os.environ.get("PATCHPILOT_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    floor = double_floor(args.speed)
    up = Up(Path(tempfile.mkdtemp(prefix="patchpilot-bench-ui-")) / "state", args.speed, args.poll, args.first_poll)
    rows = []
    try:
        ui, api_url, token = up.wait()
        with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as api, \
                sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True,
                                         args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            one_run(page, api, ui, "dev-db-01")  # warm-up: first chat turn, first page, first launch
            for i in range(args.runs):
                rows.append(one_run(page, api, ui, HOSTS[i % len(HOSTS)]))
                print(f"run {i + 1}: click -> visible {rows[-1]['seen'] - rows[-1]['clicked']:.2f} s", flush=True)
            browser.close()
    finally:
        up.stop()

    def spans(a: str, b: str, extra: float = 0.0) -> list[float]:
        return [r[b] - r[a] - extra for r in rows if r.get(a) and r.get(b)]

    visible = spans("clicked", "seen")
    after_double = [r["seen"] - (r["launched"] + floor) for r in rows if r.get("launched")]
    result = {
        "runs": len(rows), "speed": args.speed,
        "follow_poll_seconds": args.poll or Settings.model_fields["follow_poll_seconds"].default,
        "first_poll_seconds": args.first_poll or Settings.model_fields["first_poll_seconds"].default,
        "double_floor_seconds": round(floor, 3),
        "approve_to_first_stage_visible_seconds": summary(visible),
        "double_first_event_readable_to_visible_seconds": summary(after_double),
        "split_p50_seconds": {
            "click_to_approved": summary(spans("clicked", "approved_at")).get("p50"),
            "approved_to_launched": summary(spans("approved_at", "launched")).get("p50"),
            "launched_to_stage_stored": summary(spans("launched", "stage_stored")).get("p50"),
            "stage_stored_to_visible": summary(spans("stage_stored", "seen")).get("p50"),
        },
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    name = "ui_latency" + (f"_poll{args.poll:g}" if args.poll is not None else "") + (
        f"_first{args.first_poll:g}" if args.first_poll is not None else "")
    path = write_result(name, {"command": "python -m bench.ui_latency " + " ".join(argv or sys.argv[1:]),
                                       **result})
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
