"""Session plumbing: the API client for the identity in force, who is signed in, the domain's words, and errors
shown as messages instead of tracebacks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import streamlit as st

from ui.client import ApiError, PatchpilotClient, auth_headers, proxy_identity
from ui.config import load_config
from ui.meta import Meta
from ui.models import Me
from ui.views.common import md_escape, request_link


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


def current_meta() -> Meta:
    """The domain's words as last read from the API (empty until then: words are then shown as they are)."""
    meta = st.session_state.get("pp_meta_data")
    return meta if isinstance(meta, Meta) else Meta()


def load_meta(client: PatchpilotClient) -> Meta:
    """The API's words, read once per session (again after a failure)."""
    if not isinstance(st.session_state.get("pp_meta_data"), Meta):
        with contextlib.suppress(ApiError):
            st.session_state["pp_meta_data"] = client.meta()
    return current_meta()


def signed_in() -> Me | None:
    """The person the API answered /me with on this page run (None when not known)."""
    me = st.session_state.get("pp_me")
    return me if isinstance(me, Me) else None


def me_is(user: str | None) -> bool:
    me = signed_in()
    return bool(me and user and me.user.strip().lower() == user.strip().lower())


def roles_text(me: Me) -> str:
    return ", ".join(me.roles) or "no role"


def identity_line(me: Me) -> str:
    return f"Signed in as **{md_escape(me.user)}** ({md_escape(roles_text(me))})"


def sign_in_message(error: ApiError, via_proxy: bool) -> str:
    """What to do after the API answered 401."""
    said = f" (the API said: {md_escape(error.detail)})" if error.detail else ""
    if via_proxy:
        return (f"Not signed in: the API did not accept the OAuth proxy's identity{said}. "
                "Sign in again through the proxy.")
    return (
        "Not signed in: paste an API token into the **API token** field "
        f"(create one with `patchpilot token create NAME --role requester`){said}."
    )


def render_identity(client: PatchpilotClient, via_proxy: bool) -> tuple[Me | None, ApiError | None]:
    """'Signed in as …' from GET /api/v1/me, or the sign-in message on a 401. Keeps the answer for the page."""
    me: Me | None = None
    error: ApiError | None = None
    try:
        me = client.me()
    except ApiError as exc:
        error = exc
    st.session_state["pp_me"] = me
    if me is not None:
        st.markdown(identity_line(me))
        if me.via == "proxy":
            st.caption("through the OAuth proxy")
    elif error is not None and error.is_unauthorized:
        st.warning(sign_in_message(error, via_proxy))
    # Any other failure (API down) shows in the status line below.
    return me, error


def absolute_link(request_id: str) -> str:
    """The full link to send someone: the UI's address as the browser reached it, with ?request=<id>."""
    base = ""
    with contextlib.suppress(Exception):
        base = str(st.context.url or "").split("?", 1)[0]
    if not base:
        # No browser address known (a test run): the UI's configured public address.
        with contextlib.suppress(ValueError):
            base = load_config().ui_base_url + "/"
    return f"{base}{request_link(request_id)}"


@contextlib.contextmanager
def shown_errors(what: str) -> Iterator[None]:
    """Show any failure inside as a message instead of a traceback."""
    try:
        yield
    except ApiError as exc:
        st.error(f"{what}: {exc}")
    except Exception as exc:
        st.error(f"{what}: unexpected problem ({type(exc).__name__}: {exc})")
