"""patchpilot chat UI: `streamlit run ui/app.py`.

Talks to the patchpilot API over HTTP only (`ui.client`); the API address comes from `API_URL` (`ui.config`), and
every word of the domain from the API (`GET /api/v1/meta`). What is open is kept in the URL:
`?conversation=<id>` for a conversation, `?request=<id>` for one request (a link anyone can be sent).
"""

from __future__ import annotations

import streamlit as st

from ui.client import ApiError, PatchpilotClient
from ui.config import UiConfig, load_config
from ui.models import Me
from ui.views import chat, inbox, jobs, progress, session, status

PAGES = ("Chat", "Approvals", "Jobs")
# Streamlit's own header controls (Deploy, and Stop next to "Running…") are not for operators: "Stop" would read as
# stopping a patch run. .streamlit/config.toml sets the toolbar to minimal; this hides what remains.
HIDE_DEVELOPER_CONTROLS = """<style>
[data-testid="stAppDeployButton"], [data-testid="stMainMenu"], [data-testid="stStatusWidget"] button {display: none;}
</style>"""


def _close_request() -> None:
    st.session_state.pop("pp_open_request", None)


def request_page(client: PatchpilotClient, request_id: str) -> None:
    """One request on its own page (?request=<id>): the card, its run, and where it came from."""
    top, back = st.columns([5, 1])
    top.subheader(f"Request {request_id[:8]}")
    back.button("← Back", key="pp_close_request", on_click=_close_request)
    st.caption(f"Link to this request: {session.absolute_link(request_id)}")
    with session.shown_errors("Could not show the request"):
        progress.render_request(client, request_id)
    live = progress.last_drawn(request_id)
    if live is not None and live.request.conversation_id:
        st.button("Open its conversation", key="pp_open_conv", on_click=chat.open_conversation,
                  args=(live.request.conversation_id,))


# --- links --------------------------------------------------------------------------------------


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


# --- page ---------------------------------------------------------------------------------------


def sign_in_box(config: UiConfig) -> tuple[PatchpilotClient, Me | None, ApiError | None]:
    """The sidebar's top: the API token field (unless the OAuth proxy says who it is) and who is signed in."""
    st.title("🩹 patchpilot")
    via_proxy = session.proxy_signed_in()
    if not via_proxy:
        # Behind the OAuth proxy the person is already known; otherwise an API token says who they are.
        st.text_input(
            "API token",
            key="pp_token",
            type="password",
            help="Your patchpilot API token (patchpilot token create NAME --role requester|approver|viewer).",
        )
    client = session.session_client(config.api_url)
    me, me_error = session.render_identity(client, via_proxy)
    return client, me, me_error


def navigation(client: PatchpilotClient, config: UiConfig, me_error: ApiError | None) -> tuple[bool, str]:
    """The status line, the words and the inbox count, the page picker; (whether the API answers, the page)."""
    api_up = status.render_status_live(config.api_url) and not (me_error is not None and me_error.status_code is None)
    if api_up:
        session.load_meta(client)
        waiting_inbox = inbox.load_inbox(client)
        st.session_state["pp_inbox_count"] = waiting_inbox.count if waiting_inbox else 0
    waiting = st.session_state.get("pp_inbox_count") or 0
    if waiting:
        st.markdown(f"📥 **{waiting}** waiting for your approval: see **Approvals**")
    page = st.radio("View", PAGES, key="pp_page", horizontal=True)
    return api_up, page


def show_page(client: PatchpilotClient, page: str) -> None:
    open_request = st.session_state.get("pp_open_request")
    if open_request:
        request_page(client, open_request)
    elif page == "Jobs":
        with session.shown_errors("Could not show the jobs"):
            jobs.render_jobs(client)
    elif page == "Approvals":
        with session.shown_errors("Could not show the approvals"):
            inbox.render_inbox(client)
    else:
        with session.shown_errors("Could not show the chat"):
            chat.chat_page(client)


def main() -> None:
    st.set_page_config(page_title="patchpilot", page_icon="🩹", layout="wide")
    st.markdown(HIDE_DEVELOPER_CONTROLS, unsafe_allow_html=True)
    try:
        config = load_config()
    except ValueError as exc:
        st.error(f"The UI configuration is invalid: {exc}")
        st.stop()
    st.session_state.setdefault("pp_token", config.token)

    read_links()
    with st.sidebar:
        client, me, me_error = sign_in_box(config)
    if me_error is not None and me_error.is_unauthorized:
        # Nothing can be read without an identity; the sidebar says how to sign in.
        how = "" if session.proxy_signed_in() else ": paste your API token into the **API token** field in the sidebar"
        st.info(f"Sign in to see the chat and the jobs{how}.")
        return

    with st.sidebar:
        api_up, page = navigation(client, config, me_error)
        # Filled after the page, so a conversation started by this run's message is listed.
        conversations_box = st.container()

    if me is not None:
        # Also on a phone, where the sidebar is folded away: who is acting.
        waiting = st.session_state.get("pp_inbox_count") or 0
        st.caption(session.identity_line(me) + (f" · 📥 {waiting} waiting for your approval" if waiting else ""))
    open_request = st.session_state.get("pp_open_request")
    if not api_up:
        st.error("The patchpilot API does not answer. This page keeps trying and redraws itself when it is back; "
                 "nothing you typed is lost.")
        # Every call would wait for its timeout: draw only the chat box until the status line, which checks again
        # on its own, sees the API back and redraws the page.
        if page == "Chat" and not open_request:
            chat.chat_box_only(client)
        write_links(page)
        return
    show_page(client, page)
    write_links(page)
    if page == "Chat" or open_request:
        with conversations_box:
            st.subheader("Conversations")
            with session.shown_errors("Conversations unavailable"):
                chat.render_conversation_list(client)


main()
