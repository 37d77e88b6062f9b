"""The Jobs page: runs (approved requests), newest first, searchable by host; a row opens its request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from ui.client import ApiError, PatchpilotClient
from ui.meta import Meta
from ui.models import PatchRequest
from ui.views.common import fmt_duration, fmt_time, job_name
from ui.views.session import current_meta, session_client

JOBS_REFRESH = 3.0
JOBS_SHOWN = 50
ALL_RUNS = "all runs"  # the runs: requests somebody approved (proposals, rejections and expiries are not jobs)
EVERYTHING = "everything"
COLUMNS = ("job", "state", "hosts", "stage", "patch group", "requested by", "approved by", "created", "duration", "AWX")


def job_rows(items: Sequence[PatchRequest], meta: Meta) -> list[dict[str, Any]]:
    return [
        {
            "job": job_name(req),
            "state": meta.badge(req.state),
            "hosts": ", ".join(req.host_names),
            "stage": req.stage,
            "patch group": req.patch_group or "",
            "requested by": req.requested_by or "",
            "approved by": req.approved_by or "",
            "created": fmt_time(req.created_at),
            "duration": fmt_duration(req.started_at, req.finished_at),
            "AWX": req.awx_job_url or None,
            "id": req.id,
        }
        for req in items
    ]


def filter_jobs(items: Sequence[PatchRequest], meta: Meta, *, host: str = "",
                runs_only: bool = True) -> list[PatchRequest]:
    """Runs only (unless asked: a run is a request somebody approved), and those touching a host whose name
    contains `host`."""
    needle = host.strip().lower()
    return [
        req for req in items
        if (not runs_only or meta.has_run(req.state) or req.approved_by)
        and (not needle or any(needle in name.lower() for name in req.host_names))
    ]


def state_choices(meta: Meta) -> tuple[str, ...]:
    """The State filter: all runs, each run state, everything, then the states that are not runs."""
    return (ALL_RUNS, *meta.run_states(), EVERYTHING, *meta.other_states())


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
    state = st.session_state.get("pp_jobs_state", ALL_RUNS)
    host = st.session_state.get("pp_jobs_host", "")
    try:
        items = client.list_requests(state=None if state in (ALL_RUNS, EVERYTHING) else state, limit=200)
    except ApiError as exc:
        st.warning(f"Could not load the jobs, retrying: {exc}")
        return
    meta = current_meta()
    shown = filter_jobs(items, meta, host=host, runs_only=state == ALL_RUNS)[:JOBS_SHOWN]
    st.session_state["pp_jobs_ids"] = [req.id for req in shown]
    if not shown:
        st.info("No runs match." if host or state != ALL_RUNS else "No runs yet.")
        return
    st.dataframe(
        job_rows(shown, meta), hide_index=True, key="pp_jobs_table", on_select=_jobs_selected,
        selection_mode="single-row", column_order=COLUMNS,
        column_config={"AWX": st.column_config.LinkColumn("AWX", display_text="open")},
    )
    st.caption(f"{len(shown)} shown, newest first; refreshed every {JOBS_REFRESH:g} s. Pick a row to open it.")


def render_jobs(client: PatchpilotClient) -> None:
    """Runs (newest first), refreshed on their own; a row opens the request (kept in the URL as ?request=<id>)."""
    st.subheader("Jobs")
    left, right = st.columns([1, 2])
    left.selectbox("State", state_choices(current_meta()), key="pp_jobs_state",
                   help=f"'{ALL_RUNS}' lists approved requests; '{EVERYTHING}' adds proposals, rejections and expiries")
    right.text_input("Host", key="pp_jobs_host", placeholder="search by host name")
    st.fragment(run_every=JOBS_REFRESH)(_jobs_body)(client.base_url)
