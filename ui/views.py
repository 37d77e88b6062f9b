"""Rendering pieces of the patchpilot UI: status line, proposal card, live progress, jobs list.

Pure helpers (formatting, timeline, host rows) come first so they can be tested without Streamlit
running; the `render_*` functions draw with Streamlit and take the API client as an argument.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import streamlit as st

from core.states import STAGE_LABELS
from ui.client import (
    TERMINAL_STATES,
    ApiError,
    PatchpilotClient,
    auth_headers,
    proxy_identity,
)

REFRESH_SECONDS = 2
MAX_EVENTS_KEPT = 200

STAGE_ORDER = ("prechecks", "patching", "reboot", "postchecks", "completed")
STAGE_TITLES = {
    "prechecks": "Pre-checks",
    "patching": "Patching",
    "reboot": "Reboot",
    "postchecks": "Post-checks",
    "completed": "Completed",
}
# STAGE_LABELS (from core.states) are the texts the API uses in `stages[].label`; the UI falls back on them
# when a reached stage has no entry yet.
STEP_ICONS = {"done": "✅", "current": "⏳", "pending": "⚪", "skipped": "➖", "failed": "❌", "canceled": "🚫"}

STATE_ICONS = {
    "proposed": "📝",
    "approved": "👍",
    "queued": "🕒",
    "launching": "🚀",
    "running": "⏳",
    "succeeded": "✅",
    "failed": "❌",
    "error": "❌",
    "canceled": "🚫",
    "rejected": "✋",
    "expired": "⌛",
}
CANCELABLE_STATES = frozenset({"approved", "queued", "launching", "running"})
ALL_STATES = (
    "proposed", "approved", "queued", "launching", "running",
    "succeeded", "failed", "canceled", "error", "rejected", "expired",
)  # fmt: skip
REBOOT_TEXT = {
    "never": "Never reboot",
    "if_needed": "Reboot only if needed",
    "always": "Always reboot",
}
ROLE_RANK = {"viewer": 0, "requester": 1, "approver": 2, "admin": 3}
ENV_ORDER = ("prod", "staging", "dev")
HOST_COLUMNS = ("name", "status", "ok", "changed", "failed", "unreachable")


# --- pure helpers -------------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    # A naive timestamp from the API is UTC.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def fmt_time(value: str | None, *, with_date: bool = True) -> str:
    parsed = parse_time(value)
    if parsed is None:
        return ""
    local = parsed.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def fmt_duration(start: str | None, end: str | None, now: datetime | None = None) -> str:
    """`1m 05s` from start to end (or to now while running); empty when it never started."""
    began = parse_time(start)
    if began is None:
        return ""
    finished = parse_time(end) or now or datetime.now(timezone.utc)
    seconds = max(0, int((finished - began).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def state_badge(state: str) -> str:
    return f"{STATE_ICONS.get(state, '•')} {state}"


def host_names(hosts: Sequence[Any]) -> list[str]:
    """Host names from either shape the API uses: plain names (proposal) or result objects (request)."""
    return [h.get("name", "?") if isinstance(h, Mapping) else str(h) for h in hosts or ()]


def environment_groups(item: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """(environment, hosts) pairs, prod first, empty environments dropped."""
    by_env = item.get("hosts_by_environment") or {}
    if not any(by_env.values()):
        names = host_names(item.get("hosts") or [])
        return [("hosts", names)] if names else []
    ordered = [env for env in ENV_ORDER if env in by_env] + sorted(env for env in by_env if env not in ENV_ORDER)
    return [(env, list(by_env[env])) for env in ordered if by_env.get(env)]


def timeline_steps(req: Mapping[str, Any]) -> list[dict[str, str]]:
    """One entry per stage of the run: title, the label to show, its time and a status."""
    state = req.get("state", "")
    entries = {e.get("stage"): e for e in req.get("stages") or [] if isinstance(e, Mapping)}
    reached = [i for i, key in enumerate(STAGE_ORDER) if key in entries]
    current = req.get("stage")
    last = STAGE_ORDER.index(current) if current in STAGE_ORDER else max(reached, default=-1)
    active = state not in TERMINAL_STATES

    steps = []
    for i, key in enumerate(STAGE_ORDER):
        entry = entries.get(key)
        if key == "completed" and state == "succeeded":
            status = "done"
        elif i < last:
            # A stage the run went past without an entry was not needed (no reboot, pre-check only).
            status = "done" if entry else "skipped"
        elif i == last:
            if state in ("failed", "error"):
                status = "failed"
            elif state == "canceled":
                status = "canceled"
            else:
                status = "current" if active else "done"
        else:
            status = "pending"
        if status in ("pending", "skipped"):
            label = STAGE_TITLES[key]
        else:
            label = (entry or {}).get("label") or STAGE_LABELS[key]
        steps.append(
            {
                "stage": key,
                "title": STAGE_TITLES[key],
                "label": label,
                "at": fmt_time((entry or {}).get("at"), with_date=False),
                "status": status,
            }
        )
    return steps


def terminal_label(req: Mapping[str, Any]) -> str | None:
    """'Patching failed' / 'Canceled' for a run that ended badly, as the API labelled it."""
    state = req.get("state")
    key = {"failed": "failed", "error": "failed", "canceled": "canceled"}.get(state or "")
    if key is None:
        return None
    for entry in req.get("stages") or []:
        if isinstance(entry, Mapping) and entry.get("stage") == key and entry.get("label"):
            return entry["label"]
    return STAGE_LABELS[key]


def host_rows(req: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for host in req.get("hosts") or []:
        if isinstance(host, Mapping):
            rows.append({col: host.get(col, 0 if col not in ("name", "status") else "") for col in HOST_COLUMNS})
        else:
            rows.append({"name": str(host), "status": "pending", "ok": 0, "changed": 0, "failed": 0, "unreachable": 0})
    return rows


def failing_hosts(req: Mapping[str, Any]) -> list[str]:
    return [
        h.get("name", "?")
        for h in req.get("hosts") or []
        if isinstance(h, Mapping) and (h.get("status") in ("failed", "unreachable") or h.get("failed") or h.get("unreachable"))
    ]


def job_rows(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for req in items:
        rows.append(
            {
                "request": str(req.get("id", ""))[:8],
                "action": req.get("action", ""),
                "state": state_badge(req.get("state", "")),
                "stage": req.get("stage", ""),
                "hosts": ", ".join(host_names(req.get("hosts") or [])),
                "patch group": req.get("patch_group", ""),
                "requested by": req.get("requested_by") or "",
                "approved by": req.get("approved_by") or "",
                "created": fmt_time(req.get("created_at")),
                "duration": fmt_duration(req.get("started_at"), req.get("finished_at")),
                "AWX job": req.get("awx_job_url") or None,
            }
        )
    return rows


def request_choice_label(req: Mapping[str, Any]) -> str:
    hosts = host_names(req.get("hosts") or [])
    shown = ", ".join(hosts[:3]) + (f" +{len(hosts) - 3}" if len(hosts) > 3 else "")
    return f"{str(req.get('id', ''))[:8]} · {state_badge(req.get('state', ''))} · {req.get('patch_group', '')} · {shown}"


def role_rank(roles: Sequence[str] | None) -> int:
    """The highest of the roles (viewer 0 … admin 3); -1 for none."""
    return max((ROLE_RANK[r] for r in roles or () if r in ROLE_RANK), default=-1)


def roles_text(me: Mapping[str, Any]) -> str:
    return ", ".join(me.get("roles") or []) or "no role"


def refusal(me: Mapping[str, Any] | None, action: str, item: Mapping[str, Any]) -> str | None:
    """Why the signed-in person may not approve / reject / cancel this request, or None when they may.

    The same rules as the API: approving needs the approver role; a requester may reject or cancel their own
    request, others' need the approver role. The API still decides (four-eyes on production, say).
    """
    verb = {"approve": "approving", "reject": "rejecting", "cancel": "canceling"}[action]
    if not me:
        return f"{verb} needs you to be signed in"
    rank = role_rank(me.get("roles"))
    if rank >= ROLE_RANK["approver"]:
        return None
    if action == "approve":
        return f"{verb} needs the approver role"
    if rank >= ROLE_RANK["requester"]:
        if item.get("requested_by") == me.get("user"):
            return None
        return f"{verb} someone else's request needs the approver role"
    return f"{verb} needs the requester role (own requests) or the approver role"


def md_escape(text: str) -> str:
    """Text shown through st.markdown as is (a user name like a_b_c stays plain)."""
    return "".join("\\" + c if c in "\\`*_[]<>#|~" else c for c in str(text))


# --- Streamlit pieces ---------------------------------------------------------------------------


def default_token() -> str:
    """The API token the sidebar starts with (`patchpilot up` passes its local admin token)."""
    return os.environ.get("PATCHPILOT_TOKEN", "").strip()


def browser_headers() -> dict[str, str]:
    """The headers of the browser's request to the UI (where the OAuth proxy puts who signed in)."""
    try:
        return st.context.headers.to_dict()
    except Exception:  # noqa: BLE001 - no browser request (a bare script run): no headers
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


def render_identity(client: PatchpilotClient, via_proxy: bool) -> tuple[dict[str, Any] | None, ApiError | None]:
    """'Signed in as …' from GET /api/v1/me, or the sign-in message on a 401. Keeps the answer for the page."""
    try:
        me, error = {**client.me()}, None
    except ApiError as exc:
        me, error = None, exc
    st.session_state["pp_me"] = me
    if me is not None:
        st.markdown(f"Signed in as **{md_escape(me.get('user', '?'))}** ({md_escape(roles_text(me))})")
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
    except Exception as exc:  # noqa: BLE001 - a payload we did not expect must not crash the page
        st.error(f"{what}: unexpected problem ({type(exc).__name__}: {exc})")


def render_status(system: Mapping[str, Any] | None, error: ApiError | None = None) -> None:
    """The status line: which intent engine answers and which components are reachable."""
    if system is None:
        st.markdown("🔴 **API unreachable**")
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


# -- proposal card --


def _decision_key(request_id: str) -> str:
    return f"pp_decision:{request_id}"


def _decision_error_key(request_id: str) -> str:
    return f"pp_decision_error:{request_id}"


def _after_refusal(key: str, exc: ApiError) -> None:
    """After a failed click: whether the buttons come back, and for whom."""
    if exc.status_code is None or exc.status_code >= 500:
        # Nothing changed server-side on a transport error or a 5xx: let the operator try again.
        st.session_state.pop(key, None)
    elif exc.is_unauthorized or exc.is_forbidden:
        # Refused for who clicked (role, four-eyes): the buttons stay off for them, and come back when
        # someone else signs in.
        st.session_state[key] = {**st.session_state[key], "refused": True}


def _clear_refusal_for_someone_else(key: str, error_key: str) -> None:
    decided = st.session_state.get(key)
    if isinstance(decided, dict) and decided.get("refused") and decided.get("by") != _signed_in_user():
        st.session_state.pop(key, None)
        st.session_state.pop(error_key, None)


def _decide(client: PatchpilotClient, request_id: str, action: str) -> None:
    """Button callback. Runs before the page redraws, so the buttons come back disabled."""
    key = _decision_key(request_id)
    if st.session_state.get(key):
        return  # second click of a double click
    st.session_state[key] = {"action": action, "by": _signed_in_user()}
    st.session_state.pop(_decision_error_key(request_id), None)
    client = session_client(client.base_url)
    try:
        if action == "approve":
            client.approve(request_id)
        else:
            client.reject(request_id)
    except ApiError as exc:
        st.session_state[_decision_error_key(request_id)] = f"Could not {action}: {exc}"
        _after_refusal(key, exc)


def render_proposal_card(client: PatchpilotClient, item: Mapping[str, Any]) -> None:
    """A proposal with what it would do and Approve / Reject while it waits for a decision."""
    request_id = str(item.get("id", ""))
    state = item.get("state", "proposed")
    hosts = host_names(item.get("hosts") or [])
    action = "Pre-checks" if item.get("action") == "precheck" else "Patch"
    # The card is drawn once per page run while the progress view below refreshes on its own: once the
    # run started, the card shows the decision so it never contradicts the live state under it.
    badge = state_badge("approved" if shows_progress(state) else state)
    with st.container(border=True):
        st.markdown(f"**{action} proposal** · {len(hosts)} host{'s' if len(hosts) != 1 else ''} · {badge}")
        st.markdown("**Target hosts**")
        for env, names in environment_groups(item):
            colour = "red" if env == "prod" else "orange" if env == "staging" else "blue"
            st.markdown(f":{colour}[**{env}**] ({len(names)}): {', '.join(names)}")
        group = item.get("patch_group", "")
        description = item.get("patch_group_description") or ""
        st.markdown(f"**Patch group:** {group}" + (f" — {description}" if description else ""))
        st.markdown(f"**Reboot:** {REBOOT_TEXT.get(item.get('reboot', ''), item.get('reboot', ''))}")
        if item.get("check_mode"):
            st.markdown("**Dry run:** yes — check mode, nothing will be changed")
        else:
            st.markdown("**Dry run:** no — changes will be applied")
        notes = [n for n in item.get("notes") or [] if n]
        if notes:
            st.info("\n".join(f"- {n}" for n in notes))
        if state == "proposed" and item.get("expires_at"):
            st.caption(f"Expires at {fmt_time(item['expires_at'])}")

        _clear_refusal_for_someone_else(_decision_key(request_id), _decision_error_key(request_id))
        decided = st.session_state.get(_decision_key(request_id))
        if state == "proposed" or decided:
            disabled = bool(decided) or state != "proposed"
            me = signed_in()
            why_not = {a: refusal(me, a, item) for a in ("approve", "reject")}
            left, right, _ = st.columns([1, 1, 4])
            left.button(
                "Approve",
                key=f"approve:{request_id}",
                type="primary",
                disabled=disabled or why_not["approve"] is not None,
                help=_capitalized(why_not["approve"]),
                on_click=_decide,
                args=(client, request_id, "approve"),
            )
            right.button(
                "Reject",
                key=f"reject:{request_id}",
                disabled=disabled or why_not["reject"] is not None,
                help=_capitalized(why_not["reject"]),
                on_click=_decide,
                args=(client, request_id, "reject"),
            )
            reasons = [r for r in why_not.values() if r]
            if not disabled and reasons:
                st.caption(_not_allowed_text(me, reasons))
        error = st.session_state.get(_decision_error_key(request_id))
        if error:
            st.error(error)
        elif state == "rejected":
            st.caption("Rejected" + (f" by {item['decided_by']}" if item.get("decided_by") else ""))
        elif state == "expired":
            st.caption("This proposal expired without a decision.")
        elif item.get("approved_by"):
            st.caption(f"Approved by {item['approved_by']}")


def _capitalized(text: str | None) -> str | None:
    return text[:1].upper() + text[1:] if text else None


def _not_allowed_text(me: Mapping[str, Any] | None, reasons: Sequence[str]) -> str:
    who = f"Signed in as {md_escape(me.get('user', '?'))} ({md_escape(roles_text(me))})" if me else "Not signed in"
    return f"{who}: {'; '.join(reasons)}."


def shows_progress(state: str) -> bool:
    """A request that was approved has a run to follow; a proposal, rejection or expiry has none."""
    return state not in ("proposed", "rejected", "expired", "")


# -- live progress --


def _cancel(client: PatchpilotClient, request_id: str) -> None:
    key = f"pp_cancel:{request_id}"
    if st.session_state.get(key):
        return
    st.session_state[key] = {"action": "cancel", "by": _signed_in_user()}
    st.session_state.pop(f"pp_cancel_error:{request_id}", None)
    client = session_client(client.base_url)
    try:
        client.cancel(request_id)
    except ApiError as exc:
        st.session_state[f"pp_cancel_error:{request_id}"] = f"Could not cancel: {exc}"
        _after_refusal(key, exc)


def _draw_timeline(req: Mapping[str, Any]) -> None:
    columns = st.columns(len(STAGE_ORDER))
    for column, step in zip(columns, timeline_steps(req), strict=True):
        text = f"{STEP_ICONS[step['status']]} **{step['label']}**"
        if step["status"] == "pending":
            text = f"{STEP_ICONS['pending']} :gray[{step['label']}]"
        elif step["status"] == "skipped":
            text = f"{STEP_ICONS['skipped']} :gray[{step['label']} (skipped)]"
        if step["at"]:
            text += f"  \n:gray[{step['at']}]"
        column.markdown(text)


def events_cursor(after: int, counters: Sequence[int], final: bool) -> int:
    """The `after` of the next events fetch. A running job's events can be stored out of order (25 after 26),
    so the cursor only moves over an unbroken run of counters and a late event is still fetched next time;
    once the run ended every event is stored and the cursor moves to the last one."""
    got = set(counters)
    if final:
        return max(after, *got) if got else after
    while after + 1 in got:
        after += 1
    return after


def _draw_events(client: PatchpilotClient, request_id: str, final: bool = False) -> None:
    """The newest job events, fetched incrementally so a refresh only asks for what is new."""
    key = f"pp_events:{request_id}"
    seen = st.session_state.setdefault(key, {"after": 0, "items": []})
    try:
        new = client.events(request_id, after=seen["after"])
    except ApiError as exc:
        st.caption(f"Job events unavailable: {exc}")
        new = []
    if new:
        def counter(event: Mapping[str, Any]) -> int:
            return int(event.get("counter") or 0)

        known = {counter(e) for e in seen["items"]}
        merged = seen["items"] + [e for e in new if counter(e) not in known]
        seen["items"] = sorted(merged, key=counter)[-MAX_EVENTS_KEPT:]
        seen["after"] = events_cursor(seen["after"], [counter(e) for e in new], final)
    if not seen["items"]:
        return
    with st.expander(f"Job events ({len(seen['items'])})"):
        lines = []
        for e in seen["items"][-30:]:
            mark = "FAILED " if e.get("failed") else "changed " if e.get("changed") else ""
            where = " ".join(x for x in (e.get("host"), e.get("task") or e.get("play")) if x)
            lines.append(f"{fmt_time(e.get('created'), with_date=False)} {mark}{e.get('event', '')} {where}".strip())
        st.code("\n".join(lines), language=None)


def draw_progress(client: PatchpilotClient, req: Mapping[str, Any]) -> None:
    """Everything the progress view shows for one snapshot of a request."""
    request_id = str(req.get("id", ""))
    state = req.get("state", "")
    header = f"**Run {request_id[:8]}** · {state_badge(state)}"
    if req.get("check_mode"):
        header += " · dry run"
    duration = fmt_duration(req.get("started_at"), req.get("finished_at"))
    if duration:
        header += f" · {duration}"
    st.markdown(header)

    _draw_timeline(req)

    progress = req.get("progress") or 0.0
    progress = min(max(float(progress), 0.0), 1.0)
    latest = req.get("latest_task")
    st.progress(progress, text=f"Latest task: {latest}" if latest else f"{int(progress * 100)} %")

    if state == "succeeded":
        st.success(STAGE_LABELS["completed"] + (" (dry run, nothing changed)" if req.get("check_mode") else ""))
    ended_badly = terminal_label(req)
    if ended_badly:
        reason = req.get("failure_reason") or "no reason given"
        failing = failing_hosts(req)
        text = f"**{ended_badly}**: {reason}"
        if failing:
            text += f"  \nFailing hosts: {', '.join(failing)}"
        (st.warning if state == "canceled" else st.error)(text)

    rows = host_rows(req)
    if rows:
        st.dataframe(
            rows,
            hide_index=True,
            column_config={
                "name": "Host",
                "status": "Status",
                "ok": st.column_config.NumberColumn("ok"),
                "changed": st.column_config.NumberColumn("changed"),
                "failed": st.column_config.NumberColumn("failed"),
                "unreachable": st.column_config.NumberColumn("unreachable"),
            },
        )

    if req.get("awx_job_url"):
        st.markdown(f"[AWX job {req.get('awx_job_id') or ''}]({req['awx_job_url']})")

    _clear_refusal_for_someone_else(f"pp_cancel:{request_id}", f"pp_cancel_error:{request_id}")
    if state in CANCELABLE_STATES:
        why_not = refusal(signed_in(), "cancel", req)
        st.button(
            "Cancel",
            key=f"cancel:{request_id}",
            disabled=bool(st.session_state.get(f"pp_cancel:{request_id}")) or why_not is not None,
            help=_capitalized(why_not),
            on_click=_cancel,
            args=(client, request_id),
        )
    cancel_error = st.session_state.get(f"pp_cancel_error:{request_id}")
    if cancel_error:
        st.error(cancel_error)

    if state not in ("proposed", "approved"):
        _draw_events(client, request_id, final=state in TERMINAL_STATES)


def _live_progress(client: PatchpilotClient, request_id: str, refreshing: bool) -> None:
    """Body of the progress fragment; on a timed rerun it fetches the request again."""
    req = st.session_state.pop(f"pp_prefetched:{request_id}", None)
    if req is None:
        try:
            req = client.get_request(request_id)
        except ApiError as exc:
            # Keep refreshing: the API may come back.
            st.warning(f"Live update failed, retrying: {exc}")
            return
    if refreshing and req.get("state") in TERMINAL_STATES:
        # Redraw the whole page so the fragment is registered again without its timer.
        st.rerun(scope="app")
    with shown_errors("Could not draw the progress"):
        draw_progress(client, req)


def render_progress(client: PatchpilotClient, request_id: str, req: Mapping[str, Any] | None = None) -> None:
    """The live progress view: refreshes itself every REFRESH_SECONDS until the request ends."""
    if req is None:
        try:
            req = client.get_request(request_id)
        except ApiError as exc:
            st.error(f"Could not load request {request_id[:8]}: {exc}")
            return
    st.session_state[f"pp_prefetched:{request_id}"] = req
    refreshing = req.get("state") not in TERMINAL_STATES
    # Only this part reruns on the timer; a terminal request gets no timer at all.
    live = st.fragment(run_every=REFRESH_SECONDS if refreshing else None)(_live_progress)
    live(client, request_id, refreshing)


# -- jobs --


def render_jobs(client: PatchpilotClient) -> None:
    """Recent requests, and the progress view of the one picked (kept in the URL as ?request=<id>)."""
    st.subheader("Jobs")
    state = st.selectbox("State", ("all", *ALL_STATES), key="pp_jobs_state")
    try:
        items = client.list_requests(state=None if state == "all" else state, limit=50)
    except ApiError as exc:
        st.error(f"Could not load the jobs: {exc}")
        items = []
    else:
        if items:
            st.dataframe(
                job_rows(items),
                hide_index=True,
                column_config={"AWX job": st.column_config.LinkColumn("AWX job", display_text="open")},
            )
        else:
            st.info("No requests yet." if state == "all" else f"No requests in state {state}.")

    by_id = {str(r.get("id")): r for r in items}
    wanted = st.session_state.get("pp_jobs_open")
    if wanted and wanted not in by_id:
        # Opened by link, or filtered out of the list: fetch it on its own.
        try:
            by_id[wanted] = client.get_request(wanted)
        except ApiError as exc:
            st.error(f"Could not load request {wanted[:8]}: {exc}")
            st.session_state["pp_jobs_open"] = None
    if not by_id:
        st.query_params.pop("request", None)
        return
    chosen = st.selectbox(
        "Open the progress view of",
        list(by_id),
        index=None,
        placeholder="Choose a request",
        format_func=lambda rid: request_choice_label(by_id[rid]),
        key="pp_jobs_open",
    )
    if not chosen:
        st.query_params.pop("request", None)
        return
    st.query_params["request"] = chosen
    req = by_id[chosen]
    with st.container(border=True):
        if shows_progress(req.get("state", "")):
            render_progress(client, chosen, req)
        else:
            render_proposal_card(client, req)
