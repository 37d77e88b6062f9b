"""Rendering pieces of the patchpilot UI: status line, proposal card, live request view, approvals inbox, jobs.

Pure helpers (formatting, labels, host rows) come first so they can be tested without Streamlit running; the
`render_*` functions draw with Streamlit and take the API client as an argument. Labels, stage texts, the order of
environments and which ones are production come from the API (`GET /api/v1/meta`); the stage timeline with its
statuses comes from the API too (`GET /api/v1/requests/{id}/live`), built from the job events.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import streamlit as st

from ui.client import (
    TERMINAL_STATES,
    ApiError,
    PatchpilotClient,
    auth_headers,
    proxy_identity,
)

# A request waiting for a decision is redrawn every 2 s (so its requester sees the approval); a run every half
# second (a stage shows about 0.5 s after the follower stored it, bench.ui_latency); a finished one never.
REFRESH_WAITING = 2.0
REFRESH_ACTIVE = 0.5
JOBS_REFRESH = 3.0
INBOX_REFRESH = 5.0
STATUS_REFRESH = 5.0
MAX_TASK_LINES = 40

STEP_ICONS = {"done": "✅", "current": "⏳", "pending": "⚪", "skipped": "➖", "not_run": "⚪", "failed": "❌",
              "canceled": "🚫"}
# Used only when the API's labels are not available (it is down): states are then shown by name.
FALLBACK_STATE_ICONS = {"proposed": "📝", "approved": "👍", "queued": "🕒", "launching": "🚀", "running": "⏳",
                        "succeeded": "✅", "failed": "❌", "error": "❌", "canceled": "🚫", "rejected": "✋",
                        "expired": "⌛"}
CANCELABLE_STATES = frozenset({"approved", "queued", "launching", "running"})
WAITING_STATES = frozenset({"proposed"})
ALL_STATES = tuple(FALLBACK_STATE_ICONS)
# The Jobs page lists runs: requests somebody approved. Proposals, rejections and expiries are not jobs.
RUN_STATES = ("approved", "queued", "launching", "running", "succeeded", "failed", "canceled", "error")
REBOOT_TEXT = {
    "never": "Never reboot",
    "if_needed": "Reboot only if needed",
    "always": "Always reboot",
}
ROLE_RANK = {"viewer": 0, "requester": 1, "approver": 2, "admin": 3}
HOST_COLUMNS = ("name", "status", "ok", "changed", "failed", "unreachable", "message")
TEXT_COLUMNS = ("name", "status", "message")
# Stages during which a canceled host may be left half-updated.
RISKY_STAGES = ("patching", "reboot")


# --- pure helpers -------------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    # A naive timestamp from the API is UTC.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def fmt_time(value: str | None, *, with_date: bool = True) -> str:
    parsed = parse_time(value)
    if parsed is None:
        return ""
    local = parsed.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def fmt_duration(start: str | None, end: str | None, now: datetime | None = None) -> str:
    """`1m 05s` from start to end (or to now while running); empty when it never started."""
    began = parse_time(start)
    if began is None:
        return ""
    finished = parse_time(end) or now or datetime.now(UTC)
    return fmt_seconds((finished - began).total_seconds())


def fmt_age(value: str | None, now: datetime | None = None) -> str:
    """'5m 02s ago' / 'in 54m 10s'."""
    moment = parse_time(value)
    if moment is None:
        return ""
    delta = ((now or datetime.now(UTC)) - moment).total_seconds()
    return f"{fmt_seconds(delta)} ago" if delta >= 0 else f"in {fmt_seconds(-delta)}"


def meta_states(meta: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    return {s["state"]: s for s in (meta or {}).get("states") or [] if isinstance(s, Mapping) and "state" in s}


def state_badge(state: str, meta: Mapping[str, Any] | None = None) -> str:
    info = meta_states(meta if meta is not None else current_meta()).get(state) or {}
    icon = info.get("icon") or FALLBACK_STATE_ICONS.get(state, "•")
    return f"{icon} {state}"


def job_name(req: Mapping[str, Any]) -> str:
    """The one name of a run: its AWX job number once AWX has it, the request id before."""
    if req.get("awx_job_id"):
        return f"AWX job {req['awx_job_id']}"
    return f"Request {str(req.get('id', ''))[:8]}"


def host_names(hosts: Sequence[Any]) -> list[str]:
    """Host names from either shape the API uses: plain names (proposal) or result objects (request)."""
    return [h.get("name", "?") if isinstance(h, Mapping) else str(h) for h in hosts or ()]


def environment_groups(item: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> list[tuple[str, list[str]]]:
    """(environment, hosts) pairs in the policy's order (production first), empty environments dropped."""
    by_env = item.get("hosts_by_environment") or {}
    if not any(by_env.values()):
        names = host_names(item.get("hosts") or [])
        return [("hosts", names)] if names else []
    order = list((meta or {}).get("environment_order") or [])
    ordered = [env for env in order if env in by_env] + sorted(env for env in by_env if env not in order)
    return [(env, list(by_env[env])) for env in ordered if by_env.get(env)]


def environment_colour(env: str, meta: Mapping[str, Any] | None = None) -> str:
    production = set((meta or {}).get("production_environments") or [])
    return "red" if env in production else "blue"


def progress_value(req: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> float:
    """How far the run got: stages finished (done or skipped) over the four stages, half of the one running now.
    A run that failed or was canceled stays where it stopped: only a success reaches 100 %."""
    if req.get("state") == "succeeded":
        return 1.0
    plays = [s for s in steps if s.get("stage") != "completed"]
    if not plays:
        return 0.0
    finished = sum(1 for s in plays if s.get("status") in ("done", "skipped"))
    running = sum(0.5 for s in plays if s.get("status") in ("current", "failed", "canceled"))
    return min(0.99, (finished + running) / len(plays))


def host_rows(req: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for host in req.get("hosts") or []:
        if isinstance(host, Mapping):
            row = {col: host.get(col) or ("" if col in TEXT_COLUMNS else 0) for col in HOST_COLUMNS}
            if req.get("check_mode") and row["status"] == "changed":
                row["status"] = "would change"  # a dry run changed nothing (the API says so too)
            rows.append(row)
        else:
            rows.append({"name": str(host), "status": "pending", "ok": 0, "changed": 0, "failed": 0, "unreachable": 0,
                         "message": ""})
    return rows


def host_summary(req: Mapping[str, Any]) -> str:
    """'www-01 changed, www-02 ok' -- each host's outcome."""
    return ", ".join(f"{r['name']} {r['status']}" for r in host_rows(req))


def failing_hosts(req: Mapping[str, Any]) -> list[str]:
    return [
        h.get("name", "?")
        for h in req.get("hosts") or []
        if isinstance(h, Mapping) and (h.get("status") in ("failed", "unreachable") or h.get("failed") or h.get("unreachable"))
    ]


def task_line(task: Mapping[str, Any]) -> str:
    """'12:01:02 Apply updates (security) · www-01 · changed: Updates applied'."""
    what = task.get("task") or task.get("play") or ""
    line = f"{fmt_time(task.get('at'), with_date=False)} {what}"
    if task.get("host"):
        line += f" · {task['host']}"
    line += f" · {task.get('result', '')}"
    if task.get("message"):
        line += f": {task['message']}"
    return line.strip()


def job_rows(items: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    rows = []
    for req in items:
        rows.append(
            {
                "job": job_name(req),
                "state": state_badge(req.get("state", ""), meta),
                "hosts": ", ".join(host_names(req.get("hosts") or [])),
                "stage": req.get("stage", ""),
                "patch group": req.get("patch_group", ""),
                "requested by": req.get("requested_by") or "",
                "approved by": req.get("approved_by") or "",
                "created": fmt_time(req.get("created_at")),
                "duration": fmt_duration(req.get("started_at"), req.get("finished_at")),
                "AWX": req.get("awx_job_url") or None,
                "id": str(req.get("id", "")),
            }
        )
    return rows


def filter_jobs(items: Sequence[Mapping[str, Any]], *, host: str = "", runs_only: bool = True) -> list[Mapping[str, Any]]:
    """Runs only (unless asked), and those touching a host whose name contains `host`."""
    needle = host.strip().lower()
    out = []
    for req in items:
        if runs_only and req.get("state") not in RUN_STATES:
            continue
        if needle and not any(needle in name.lower() for name in host_names(req.get("hosts") or [])):
            continue
        out.append(req)
    return out


def role_rank(roles: Sequence[str] | None) -> int:
    """The highest of the roles (viewer 0 … admin 3); -1 for none."""
    return max((ROLE_RANK[r] for r in roles or () if r in ROLE_RANK), default=-1)


def roles_text(me: Mapping[str, Any]) -> str:
    return ", ".join(me.get("roles") or []) or "no role"


def md_escape(text: str) -> str:
    """Text shown through st.markdown as is (a user name like a_b_c stays plain)."""
    return "".join("\\" + c if c in "\\`*_[]<>#|~" else c for c in str(text))


def capitalized(text: str | None) -> str | None:
    return text[:1].upper() + text[1:] if text else None


def request_link(request_id: str) -> str:
    """A link to one request that anyone signed in can open (relative to the UI's own address)."""
    return f"?request={request_id}"


def absolute_link(request_id: str) -> str:
    """The full link to send someone: the UI's address as the browser reached it, with ?request=<id>."""
    base = ""
    with contextlib.suppress(Exception):
        base = str(st.context.url or "").split("?", 1)[0]
    return f"{base}{request_link(request_id)}"


def shows_progress(state: str) -> bool:
    """A request that was approved has a run to follow; a proposal, rejection or expiry has none."""
    return state not in ("proposed", "rejected", "expired", "")


# --- session plumbing ---------------------------------------------------------------------------


def default_token() -> str:
    """The API token the sidebar starts with (`patchpilot up` passes its local admin token)."""
    return os.environ.get("PATCHPILOT_TOKEN", "").strip()


def browser_headers() -> dict[str, str]:
    """The headers of the browser's request to the UI (where the OAuth proxy puts who signed in)."""
    try:
        return st.context.headers.to_dict()
    except Exception:
        return {}


def proxy_signed_in() -> bool:
    """The OAuth proxy in front of the UI identified the person: no API token is needed."""
    return bool(proxy_identity(browser_headers()))


def session_client(base_url: str) -> PatchpilotClient:
    """The session's API client for the identity now in force, rebuilt when the address or the identity changes.

    The identity is the OAuth proxy's headers when present, else the API token in the sidebar. Button callbacks
    call this too instead of using the client their button was drawn with: a callback runs before the page is
    drawn again, and after a token change that client is closed (or speaks for the previous person).
    """
    base_url = base_url.rstrip("/")
    token = str(st.session_state.get("pp_token") or "")
    incoming = browser_headers()
    client = st.session_state.get("pp_client")
    if client is None or client.base_url != base_url or client.identity != auth_headers(token, incoming):
        if client is not None:
            client.close()
        client = PatchpilotClient(base_url, token, incoming_headers=incoming)
        st.session_state["pp_client"] = client
    return client


def current_meta() -> dict[str, Any] | None:
    return st.session_state.get("pp_meta_data")


def load_meta(client: PatchpilotClient) -> dict[str, Any] | None:
    """The API's labels, read once per session (again after a failure)."""
    meta = current_meta()
    if meta is None:
        with contextlib.suppress(ApiError):
            meta = client.meta()
            st.session_state["pp_meta_data"] = meta
    return meta


def signed_in() -> dict[str, Any] | None:
    """The person the API answered /me with on this page run (None when not known)."""
    return st.session_state.get("pp_me")


def _signed_in_user() -> str:
    return str((signed_in() or {}).get("user") or "")


def sign_in_message(error: ApiError, via_proxy: bool) -> str:
    """What to do after the API answered 401."""
    said = f" (the API said: {md_escape(error.detail)})" if error.detail else ""
    if via_proxy:
        return f"Not signed in: the API did not accept the OAuth proxy's identity{said}. Sign in again through the proxy."
    return (
        "Not signed in: paste an API token into the **API token** field "
        f"(create one with `patchpilot token create NAME --role requester`){said}."
    )


def identity_line(me: Mapping[str, Any]) -> str:
    return f"Signed in as **{md_escape(me.get('user', '?'))}** ({md_escape(roles_text(me))})"


def render_identity(client: PatchpilotClient, via_proxy: bool) -> tuple[dict[str, Any] | None, ApiError | None]:
    """'Signed in as …' from GET /api/v1/me, or the sign-in message on a 401. Keeps the answer for the page."""
    try:
        me, error = {**client.me()}, None
    except ApiError as exc:
        me, error = None, exc
    st.session_state["pp_me"] = me
    if me is not None:
        st.markdown(identity_line(me))
        if me.get("via") == "proxy":
            st.caption("through the OAuth proxy")
    elif error is not None and error.is_unauthorized:
        st.warning(sign_in_message(error, via_proxy))
    # Any other failure (API down) shows in the status line below.
    return me, error


@contextlib.contextmanager
def shown_errors(what: str) -> Iterator[None]:
    """Show any failure inside as a message instead of a traceback."""
    try:
        yield
    except ApiError as exc:
        st.error(f"{what}: {exc}")
    except Exception as exc:
        st.error(f"{what}: unexpected problem ({type(exc).__name__}: {exc})")


def render_status(system: Mapping[str, Any] | None, error: ApiError | None = None) -> None:
    """The status line: which intent engine answers and which components are reachable."""
    if system is None:
        st.markdown("🔴 **API unreachable**: retrying every few seconds")
        if error is not None:
            st.caption(str(error))
        return
    dots = {"ok": "🟢", "down": "🔴", "unconfigured": "⚪"}
    engine = system.get("engine_label") or system.get("engine") or "unknown"
    st.markdown(f"Intent engine: **{engine}**")
    parts = []
    for key, name in (("api", "API"), ("database", "Database"), ("broker", "Broker"), ("awx", "AWX")):
        value = system.get(key) or "unknown"
        parts.append(f"{dots.get(value, '🟠')} {name}" + ("" if value == "ok" else f" ({value})"))
    st.markdown(" · ".join(parts))
    if system.get("awx_url"):
        st.caption(f"AWX: {system['awx_url']}")
    line = system.get("inventory_line")
    if line:
        # The inventory synced from AWX: a failing sync, a template problem or no sync yet is worth a warning.
        inventory = system.get("inventory") or {}
        troubled = inventory.get("state") in ("stale", "failing", "never") or bool(inventory.get("problems"))
        (st.warning if troubled else st.caption)(line)


def _status_body(base_url: str) -> None:
    client = session_client(base_url)
    try:
        system, error = client.system(), None
    except ApiError as exc:
        system, error = None, exc
    up = system is not None
    was_up = st.session_state.get("pp_api_up")
    st.session_state["pp_api_up"] = up
    if was_up is not None and was_up != up and st.session_state.get("pp_status_timed"):
        # The API went away or came back: redraw the whole page (errors go, the conversation comes back).
        st.session_state["pp_status_timed"] = False
        st.rerun(scope="app")
    st.session_state["pp_status_timed"] = True
    with shown_errors("Status unavailable"):
        render_status(system, error)


def render_status_live(base_url: str) -> bool:
    """The status line, checked again every STATUS_REFRESH seconds on its own; True when the API answered."""
    st.session_state["pp_status_timed"] = False
    st.fragment(run_every=STATUS_REFRESH)(_status_body)(base_url)
    return bool(st.session_state.get("pp_api_up"))


# -- one request: the proposal card and the live run --


def _decision_key(request_id: str) -> str:
    return f"pp_decision:{request_id}"


def _decision_error_key(request_id: str) -> str:
    return f"pp_decision_error:{request_id}"


def _decide(base_url: str, request_id: str, action: str) -> None:
    """Approve / Reject / Cancel callback. Runs before the page redraws, so the button comes back disabled."""
    key = _decision_key(request_id)
    decided = st.session_state.get(key) or {}
    if decided.get("pending") and decided.get("action") == action:
        return  # second click of a double click
    st.session_state[key] = {"action": action, "by": _signed_in_user(), "pending": True}
    st.session_state.pop(_decision_error_key(request_id), None)
    st.session_state.pop(f"pp_confirm_cancel:{request_id}", None)
    client = session_client(base_url)
    try:
        {"approve": client.approve, "reject": client.reject, "cancel": client.cancel}[action](request_id)
    except ApiError as exc:
        if exc.is_conflict:
            st.session_state[_decision_error_key(request_id)] = (
                f"Could not {action}: the request changed meanwhile ({exc.detail or exc}). The card shows it as it is now.")
        else:
            st.session_state[_decision_error_key(request_id)] = f"Could not {action}: {exc}"
        # Nothing changed: the buttons follow what the API says the person may do now.
        st.session_state.pop(key, None)


def _pending(request_id: str, actions: Sequence[str]) -> bool:
    """A click on one of these actions was sent and the page has not seen its outcome yet."""
    decided = st.session_state.get(_decision_key(request_id)) or {}
    return bool(decided.get("pending")) and decided.get("action") in actions


def _ask_cancel(request_id: str, ask: bool) -> None:
    st.session_state[f"pp_confirm_cancel:{request_id}"] = ask


def _draw_card(base_url: str, live: Mapping[str, Any], meta: Mapping[str, Any] | None) -> None:
    req = live["request"]
    request_id = str(req.get("id", ""))
    state = req.get("state", "proposed")
    hosts = host_names(req.get("hosts") or [])
    action = "Pre-checks" if req.get("action") == "precheck" else "Patch"
    with st.container(border=True):
        st.markdown(f"**{action} proposal** · {len(hosts)} host{'s' if len(hosts) != 1 else ''} · "
                    f"{state_badge(state, meta)} · requested by {md_escape(req.get('requested_by') or '?')}")
        st.markdown("**Target hosts**")
        for env, names in environment_groups(req, meta):
            st.markdown(f":{environment_colour(env, meta)}[**{env}**] ({len(names)}): {', '.join(names)}")
        if req.get("targets"):  # the request as the user asked it, e.g. "live ∩ www, except www-02"
            st.caption(f"As asked: {md_escape(req['targets'])}")
        group = req.get("patch_group", "")
        description = req.get("patch_group_description") or ""
        st.markdown(f"**Patch group:** {group}" + (f" — {description}" if description else ""))
        st.markdown(f"**Reboot:** {REBOOT_TEXT.get(req.get('reboot', ''), req.get('reboot', ''))}")
        if req.get("check_mode"):
            st.markdown("**Dry run:** yes — check mode, nothing will be changed")
        else:
            st.markdown("**Dry run:** no — changes will be applied")
        notes = [n for n in req.get("notes") or [] if n and not n.startswith("Cancel requested")]
        if notes:
            st.info("\n".join(f"- {n}" for n in notes))
        if state == "proposed" and req.get("expires_at"):
            st.caption(f"Waiting for approval since {fmt_age(req.get('created_at'))}; "
                       f"expires at {fmt_time(req['expires_at'])} ({fmt_age(req['expires_at'])})")

        if state == "proposed":
            allowed = live.get("allowed") or {}
            pending = _pending(request_id, ("approve", "reject"))
            left, right, _ = st.columns([1, 1, 4])
            left.button("Approve", key=f"approve:{request_id}", type="primary",
                        disabled=pending or allowed.get("approve") is not None,
                        help=capitalized(allowed.get("approve")), on_click=_decide,
                        args=(base_url, request_id, "approve"))
            right.button("Reject", key=f"reject:{request_id}",
                         disabled=pending or allowed.get("reject") is not None,
                         help=capitalized(allowed.get("reject")), on_click=_decide,
                         args=(base_url, request_id, "reject"))
            reasons = [r for r in (allowed.get("approve"), allowed.get("reject")) if r]
            if reasons and not pending:
                me = signed_in()
                who = f"Signed in as {md_escape(me.get('user', '?'))} ({md_escape(roles_text(me))})" if me else "Not signed in"
                st.caption(f"{who}: {'; '.join(reasons)}.")
            if allowed.get("approve") and "four-eyes" in allowed["approve"] and me_is(req.get("requested_by")):
                st.caption(f"Send this link to an approver: {absolute_link(request_id)}")
        error = st.session_state.get(_decision_error_key(request_id))
        if error and state == "proposed":
            st.error(error)
        if state == "rejected":
            if live.get("replaced_by_newer"):
                st.caption("Replaced by a newer proposal in this conversation.")
            else:
                st.caption("Rejected" + (f" by {req['decided_by']}" if req.get("decided_by") else ""))
        elif state == "expired":
            st.caption("This proposal expired without a decision.")
        elif req.get("approved_by"):
            st.caption(f"Approved by {req['approved_by']}" + (
                f" at {fmt_time(req.get('approved_at'), with_date=False)}" if req.get("approved_at") else ""))


def me_is(user: str | None) -> bool:
    me = _signed_in_user()
    return bool(me and user and me.strip().lower() == user.strip().lower())


def _draw_timeline(steps: Sequence[Mapping[str, Any]]) -> None:
    columns = st.columns(len(steps) or 1)
    for column, step in zip(columns, steps, strict=False):
        status = step.get("status", "pending")
        label = md_escape(step.get("label") or step.get("title") or "")
        if status in ("pending", "not_run", "skipped"):
            text = f"{STEP_ICONS.get(status, '•')} :gray[{label}]"
        else:
            text = f"{STEP_ICONS.get(status, '•')} **{label}**"
        times = fmt_time(step.get("at"), with_date=False)
        if times and step.get("ended_at") and status != "skipped":
            times += f" ({fmt_duration(step.get('at'), step.get('ended_at'))})"
        if times:
            text += f"  \n:gray[{times}]"
        column.markdown(text)


def _draw_run(base_url: str, live: Mapping[str, Any], meta: Mapping[str, Any] | None) -> None:
    req = live["request"]
    request_id = str(req.get("id", ""))
    state = req.get("state", "")
    steps = live.get("timeline") or []
    header = f"**{job_name(req)}** · {state_badge(state, meta)}"
    if not req.get("awx_job_id") and state in CANCELABLE_STATES:
        header += " · waiting for AWX to start the job"
    if req.get("check_mode"):
        header += " · dry run"
    duration = fmt_duration(req.get("started_at"), req.get("finished_at"))
    if duration:
        header += f" · {duration}"
    st.markdown(header)
    _draw_timeline(steps)

    progress = progress_value(req, steps)
    latest = req.get("latest_task")
    st.progress(progress, text=f"Latest task: {latest}" if latest and state not in TERMINAL_STATES else f"{int(progress * 100)} %")

    cancel_at = req.get("cancel_requested_at")
    if cancel_at and state not in TERMINAL_STATES:
        st.warning(f"Cancel requested by {req.get('decided_by') or '?'} at {fmt_time(cancel_at, with_date=False)}: "
                   f"waiting for AWX to stop {job_name(req)}.")
    if state == "succeeded":
        done = "Dry run completed, nothing changed" if req.get("check_mode") else "Patching completed"
        st.success(f"{done}: {host_summary(req)}")
    elif state in ("failed", "error"):
        reason = req.get("failure_reason") or "no reason recorded"
        text = f"**{job_name(req)} failed**: {reason}"
        failing = failing_hosts(req)
        if failing:
            text += f"  \nFailing hosts: {', '.join(failing)}"
        st.error(text)
    elif state == "canceled":
        stopped_in = next((s for s in steps if s.get("status") == "canceled"), None)
        who = req.get("decided_by") or "someone"
        where = f" during {str(stopped_in.get('title', '')).lower()}" if stopped_in else ""
        text = f"**Canceled by {md_escape(who)}{where}**"
        if req.get("failure_reason"):
            text += f": {req['failure_reason']}"
        if stopped_in and stopped_in.get("stage") in RISKY_STAGES and not req.get("check_mode"):
            text += ("  \nA host interrupted while it was being updated or rebooted may be half-patched: "
                     "check it before putting it back into service.")
        st.warning(text)

    rows = host_rows(req)
    if rows:
        st.dataframe(rows, hide_index=True, column_config={
            "name": "Host", "status": "Status", "ok": st.column_config.NumberColumn("ok"),
            # a dry run changes nothing: apt and dnf's "changed" in check mode means "would change"
            "changed": st.column_config.NumberColumn("would change" if req.get("check_mode") else "changed"),
            "failed": st.column_config.NumberColumn("failed"),
            "unreachable": st.column_config.NumberColumn("unreachable"), "message": "Reason"})

    if req.get("awx_job_url"):
        st.markdown(f"[Open {job_name(req)} in AWX]({req['awx_job_url']})")

    allowed = live.get("allowed") or {}
    if state in CANCELABLE_STATES and not cancel_at:
        pending = _pending(request_id, ("cancel",))
        if st.session_state.get(f"pp_confirm_cancel:{request_id}"):
            risky = not req.get("check_mode") and req.get("stage") in ("patching", "reboot", "postchecks", "prechecks")
            st.warning(f"Stop {job_name(req)}?" + (
                " A host interrupted while it is being updated or rebooted may be left half-patched." if risky else ""))
            yes, no, _ = st.columns([1, 1, 3])
            yes.button("Yes, cancel the run", key=f"cancel_yes:{request_id}", type="primary", disabled=pending,
                       on_click=_decide, args=(base_url, request_id, "cancel"))
            no.button("Keep it running", key=f"cancel_no:{request_id}", on_click=_ask_cancel, args=(request_id, False))
        else:
            st.button("Cancel run…", key=f"cancel:{request_id}", disabled=allowed.get("cancel") is not None,
                      help=capitalized(allowed.get("cancel")), on_click=_ask_cancel, args=(request_id, True))
    error = st.session_state.get(_decision_error_key(request_id))
    if error and state != "proposed":
        st.error(error)

    tasks = live.get("tasks") or []
    if tasks:
        with st.expander(f"Task output ({len(tasks)} newest)", expanded=state in TERMINAL_STATES and state != "succeeded"):
            st.code("\n".join(task_line(t) for t in tasks[-MAX_TASK_LINES:]), language=None)


def draw_request(base_url: str, live: Mapping[str, Any], meta: Mapping[str, Any] | None, *,
                 in_chat: bool = False) -> None:
    """The proposal card and, once approved, the run: one snapshot."""
    req = live["request"]
    _draw_card(base_url, live, meta)
    if shows_progress(req.get("state", "")):
        _draw_run(base_url, live, meta)
        if in_chat and req.get("state") in TERMINAL_STATES:
            # The chat says how it ended, like a colleague would.
            with st.chat_message("assistant"):
                st.markdown(outcome_sentence(req))


def outcome_sentence(req: Mapping[str, Any]) -> str:
    state = req.get("state")
    name = job_name(req)
    if state == "succeeded":
        return f"{name} succeeded" + (" (dry run, nothing changed)" if req.get("check_mode") else "") + \
            f": {host_summary(req)}."
    if state == "canceled":
        return f"{name} was canceled by {req.get('decided_by') or 'someone'}: {host_summary(req)}."
    return f"{name} {state}: {req.get('failure_reason') or 'no reason recorded'}. Hosts: {host_summary(req)}."


def _phase(state: str) -> str:
    if state in TERMINAL_STATES:
        return "final"
    return "waiting" if state in WAITING_STATES else "active"


def _request_body(base_url: str, request_id: str, phase: str, in_chat: bool) -> None:
    """Body of a request's fragment: fetches the request again on each timed rerun."""
    client = session_client(base_url)
    live = st.session_state.pop(f"pp_prefetched:{request_id}", None)
    if live is None:
        try:
            live = client.live(request_id)
        except ApiError as exc:
            # Keep refreshing: the API may come back (the page redraws itself when it does).
            st.warning(f"Live update of {request_id[:8]} failed, retrying: {exc}")
            st.session_state["pp_live_failed"] = True
            return
    if st.session_state.pop("pp_live_failed", False) or _phase(live["request"].get("state", "")) != phase:
        # It came back, or the request moved on (approved elsewhere, ended): redraw the page so its timer fits.
        st.session_state[f"pp_prefetched:{request_id}"] = live
        st.rerun(scope="app")
    with shown_errors("Could not draw the request"):
        draw_request(base_url, live, load_meta(client) if current_meta() is None else current_meta(), in_chat=in_chat)


def render_request(client: PatchpilotClient, request_id: str, *, in_chat: bool = False) -> None:
    """A request as it is now, redrawn on its own every REFRESH_* seconds until it ends."""
    live = st.session_state.pop(f"pp_prefetched:{request_id}", None)
    if live is None:
        try:
            live = client.live(request_id)
        except ApiError as exc:
            st.error(f"Could not load request {request_id[:8]}: {exc}")
            return
    st.session_state[f"pp_prefetched:{request_id}"] = live
    phase = _phase(live["request"].get("state", ""))
    every = {"waiting": REFRESH_WAITING, "active": REFRESH_ACTIVE}.get(phase)
    st.fragment(run_every=every)(_request_body)(client.base_url, request_id, phase, in_chat)


# -- approvals inbox --


def load_inbox(client: PatchpilotClient) -> dict[str, Any] | None:
    try:
        return client.inbox()
    except ApiError:
        return None


def _open_request(request_id: str) -> None:
    st.session_state["pp_open_request"] = request_id


def render_inbox_items(items: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None, *, key: str) -> None:
    for item in items:
        with st.container(border=True):
            envs = "; ".join(f":{environment_colour(env, meta)}[**{env}**] ({len(names)}): {', '.join(names)}"
                             for env, names in environment_groups(item, meta))
            what = "Dry run of" if item.get("check_mode") else "Patch"
            st.markdown(f"**{md_escape(item.get('requested_by') or '?')}** asks: {what} {envs} with "
                        f"**{md_escape(item.get('patch_group') or '?')}** · {REBOOT_TEXT.get(item.get('reboot', ''), '')}")
            st.caption(f"Asked {fmt_age(item.get('created_at'))} · expires at {fmt_time(item.get('expires_at'))} "
                       f"({fmt_age(item.get('expires_at'))}) · link: {request_link(str(item['id']))}")
            st.button("Open to decide", key=f"{key}:{item['id']}", on_click=_open_request, args=(str(item["id"]),))


def _inbox_body(base_url: str) -> None:
    client = session_client(base_url)
    inbox = load_inbox(client)
    if inbox is None:
        st.warning("The approvals inbox is unavailable; retrying.")
        return
    if st.session_state.get("pp_open_request"):
        st.rerun(scope="app")
    if st.session_state.get("pp_inbox_count") != inbox.get("count"):
        st.session_state["pp_inbox_count"] = inbox.get("count")
        st.rerun(scope="app")  # the sidebar's count follows
    meta = current_meta()
    items = inbox.get("items") or []
    if items:
        st.markdown(f"**{len(items)} proposal{'s' if len(items) != 1 else ''} waiting for your approval**")
        render_inbox_items(items, meta, key="inbox")
    else:
        st.info("Nothing waits for your approval.")
    mine = inbox.get("mine") or []
    if mine:
        st.markdown("**Your proposals waiting for someone else's approval** (send the link to an approver)")
        render_inbox_items(mine, meta, key="mine")


def render_inbox(client: PatchpilotClient) -> None:
    st.subheader("Approvals")
    st.fragment(run_every=INBOX_REFRESH)(_inbox_body)(client.base_url)


# -- jobs --


def _jobs_selected() -> None:
    selection = st.session_state.get("pp_jobs_table")
    rows = getattr(getattr(selection, "selection", None), "rows", None)
    if rows is None and isinstance(selection, Mapping):
        rows = (selection.get("selection") or {}).get("rows")
    ids = st.session_state.get("pp_jobs_ids") or []
    if rows:
        index = rows[0]
        if 0 <= index < len(ids):
            st.session_state["pp_open_request"] = ids[index]


def _jobs_body(base_url: str) -> None:
    client = session_client(base_url)
    if st.session_state.get("pp_open_request"):
        st.rerun(scope="app")
    state = st.session_state.get("pp_jobs_state", "all runs")
    host = st.session_state.get("pp_jobs_host", "")
    try:
        items = client.list_requests(state=None if state in ("all runs", "everything") else state, limit=200)
    except ApiError as exc:
        st.warning(f"Could not load the jobs, retrying: {exc}")
        return
    shown = filter_jobs(items, host=host, runs_only=state == "all runs")[:50]
    st.session_state["pp_jobs_ids"] = [str(r.get("id")) for r in shown]
    if not shown:
        st.info("No runs match." if host or state != "all runs" else "No runs yet.")
        return
    st.dataframe(
        job_rows(shown, current_meta()), hide_index=True, key="pp_jobs_table", on_select=_jobs_selected,
        selection_mode="single-row",
        column_order=("job", "state", "hosts", "stage", "patch group", "requested by", "approved by", "created",
                      "duration", "AWX"),
        column_config={"AWX": st.column_config.LinkColumn("AWX", display_text="open")},
    )
    st.caption(f"{len(shown)} shown, newest first; refreshed every {JOBS_REFRESH:g} s. Pick a row to open it.")


def render_jobs(client: PatchpilotClient) -> None:
    """Runs (newest first), refreshed on their own; a row opens the request (kept in the URL as ?request=<id>)."""
    st.subheader("Jobs")
    left, right = st.columns([1, 2])
    left.selectbox("State", ("all runs", *RUN_STATES, "everything", "proposed", "rejected", "expired"),
                   key="pp_jobs_state", help="'all runs' lists approved requests; 'everything' adds proposals, "
                   "rejections and expiries")
    right.text_input("Host", key="pp_jobs_host", placeholder="search by host name")
    st.fragment(run_every=JOBS_REFRESH)(_jobs_body)(client.base_url)
