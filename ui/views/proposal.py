"""The proposal card: what would run, on which hosts, and Approve / Reject for whoever may decide.

The card is drawn in named parts (header, targets, terms, decision, outcome). The buttons follow what the API says
the signed-in person may do (`Live.allowed`); a click is sent once, and the card shows the request as it is after.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from ui.client import ApiError
from ui.meta import Meta
from ui.models import Live, LiveRequest
from ui.views.common import (
    capitalized,
    environment_groups,
    environment_line,
    fmt_age,
    fmt_time,
    md_escape,
    plural,
)
from ui.views.session import absolute_link, me_is, roles_text, session_client, signed_in

CANCEL_NOTE = "Cancel requested"  # the run's own line says so; not repeated among the card's notes


# --- decisions: Approve / Reject / Cancel -----------------------------------------------------------------


def decision_key(request_id: str) -> str:
    return f"pp_decision:{request_id}"


def decision_error_key(request_id: str) -> str:
    return f"pp_decision_error:{request_id}"


def confirm_cancel_key(request_id: str) -> str:
    return f"pp_confirm_cancel:{request_id}"


def decide(base_url: str, request_id: str, action: str) -> None:
    """Approve / Reject / Cancel callback. Runs before the page redraws, so the button comes back disabled."""
    key = decision_key(request_id)
    decided = st.session_state.get(key) or {}
    if decided.get("pending") and decided.get("action") == action:
        return  # second click of a double click
    me = signed_in()
    st.session_state[key] = {"action": action, "by": me.user if me else "", "pending": True}
    st.session_state.pop(decision_error_key(request_id), None)
    st.session_state.pop(confirm_cancel_key(request_id), None)
    client = session_client(base_url)
    calls = {"approve": client.approve, "reject": client.reject, "cancel": client.cancel}
    try:
        calls[action](request_id)
    except ApiError as exc:
        if exc.is_conflict:
            st.session_state[decision_error_key(request_id)] = (
                f"Could not {action}: the request changed meanwhile ({exc.detail or exc}). "
                "The card shows it as it is now.")
        else:
            st.session_state[decision_error_key(request_id)] = f"Could not {action}: {exc}"
        # Nothing changed: the buttons follow what the API says the person may do now.
        st.session_state.pop(key, None)


def pending(request_id: str, actions: Sequence[str]) -> bool:
    """A click on one of these actions was sent and the page has not seen its outcome yet."""
    decided = st.session_state.get(decision_key(request_id)) or {}
    return bool(decided.get("pending")) and decided.get("action") in actions


def ask_cancel(request_id: str, ask: bool) -> None:
    st.session_state[confirm_cancel_key(request_id)] = ask


# --- the card, part by part -------------------------------------------------------------------------------


def _header(req: LiveRequest, meta: Meta) -> None:
    hosts = req.host_names
    st.markdown(f"**{meta.action_label(req.action)} proposal** · {plural(len(hosts), 'host')} · "
                f"{meta.badge(req.state)} · requested by {md_escape(req.requested_by or '?')}")


def _targets(req: LiveRequest, meta: Meta) -> None:
    st.markdown("**Target hosts**")
    for env, names in environment_groups(req, meta):
        st.markdown(environment_line(env, names, meta))
    if req.targets:  # the request as the user asked it, e.g. "live ∩ www, except www-02"
        st.caption(f"As asked: {md_escape(req.targets)}")


def _terms(req: LiveRequest, meta: Meta, waiting: bool) -> None:
    """Patch group, reboot policy, dry run, notes and, while it waits, since when and until when."""
    description = req.patch_group_description or ""
    st.markdown(f"**Patch group:** {req.patch_group or ''}" + (f" — {description}" if description else ""))
    st.markdown(f"**Reboot:** {meta.reboot_text(req.reboot)}")
    if req.check_mode:
        st.markdown("**Dry run:** yes — check mode, nothing will be changed")
    else:
        st.markdown("**Dry run:** no — changes will be applied")
    notes = [n for n in req.notes if n and not n.startswith(CANCEL_NOTE)]
    if notes:
        st.info("\n".join(f"- {n}" for n in notes))
    if waiting and req.expires_at:
        st.caption(f"Waiting for approval since {fmt_age(req.created_at)}; "
                   f"expires at {fmt_time(req.expires_at)} ({fmt_age(req.expires_at)})")


def _decision(base_url: str, live: Live) -> None:
    """Approve and Reject, disabled (with the reason) when the API says the person may not."""
    req = live.request
    approve_refused, reject_refused = live.refusal("approve"), live.refusal("reject")
    sent = pending(req.id, ("approve", "reject"))
    left, right, _ = st.columns([1, 1, 4])
    left.button("Approve", key=f"approve:{req.id}", type="primary", disabled=sent or approve_refused is not None,
                help=capitalized(approve_refused), on_click=decide, args=(base_url, req.id, "approve"))
    right.button("Reject", key=f"reject:{req.id}", disabled=sent or reject_refused is not None,
                 help=capitalized(reject_refused), on_click=decide, args=(base_url, req.id, "reject"))
    reasons = [r for r in (approve_refused, reject_refused) if r]
    if reasons and not sent:
        me = signed_in()
        who = f"Signed in as {md_escape(me.user)} ({md_escape(roles_text(me))})" if me else "Not signed in"
        st.caption(f"{who}: {'; '.join(reasons)}.")
    if approve_refused and "four-eyes" in approve_refused and me_is(req.requested_by):
        st.caption(f"Send this link to an approver: {absolute_link(req.id)}")


def _outcome(live: Live, meta: Meta) -> None:
    """How the proposal was decided: approved by whom, rejected (or replaced by a newer one), expired."""
    req = live.request
    if req.approved_by:
        when = f" at {fmt_time(req.approved_at, with_date=False)}" if req.approved_at else ""
        st.caption(f"Approved by {req.approved_by}{when}")
    elif live.replaced_by_newer:
        st.caption("Replaced by a newer proposal in this conversation.")
    elif req.decided_by:
        st.caption(f"{capitalized(meta.label(req.state))} by {req.decided_by}")
    elif meta.is_terminal(req.state, default=bool(req.terminal)):
        st.caption(f"This proposal {meta.label(req.state)} without a decision.")


def draw_card(base_url: str, live: Live, meta: Meta) -> None:
    """The proposal card; while it waits for a decision, with Approve and Reject."""
    req = live.request
    waiting = not meta.is_terminal(req.state, default=bool(req.terminal)) and not meta.is_active(req.state)
    with st.container(border=True):
        _header(req, meta)
        _targets(req, meta)
        _terms(req, meta, waiting)
        if waiting:
            _decision(base_url, live)
        error = st.session_state.get(decision_error_key(req.id))
        if error and waiting:
            st.error(error)
        if not waiting:
            _outcome(live, meta)
