"""patchpilot chat UI: `streamlit run ui/app.py`.

Talks to the patchpilot API over HTTP only; the API address comes from `API_URL`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from core.settings import get_settings
from ui import views
from ui.client import ApiError, PatchpilotClient

EXAMPLE_PROMPT = "Patch server <host> with <patch group>, no reboot"


def get_client() -> PatchpilotClient:
    """The session's API client for the current identity (rebuilt when the address or the identity changes)."""
    return views.session_client(get_settings().api_url)


# --- sidebar ------------------------------------------------------------------------------------


def _open_conversation(conversation_id: str | None) -> None:
    st.session_state["pp_conversation"] = conversation_id
    st.session_state.pop("pp_chat_error", None)
    st.session_state.pop("pp_last_reply", None)


def render_conversation_list(client: PatchpilotClient) -> None:
    st.button("➕ New conversation", on_click=_open_conversation, args=(None,), width="stretch")
    try:
        conversations = client.conversations()
    except ApiError as exc:
        st.caption(f"Conversations unavailable: {exc}")
        return
    current = st.session_state.get("pp_conversation")
    for conv in conversations[:30]:
        title = (conv.get("title") or "Untitled").strip()
        st.button(
            title if len(title) <= 40 else title[:39] + "…",
            key=f"conv:{conv['id']}",
            help=f"Started {views.fmt_time(conv.get('created_at'))}",
            type="primary" if conv["id"] == current else "secondary",
            on_click=_open_conversation,
            args=(conv["id"],),
            width="stretch",
        )


# --- chat ---------------------------------------------------------------------------------------


def send_message(client: PatchpilotClient, text: str) -> None:
    text = text.strip()
    if not text:
        return
    st.session_state.pop("pp_chat_error", None)
    try:
        with st.spinner("Thinking…"):
            reply = client.chat(text, st.session_state.get("pp_conversation"))
    except ApiError as exc:
        st.session_state["pp_chat_error"] = (text, f"Message not sent: {exc}")
        return
    st.session_state["pp_conversation"] = reply.get("conversation_id")
    st.session_state["pp_last_reply"] = reply


def render_request_inline(client: PatchpilotClient, item: Mapping[str, Any]) -> None:
    """A proposal card, followed by the live progress once it was approved."""
    views.render_proposal_card(client, item)
    if views.shows_progress(item.get("state", "")):
        views.render_progress(client, str(item["id"]), item)


def render_proposal_by_id(client: PatchpilotClient, request_id: str) -> None:
    try:
        item = client.get_request(request_id)
    except ApiError as exc:
        st.error(f"Could not load proposal {request_id[:8]}: {exc}")
        return
    render_request_inline(client, item)


def chat_page(client: PatchpilotClient) -> None:
    me = views.signed_in()
    # Reading is for everyone; asking for changes needs the requester role (the API checks it as well).
    read_only = me is not None and views.role_rank(me.get("roles")) < views.ROLE_RANK["requester"]
    placeholder = "Read only: asking for changes needs the requester role" if read_only else f"e.g. {EXAMPLE_PROMPT}"
    prompt = st.chat_input(placeholder, key="pp_chat_input", disabled=read_only)
    if prompt:
        send_message(client, prompt)

    conversation_id = st.session_state.get("pp_conversation")
    shown_proposals: set[str] = set()
    if conversation_id:
        try:
            messages = client.messages(conversation_id)
        except ApiError as exc:
            st.error(f"Could not load the conversation: {exc}")
            messages = []
        for message in messages:
            role = "user" if message.get("role") == "user" else "assistant"
            with st.chat_message(role):
                st.markdown(message.get("text") or "")
                proposal_id = message.get("proposal_id")
                if proposal_id and proposal_id not in shown_proposals:
                    shown_proposals.add(proposal_id)
                    with views.shown_errors("Could not show the proposal"):
                        render_proposal_by_id(client, proposal_id)
    else:
        st.markdown(
            "Ask for a patch run in plain words, for example "
            f"*{EXAMPLE_PROMPT}*. You will see a proposal to approve before anything runs."
        )

    # A proposal from the last reply that the history does not carry (yet) is still shown.
    last = st.session_state.get("pp_last_reply") or {}
    proposal = last.get("proposal")
    if last.get("conversation_id") == conversation_id and proposal and proposal.get("id") not in shown_proposals:
        with st.chat_message("assistant"):
            if not conversation_id:
                st.markdown(last.get("reply") or "")
            with views.shown_errors("Could not show the proposal"):
                render_proposal_by_id(client, proposal["id"])

    failed = st.session_state.get("pp_chat_error")
    if failed:
        text, error = failed
        with st.chat_message("user"):
            st.markdown(text)
        st.error(error)


# --- page ---------------------------------------------------------------------------------------


def main() -> None:
    st.set_page_config(page_title="patchpilot", page_icon="🩹", layout="wide")
    st.session_state.setdefault("pp_token", views.default_token())

    try:
        get_settings()
    except Exception as exc:  # noqa: BLE001 - a bad environment variable should read as one
        st.error(f"The UI configuration is invalid: {exc}")
        st.stop()

    if not st.session_state.get("pp_link_read"):
        # A link with ?request=<id> opens that request's progress view once per session.
        st.session_state["pp_link_read"] = True
        linked = st.query_params.get("request")
        if linked:
            st.session_state["pp_page"] = "Jobs"
            st.session_state["pp_jobs_open"] = linked

    with st.sidebar:
        st.title("🩹 patchpilot")
        via_proxy = views.proxy_signed_in()
        if not via_proxy:
            # Behind the OAuth proxy the person is already known; otherwise an API token says who they are.
            st.text_input(
                "API token",
                key="pp_token",
                type="password",
                help="Your patchpilot API token (patchpilot token create NAME --role requester|approver|viewer).",
            )
        client = get_client()
        _me, me_error = views.render_identity(client, via_proxy)
    if me_error is not None and me_error.is_unauthorized:
        # Nothing can be read without an identity; the sidebar says how to sign in.
        st.info("Sign in to see the chat and the jobs." if via_proxy else
                "Sign in to see the chat and the jobs: paste your API token into the **API token** field in the sidebar.")
        return

    with st.sidebar:
        try:
            system, system_error = client.system(), None
        except ApiError as exc:
            system, system_error = None, exc
        with views.shown_errors("Status unavailable"):
            views.render_status(system, system_error)
        page = st.radio("View", ("Chat", "Jobs"), key="pp_page", horizontal=True)
        # Filled after the page, so a conversation started by this run's message is listed.
        conversations_box = st.container()

    if system_error is not None:
        st.error(str(system_error))
    if page == "Jobs":
        with views.shown_errors("Could not show the jobs"):
            views.render_jobs(client)
    else:
        st.query_params.pop("request", None)
        with views.shown_errors("Could not show the chat"):
            chat_page(client)
        with conversations_box:
            st.subheader("Conversations")
            with views.shown_errors("Conversations unavailable"):
                render_conversation_list(client)


main()
