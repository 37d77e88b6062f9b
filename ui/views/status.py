"""The status line in the sidebar: which intent engine answers and which components are reachable, checked again
every few seconds on its own (the page redraws itself when the API goes away or comes back)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from ui.client import ApiError
from ui.models import SystemStatus
from ui.views.session import session_client, shown_errors

STATUS_REFRESH = 5.0
DOTS = {"ok": "🟢", "down": "🔴", "unconfigured": "⚪"}
COMPONENTS = (("api", "API"), ("database", "Database"), ("broker", "Broker"), ("awx", "AWX"))
# The inventory synced from AWX: a failing sync, a template problem or no sync yet is worth a warning.
TROUBLED_INVENTORY = ("stale", "failing", "never")


def render_status(system: SystemStatus | Mapping[str, Any] | None, error: ApiError | None = None) -> None:
    """The status line: which intent engine answers and which components are reachable."""
    if system is None:
        st.markdown("🔴 **API unreachable**: retrying every few seconds")
        if error is not None:
            st.caption(str(error))
        return
    status = system if isinstance(system, SystemStatus) else SystemStatus.model_validate(system)
    st.markdown(f"Intent engine: **{status.engine_label or status.engine or 'unknown'}**")
    parts = []
    for key, name in COMPONENTS:
        value = getattr(status, key) or "unknown"
        parts.append(f"{DOTS.get(value, '🟠')} {name}" + ("" if value == "ok" else f" ({value})"))
    st.markdown(" · ".join(parts))
    if status.awx_url:
        st.caption(f"AWX: {status.awx_url}")
    if status.inventory_line:
        inventory = status.inventory or {}
        troubled = inventory.get("state") in TROUBLED_INVENTORY or bool(inventory.get("problems"))
        (st.warning if troubled else st.caption)(status.inventory_line)


def _status_body(base_url: str) -> None:
    client = session_client(base_url)
    system: SystemStatus | None = None
    error: ApiError | None = None
    try:
        system = client.system()
    except ApiError as exc:
        error = exc
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
