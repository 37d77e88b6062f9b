"""patchpilot chat UI: `streamlit run ui/app.py`.

Talks to the patchpilot API over HTTP only; the API address comes from `API_URL`. What is open is kept in the
URL: `?conversation=<id>` for a conversation, `?request=<id>` for one request (a link anyone can be sent).
"""

from __future__ import annotations

import streamlit as st

from core.settings import get_settings
from ui import views
from ui.client import ApiError, PatchpilotClient

EXAMPLE_PROMPT = "Patch server <host> with <patch group>, no reboot"
PAGES = ("Chat", "Approvals", "Jobs")
# Streamlit's own header controls (Deploy, and Stop next to "Running…") are not for operators: "Stop" would read as
# stopping a patch run. .streamlit/config.toml sets the toolbar to minimal; this hides what remains.
HIDE_DEVELOPER_CONTROLS = """<style>
[data-testid="stAppDeployButton"], [data-testid="stMainMenu"], [data-testid="stStatusWidget"] button {display: none;}
</style>"""


def get_client() -> PatchpilotClient:
    """The session's API client for the current identity (rebuilt when the address or the identity changes)."""
    return views.session_client(get_settings().api_url)


# --- sidebar ------------------------------------------------------------------------------------


def _open_conversation(conversation_id: str | None) -> None:
    st.session_state["pp_conversation"] = conversation_id
    st.session_state["pp_page"] = "Chat"
    st.session_state.pop("pp_open_request", None)
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
        # Only the last failure is shown, with the text kept and a Retry button.
        st.session_state["pp_chat_error"] = (text, f"Message not sent: {exc}")
        return
    st.session_state["pp_conversation"] = reply.get("conversation_id")
    st.session_state["pp_last_reply"] = reply


def _retry_message() -> None:
    failed = st.session_state.get("pp_chat_error")
    if failed:
        st.session_state["pp_retry_text"] = failed[0]


def chat_page(client: PatchpilotClient) -> None:
    me = views.signed_in()
    # Reading is for everyone; asking for changes needs the requester role (the API checks it as well).
    read_only = me is not None and views.role_rank(me.get("roles")) < views.ROLE_RANK["requester"]
    placeholder = "Read only: asking for changes needs the requester role" if read_only else f"e.g. {EXAMPLE_PROMPT}"
    prompt = st.chat_input(placeholder, key="pp_chat_input", disabled=read_only)
    retry = st.session_state.pop("pp_retry_text", None)
    if prompt or retry:
        send_message(client, prompt or retry)

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
                    views.render_request(client, proposal_id, in_chat=True)
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
            views.render_request(client, proposal["id"], in_chat=True)

    show_unsent()


def show_unsent() -> None:
    """The last message the API did not take, with its reason and Retry."""
    failed = st.session_state.get("pp_chat_error")
    if failed:
        text, error = failed
        with st.chat_message("user"):
            st.markdown(text)
        st.error(error)
        st.button("Retry sending", key="pp_retry", on_click=_retry_message)


def _close_request() -> None:
    st.session_state.pop("pp_open_request", None)


def request_page(client: PatchpilotClient, request_id: str) -> None:
    """One request on its own page (?request=<id>): the card, its run, and where it came from."""
    top, back = st.columns([5, 1])
    top.subheader(f"Request {request_id[:8]}")
    back.button("← Back", key="pp_close_request", on_click=_close_request)
    st.caption(f"Link to this request: {views.absolute_link(request_id)}")
    with views.shown_errors("Could not show the request"):
        views.render_request(client, request_id)
    prefetched = st.session_state.get(f"pp_prefetched:{request_id}") or {}
    conversation_id = (prefetched.get("request") or {}).get("conversation_id")
    if conversation_id:
        st.button("Open its conversation", key="pp_open_conv", on_click=_open_conversation, args=(conversation_id,))


# --- page ---------------------------------------------------------------------------------------


def read_links() -> None:
    """A link's ?request= or ?conversation= opens that request or conversation, once per session."""
    if st.session_state.get("pp_link_read"):
        return
    st.session_state["pp_link_read"] = True
    linked = st.query_params.get("request")
    if linked:
        st.session_state["pp_open_request"] = linked.strip()
    conversation = st.query_params.get("conversation")
    if conversation:
        st.session_state["pp_conversation"] = conversation.strip()
        st.session_state["pp_page"] = "Chat"


def write_links(page: str) -> None:
    """Keep the URL saying what is open, so a reload or a copied link shows the same thing."""
    open_request = st.session_state.get("pp_open_request")
    conversation = st.session_state.get("pp_conversation")
    wanted: dict[str, str] = {}
    if open_request:
        wanted["request"] = open_request
    elif page == "Chat" and conversation:
        wanted["conversation"] = conversation
    for key in ("request", "conversation"):
        if key in wanted:
            if st.query_params.get(key) != wanted[key]:
                st.query_params[key] = wanted[key]
        elif key in st.query_params:
            del st.query_params[key]


def main() -> None:
    st.set_page_config(page_title="patchpilot", page_icon="🩹", layout="wide")
    st.markdown(HIDE_DEVELOPER_CONTROLS, unsafe_allow_html=True)
    st.session_state.setdefault("pp_token", views.default_token())

    try:
        settings = get_settings()
    except Exception as exc:
        st.error(f"The UI configuration is invalid: {exc}")
        st.stop()

    read_links()
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
        me, me_error = views.render_identity(client, via_proxy)
    if me_error is not None and me_error.is_unauthorized:
        # Nothing can be read without an identity; the sidebar says how to sign in.
        st.info("Sign in to see the chat and the jobs." if via_proxy else
                "Sign in to see the chat and the jobs: paste your API token into the **API token** field in the sidebar.")
        return

    with st.sidebar:
        api_up = views.render_status_live(settings.api_url) and not (me_error is not None and me_error.status_code is None)
        if api_up:
            views.load_meta(client)
            inbox = views.load_inbox(client)
            st.session_state["pp_inbox_count"] = (inbox or {}).get("count") or 0
        waiting = st.session_state.get("pp_inbox_count") or 0
        if waiting:
            st.markdown(f"📥 **{waiting}** waiting for your approval: see **Approvals**")
        page = st.radio("View", PAGES, key="pp_page", horizontal=True)
        # Filled after the page, so a conversation started by this run's message is listed.
        conversations_box = st.container()

    if me is not None:
        # Also on a phone, where the sidebar is folded away: who is acting.
        waiting = st.session_state.get("pp_inbox_count") or 0
        st.caption(views.identity_line(me) + (f" · 📥 {waiting} waiting for your approval" if waiting else ""))
    if not api_up:
        st.error("The patchpilot API does not answer. This page keeps trying and redraws itself when it is back; "
                 "nothing you typed is lost.")

    open_request = st.session_state.get("pp_open_request")
    if not api_up:
        # Every call would wait for its timeout: draw only the chat box (what is typed there stays) until the
        # status line, which checks again on its own, sees the API back and redraws the page.
        if page == "Chat" and not open_request:
            prompt = st.chat_input(f"e.g. {EXAMPLE_PROMPT}", key="pp_chat_input")
            if prompt:
                send_message(client, prompt)  # kept with Retry when it fails; Retry sends it once the API is back
            show_unsent()
        write_links(page)
        return
    if open_request:
        request_page(client, open_request)
    elif page == "Jobs":
        with views.shown_errors("Could not show the jobs"):
            views.render_jobs(client)
    elif page == "Approvals":
        with views.shown_errors("Could not show the approvals"):
            views.render_inbox(client)
    else:
        with views.shown_errors("Could not show the chat"):
            chat_page(client)
    write_links(page)
    if page == "Chat" or open_request:
        with conversations_box:
            st.subheader("Conversations")
            with views.shown_errors("Conversations unavailable"):
                render_conversation_list(client)


main()
