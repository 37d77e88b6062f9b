"""The approvals inbox: proposals waiting for the signed-in person's approval, and their own waiting for someone."""

from __future__ import annotations

import streamlit as st

from ui.client import ApiError, PatchpilotClient
from ui.meta import Meta
from ui.models import Inbox, InboxItem
from ui.views.common import environment_groups, environment_line, fmt_age, fmt_time, md_escape, plural, request_link
from ui.views.session import current_meta, session_client

INBOX_REFRESH = 5.0


def load_inbox(client: PatchpilotClient) -> Inbox | None:
    try:
        return client.inbox()
    except ApiError:
        return None


def open_request(request_id: str) -> None:
    st.session_state["pp_open_request"] = request_id


def inbox_line(item: InboxItem, meta: Meta) -> str:
    """'**alice** asks: Patch :red[**production**] (1): www-01 with **monthly** · Reboot only if needed'."""
    envs = "; ".join(environment_line(env, names, meta) for env, names in environment_groups(item, meta))
    what = "Dry run of" if item.check_mode else "Patch"
    return (f"**{md_escape(item.requested_by or '?')}** asks: {what} {envs} with "
            f"**{md_escape(item.patch_group or '?')}** · {meta.reboot_text(item.reboot)}")


def render_inbox_items(items: list[InboxItem], meta: Meta, *, key: str) -> None:
    for item in items:
        with st.container(border=True):
            st.markdown(inbox_line(item, meta))
            st.caption(f"Asked {fmt_age(item.created_at)} · expires at {fmt_time(item.expires_at)} "
                       f"({fmt_age(item.expires_at)}) · link: {request_link(item.id)}")
            st.button("Open to decide", key=f"{key}:{item.id}", on_click=open_request, args=(item.id,))


def _inbox_body(base_url: str) -> None:
    client = session_client(base_url)
    inbox = load_inbox(client)
    if inbox is None:
        st.warning("The approvals inbox is unavailable; retrying.")
        return
    if st.session_state.get("pp_open_request"):
        st.rerun(scope="app")
    if st.session_state.get("pp_inbox_count") != inbox.count:
        st.session_state["pp_inbox_count"] = inbox.count
        st.rerun(scope="app")  # the sidebar's count follows
    meta = current_meta()
    if inbox.items:
        st.markdown(f"**{plural(len(inbox.items), 'proposal')} waiting for your approval**")
        render_inbox_items(inbox.items, meta, key="inbox")
    else:
        st.info("Nothing waits for your approval.")
    if inbox.mine:
        st.markdown("**Your proposals waiting for someone else's approval** (send the link to an approver)")
        render_inbox_items(inbox.mine, meta, key="mine")


def render_inbox(client: PatchpilotClient) -> None:
    st.subheader("Approvals")
    st.fragment(run_every=INBOX_REFRESH)(_inbox_body)(client.base_url)
