"""The Chat page: the conversation with the assistant, its proposals (each a live card), the conversations list,
and a message the API did not take kept with Retry."""

from __future__ import annotations

import streamlit as st

from ui.client import ApiError, PatchpilotClient
from ui.models import ChatReply
from ui.views.common import fmt_time
from ui.views.progress import render_request
from ui.views.session import current_meta, shown_errors, signed_in

EXAMPLE_PROMPT = "Patch server <host> with <patch group>, no reboot"
MAX_CONVERSATIONS = 30
MAX_TITLE = 40


def open_conversation(conversation_id: str | None) -> None:
    st.session_state["pp_conversation"] = conversation_id
    st.session_state["pp_page"] = "Chat"
    for key in ("pp_open_request", "pp_chat_error", "pp_last_reply"):
        st.session_state.pop(key, None)


def render_conversation_list(client: PatchpilotClient) -> None:
    st.button("➕ New conversation", on_click=open_conversation, args=(None,), width="stretch")
    try:
        conversations = client.conversations()
    except ApiError as exc:
        st.caption(f"Conversations unavailable: {exc}")
        return
    current = st.session_state.get("pp_conversation")
    for conv in conversations[:MAX_CONVERSATIONS]:
        title = conv.title.strip() or "Untitled"
        st.button(
            title if len(title) <= MAX_TITLE else title[: MAX_TITLE - 1] + "…",
            key=f"conv:{conv.id}",
            help=f"Started {fmt_time(conv.created_at)}",
            type="primary" if conv.id == current else "secondary",
            on_click=open_conversation,
            args=(conv.id,),
            width="stretch",
        )


def send_message(client: PatchpilotClient, text: str) -> None:
    text = text.strip()
    if not text:
        return
    st.session_state.pop("pp_chat_error", None)
    try:
        with st.spinner("Thinking…"):
            reply = client.chat(text, st.session_state.get("pp_conversation"))
    except ApiError as exc:
        # Only the last failure is shown, with the text kept and a Retry button.
        st.session_state["pp_chat_error"] = (text, f"Message not sent: {exc}")
        return
    st.session_state["pp_conversation"] = reply.conversation_id
    st.session_state["pp_last_reply"] = reply


def _retry_message() -> None:
    failed = st.session_state.get("pp_chat_error")
    if failed:
        st.session_state["pp_retry_text"] = failed[0]


def show_unsent() -> None:
    """The last message the API did not take, with its reason and Retry."""
    failed = st.session_state.get("pp_chat_error")
    if failed:
        text, error = failed
        with st.chat_message("user"):
            st.markdown(text)
        st.error(error)
        st.button("Retry sending", key="pp_retry", on_click=_retry_message)


def chat_box_only(client: PatchpilotClient) -> None:
    """While the API does not answer: the chat box (what is typed there stays) and the unsent message."""
    prompt = st.chat_input(f"e.g. {EXAMPLE_PROMPT}", key="pp_chat_input")
    if prompt:
        send_message(client, prompt)  # kept with Retry when it fails; Retry sends it once the API is back
    show_unsent()


def _history(client: PatchpilotClient, conversation_id: str) -> set[str]:
    """The conversation's messages, each proposal as its live card; returns the proposals shown."""
    shown: set[str] = set()
    try:
        messages = client.messages(conversation_id)
    except ApiError as exc:
        st.error(f"Could not load the conversation: {exc}")
        messages = []
    for message in messages:
        with st.chat_message("user" if message.role == "user" else "assistant"):
            st.markdown(message.text)
        if message.proposal_id and message.proposal_id not in shown:
            shown.add(message.proposal_id)
            with shown_errors("Could not show the proposal"):
                render_request(client, message.proposal_id, in_chat=True)
    return shown


def chat_page(client: PatchpilotClient) -> None:
    me = signed_in()
    # Reading is for everyone; asking for changes needs more than the lowest role (the API checks it as well).
    read_only = me is not None and current_meta().only_reads(me.roles)
    placeholder = "Read only: asking for changes needs the requester role" if read_only else f"e.g. {EXAMPLE_PROMPT}"
    prompt = st.chat_input(placeholder, key="pp_chat_input", disabled=read_only)
    retry = st.session_state.pop("pp_retry_text", None)
    if prompt or retry:
        send_message(client, prompt or retry)

    conversation_id = st.session_state.get("pp_conversation")
    shown: set[str] = set()
    if conversation_id:
        shown = _history(client, conversation_id)
    else:
        st.markdown(
            "Ask for a patch run in plain words, for example "
            f"*{EXAMPLE_PROMPT}*. You will see a proposal to approve before anything runs."
        )

    # A proposal from the last reply that the history does not carry (yet) is still shown.
    last = st.session_state.get("pp_last_reply")
    if isinstance(last, ChatReply) and last.conversation_id == conversation_id and last.proposal \
            and last.proposal.id not in shown:
        with st.chat_message("assistant"):
            if not conversation_id:
                st.markdown(last.reply)
        with shown_errors("Could not show the proposal"):
            render_request(client, last.proposal.id, in_chat=True)

    show_unsent()
