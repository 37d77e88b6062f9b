"""One request as it is now: the proposal card and, once approved, the live run (timeline, progress, hosts, how it
ended, Cancel, task output), redrawn on its own until the request is final.

The timeline, with each stage's status and text, comes from the API (`GET /api/v1/requests/{id}/live`); the last
step of the timeline is the run's end, and its status says how the run ended.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.client import ApiError, PatchpilotClient
from ui.meta import Meta
from ui.models import Live, LiveRequest, StepStatus, TimelineStep
from ui.views.common import (
    HOST_COUNTS,
    WOULD_CHANGE,
    capitalized,
    failing_hosts,
    fmt_duration,
    fmt_time,
    host_rows,
    host_summary,
    job_name,
    md_escape,
)
from ui.views.proposal import ask_cancel, confirm_cancel_key, decide, decision_error_key, draw_card, pending
from ui.views.session import load_meta, session_client, shown_errors

# A request waiting for a decision is redrawn every 2 s (so its requester sees the approval); a run every half
# second (a stage shows about 0.5 s after the follower stored it, bench.ui_latency); a finished one never.
REFRESH_WAITING = 2.0
REFRESH_ACTIVE = 0.5
MAX_TASK_LINES = 40

STEP_ICONS: dict[str, str] = {
    StepStatus.DONE: "✅", StepStatus.CURRENT: "⏳", StepStatus.PENDING: "⚪", StepStatus.SKIPPED: "➖",
    StepStatus.NOT_RUN: "⚪", StepStatus.FAILED: "❌", StepStatus.CANCELED: "🚫",
}
DIM_STEPS = (StepStatus.PENDING, StepStatus.NOT_RUN, StepStatus.SKIPPED)
# How far a stage counts on the progress bar: finished ones whole, the one running (or where the run stopped) half.
FINISHED_STEPS = (StepStatus.DONE, StepStatus.SKIPPED)
STOPPED_STEPS = (StepStatus.CURRENT, StepStatus.FAILED, StepStatus.CANCELED)
HALF_PATCHED = ("A host interrupted while it was being updated or rebooted may be half-patched: "
                "check it before putting it back into service.")


def play_steps(steps: list[TimelineStep]) -> list[TimelineStep]:
    """The stages of the playbook's plays: every step of the timeline but the last (the run's end)."""
    return steps[:-1]


def progress_value(steps: list[TimelineStep]) -> float:
    """How far the run got: stages finished (done or skipped) over the play stages, half of the one running now.
    A run that failed or was canceled stays where it stopped: only a success (its end done) reaches 100 %."""
    if steps and steps[-1].status == StepStatus.DONE:
        return 1.0
    plays = play_steps(steps)
    if not plays:
        return 0.0
    finished = sum(1 for s in plays if s.status in FINISHED_STEPS)
    running = sum(0.5 for s in plays if s.status in STOPPED_STEPS)
    return min(0.99, (finished + running) / len(plays))


def is_final(req: LiveRequest, meta: Meta) -> bool:
    return meta.is_terminal(req.state, default=bool(req.terminal))


def has_run(req: LiveRequest, meta: Meta) -> bool:
    """A request that was approved has a run to follow; a proposal, rejection or expiry has none."""
    return meta.has_run(req.state) or bool(req.approved_by)


def outcome_sentence(live: Live) -> str:
    """How a finished run ended, in one line like a colleague would say it."""
    req, outcome = live.request, live.outcome()
    name = job_name(req)
    if outcome == StepStatus.DONE:
        dry = " (dry run, nothing changed)" if req.check_mode else ""
        return f"{name} {req.state}{dry}: {host_summary(req)}."
    if outcome == StepStatus.CANCELED:
        return f"{name} was {req.state} by {req.decided_by or 'someone'}: {host_summary(req)}."
    return f"{name} {req.state}: {req.failure_reason or 'no reason recorded'}. Hosts: {host_summary(req)}."


# --- the run, part by part --------------------------------------------------------------------------------


def _header(req: LiveRequest, meta: Meta) -> None:
    header = f"**{job_name(req)}** · {meta.badge(req.state)}"
    if not req.awx_job_id and meta.is_cancelable(req.state):
        header += " · waiting for AWX to start the job"
    if req.check_mode:
        header += " · dry run"
    duration = fmt_duration(req.started_at, req.finished_at)
    if duration:
        header += f" · {duration}"
    st.markdown(header)


def _timeline(steps: list[TimelineStep]) -> None:
    columns = st.columns(len(steps) or 1)
    for column, step in zip(columns, steps, strict=False):
        icon = STEP_ICONS.get(step.status, "•")
        label = md_escape(step.label or step.title)
        text = f"{icon} :gray[{label}]" if step.status in DIM_STEPS else f"{icon} **{label}**"
        times = fmt_time(step.at, with_date=False)
        if times and step.ended_at and step.status != StepStatus.SKIPPED:
            times += f" ({fmt_duration(step.at, step.ended_at)})"
        if times:
            text += f"  \n:gray[{times}]"
        column.markdown(text)


def _progress(req: LiveRequest, steps: list[TimelineStep], final: bool) -> None:
    progress = progress_value(steps)
    latest = req.latest_task
    st.progress(progress, text=f"Latest task: {latest}" if latest and not final else f"{int(progress * 100)} %")
    if req.cancel_requested_at and not final:
        when = fmt_time(req.cancel_requested_at, with_date=False)
        st.warning(f"Cancel requested by {req.decided_by or '?'} at {when}: waiting for AWX to stop {job_name(req)}.")


def _ending(live: Live) -> None:
    """Success, failure (with the reason and the failing hosts) or cancel (where, and what it may leave behind)."""
    req, outcome, steps = live.request, live.outcome(), live.timeline
    if outcome == StepStatus.DONE:
        done = "Dry run completed, nothing changed" if req.check_mode else "Patching completed"
        st.success(f"{done}: {host_summary(req)}")
    elif outcome == StepStatus.FAILED:
        text = f"**{job_name(req)} failed**: {req.failure_reason or 'no reason recorded'}"
        failing = failing_hosts(req)
        if failing:
            text += f"  \nFailing hosts: {', '.join(failing)}"
        st.error(text)
    elif outcome == StepStatus.CANCELED:
        stopped_in = next((s for s in play_steps(steps) if s.status == StepStatus.CANCELED), None)
        where = f" during {stopped_in.title.lower()}" if stopped_in else ""
        text = f"**Canceled by {md_escape(req.decided_by or 'someone')}{where}**"
        if req.failure_reason:
            text += f": {req.failure_reason}"
        changing = [s.stage for s in play_steps(steps)][1:-1]  # between the checks before and after: hosts change
        if stopped_in and stopped_in.stage in changing and not req.check_mode:
            text += f"  \n{HALF_PATCHED}"
        st.warning(text)


def _hosts(req: LiveRequest) -> None:
    rows = host_rows(req)
    if not rows:
        return
    config: dict[str, Any] = {"name": "Host", "status": "Status", "message": "Reason",
              **{count: st.column_config.NumberColumn(count) for count in HOST_COUNTS}}
    # a dry run changes nothing: apt and dnf's "changed" in check mode means "would change"
    config["changed"] = st.column_config.NumberColumn(WOULD_CHANGE if req.check_mode else "changed")
    st.dataframe(rows, hide_index=True, column_config=config)
    _packages(req)


def _packages(req: LiveRequest) -> None:
    """Which packages the run changed or, in a dry run, would change: host, package, from and to version."""
    rows = [{"host": host.name, "package": p.name, "from": p.old or "(new)", "to": p.new or "(removed)"}
            for host in req.hosts for p in host.packages]
    if not rows:
        return
    hosts = len({row["host"] for row in rows})
    title = (f"Packages that would change: {len(rows)} on {hosts} host{'s' if hosts != 1 else ''}" if req.check_mode
             else f"Packages changed: {len(rows)} on {hosts} host{'s' if hosts != 1 else ''}")
    with st.expander(title, expanded=req.check_mode):
        st.dataframe(rows, hide_index=True)


def _cancel(base_url: str, live: Live, meta: Meta) -> None:
    """Cancel run…, confirmed first, for a run that can still be canceled and has no cancel pending."""
    req = live.request
    if not meta.is_cancelable(req.state) or req.cancel_requested_at:
        return
    if st.session_state.get(confirm_cancel_key(req.id)):
        started = req.stage in [s.stage for s in play_steps(live.timeline)]
        risky = started and not req.check_mode
        st.warning(f"Stop {job_name(req)}?" + (
            " A host interrupted while it is being updated or rebooted may be left half-patched." if risky else ""))
        yes, no, _ = st.columns([1, 1, 3])
        yes.button("Yes, cancel the run", key=f"cancel_yes:{req.id}", type="primary",
                   disabled=pending(req.id, ("cancel",)), on_click=decide, args=(base_url, req.id, "cancel"))
        no.button("Keep it running", key=f"cancel_no:{req.id}", on_click=ask_cancel, args=(req.id, False))
    else:
        refused = live.refusal("cancel")
        st.button("Cancel run…", key=f"cancel:{req.id}", disabled=refused is not None, help=capitalized(refused),
                  on_click=ask_cancel, args=(req.id, True))


def draw_run(base_url: str, live: Live, meta: Meta) -> None:
    req = live.request
    final = is_final(req, meta)
    _header(req, meta)
    _timeline(live.timeline)
    _progress(req, live.timeline, final)
    _ending(live)
    _hosts(req)
    if req.awx_job_url:
        st.markdown(f"[Open {job_name(req)} in AWX]({req.awx_job_url})")
    _cancel(base_url, live, meta)
    error = st.session_state.get(decision_error_key(req.id))
    if error:
        st.error(error)
    if live.tasks:
        with st.expander(f"Task output ({len(live.tasks)} newest)",
                         expanded=final and live.outcome() != StepStatus.DONE):
            st.code("\n".join(task_line(t.task or t.play or "", t.at, t.host, t.result, t.message)
                              for t in live.tasks[-MAX_TASK_LINES:]), language=None)


def task_line(what: str, at: str | None, host: str | None, result: str, message: str | None) -> str:
    """'12:01:02 Apply updates (security) · www-01 · changed: Updates applied'."""
    line = f"{fmt_time(at, with_date=False)} {what}"
    if host:
        line += f" · {host}"
    line += f" · {result}"
    if message:
        line += f": {message}"
    return line.strip()


def draw_request(base_url: str, live: Live, meta: Meta, *, in_chat: bool = False) -> None:
    """The proposal card and, once approved, the run: one snapshot."""
    draw_card(base_url, live, meta)
    if has_run(live.request, meta):
        draw_run(base_url, live, meta)
        if in_chat and is_final(live.request, meta):
            # The chat says how it ended, like a colleague would.
            with st.chat_message("assistant"):
                st.markdown(outcome_sentence(live))


# --- redrawn on its own -----------------------------------------------------------------------------------


def phase(req: LiveRequest, meta: Meta) -> str:
    """final (never redrawn), active (a run: every REFRESH_ACTIVE s) or waiting (for a decision)."""
    if is_final(req, meta):
        return "final"
    return "active" if meta.is_active(req.state) else "waiting"


def _prefetched_key(request_id: str) -> str:
    return f"pp_prefetched:{request_id}"


def last_drawn(request_id: str) -> Live | None:
    """The request as this page last drew it."""
    live = st.session_state.get(f"pp_drawn:{request_id}")
    return live if isinstance(live, Live) else None


def _request_body(base_url: str, request_id: str, drawn_phase: str, in_chat: bool) -> None:
    """Body of a request's fragment: fetches the request again on each timed rerun."""
    client = session_client(base_url)
    live = st.session_state.pop(_prefetched_key(request_id), None)
    if not isinstance(live, Live):
        try:
            live = client.live(request_id)
        except ApiError as exc:
            # Keep refreshing: the API may come back (the page redraws itself when it does).
            st.warning(f"Live update of {request_id[:8]} failed, retrying: {exc}")
            st.session_state["pp_live_failed"] = True
            return
    meta = load_meta(client)
    if st.session_state.pop("pp_live_failed", False) or phase(live.request, meta) != drawn_phase:
        # It came back, or the request moved on (approved elsewhere, ended): redraw the page so its timer fits.
        st.session_state[_prefetched_key(request_id)] = live
        st.rerun(scope="app")
    st.session_state[f"pp_drawn:{request_id}"] = live
    with shown_errors("Could not draw the request"):
        draw_request(base_url, live, meta, in_chat=in_chat)


def render_request(client: PatchpilotClient, request_id: str, *, in_chat: bool = False) -> None:
    """A request as it is now, redrawn on its own every REFRESH_* seconds until it ends."""
    live = st.session_state.pop(_prefetched_key(request_id), None)
    if not isinstance(live, Live):
        try:
            live = client.live(request_id)
        except ApiError as exc:
            st.error(f"Could not load request {request_id[:8]}: {exc}")
            return
    st.session_state[_prefetched_key(request_id)] = live
    drawn_phase = phase(live.request, load_meta(client))
    every = {"waiting": REFRESH_WAITING, "active": REFRESH_ACTIVE}.get(drawn_phase)
    st.fragment(run_every=every)(_request_body)(client.base_url, request_id, drawn_phase, in_chat)
