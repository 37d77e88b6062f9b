"""Outgoing notifications: webhook messages (Slack, Teams and a generic JSON) read from the audit log.

The audit log already records every proposal and every state change, in the same transaction as the change, so
it is the outbox's source: nothing in the request path has to remember to notify. A round (the beat runs one every
NOTIFY_INTERVAL_SECONDS) does two things:

1. Read the audit rows after the cursor and add one `notifications` row per message and webhook (unique per audit
   row and webhook, so reading a row twice adds nothing). Ids are handed out before commit, so a row may become
   visible after a higher one: the cursor moves only over rows older than CURSOR_LAG, and the rows newer than
   that are read again next round.
2. Deliver what is due: each message is leased (its next attempt pushed ahead) and committed before the POST, so
   two workers never send it at once; a 2xx marks it sent; anything else schedules another attempt with backoff,
   and after NOTIFY_ATTEMPTS it stays in the table as `dead` with its last error (the dead-letter record).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import Session, col

from core.db import get_engine
from core.inventory import Catalog
from core.models import AuditLog, HostResult, Notification, NotifyCursor, PatchRequest, utcnow
from core.settings import Settings
from core.states import APPROVED, CANCELED, ERROR, EXPIRED, FAILED, PROPOSED, REJECTED, RUNNING, SUCCEEDED, RequestState
from core.statuses import DeliveryState, HostStatus

log = logging.getLogger("patchpilot.notify")

CURSOR = "webhooks"
CURSOR_LAG = timedelta(seconds=30)
FIRST_LOOK_BACK = timedelta(hours=1)  # a notifier configured for the first time does not replay old history
BATCH = 200
LEASE = timedelta(seconds=30)
BACKOFF_SECONDS = (1, 2, 5, 15, 60, 300)
TIMEOUT_SECONDS = 5.0
FORMATS = ("slack", "teams", "generic")
# Audit entries that make a message: a new proposal (its audit action is named after its state), and these state
# changes. A message's kind is the new state, except for these two.
AWAITING_APPROVAL, STARTED = "awaiting_approval", "started"
KIND_OF_STATE = {APPROVED: APPROVED, REJECTED: REJECTED, RUNNING: STARTED, SUCCEEDED: SUCCEEDED, FAILED: FAILED,
                 CANCELED: CANCELED, ERROR: FAILED, EXPIRED: EXPIRED}
COLOURS = {AWAITING_APPROVAL: "FFA500", APPROVED: "2EB886", REJECTED: "A0A0A0", STARTED: "439FE0",
           SUCCEEDED: "2EB886", FAILED: "D00000", CANCELED: "A0A0A0", EXPIRED: "A0A0A0"}


def webhooks(settings: Settings) -> list[dict[str, str]]:
    """The configured webhooks, each with a name (given, or made from its URL) and a known format."""
    out = []
    for hook in settings.notify_webhooks:
        url = str(hook.get("url") or "").strip()
        if not url:
            continue
        fmt = str(hook.get("format") or "generic").lower()
        name = str(hook.get("name") or "").strip() or f"{fmt}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"
        out.append({"name": name[:200], "url": url, "format": fmt if fmt in FORMATS else "generic"})
    return out


def request_link(settings: Settings, request_id: str) -> str:
    return f"{settings.ui_base_url.rstrip('/')}/?request={request_id}"


# --- messages -----------------------------------------------------------------------------------


def _hosts_text(req: PatchRequest, catalog: Catalog) -> str:
    by_env: dict[str, list[str]] = {}
    for host in req.hosts:
        by_env.setdefault(catalog.environment_or_other(host), []).append(host)
    production = catalog.policy.production()
    ordered = sorted(by_env, key=lambda env: (env not in production, env))
    return "; ".join(f"{env}: {', '.join(by_env[env])}" for env in ordered)


def _job_name(req: PatchRequest) -> str:
    return f"AWX job {req.awx_job_id}" if req.awx_job_id else f"request {req.id[:8]}"


def host_summary(session: Session, req: PatchRequest) -> list[dict[str, Any]]:
    found: Iterable[HostResult] = session.execute(select(HostResult)
                                                  .where(col(HostResult.request_id) == req.id)).scalars()
    rows = {r.host: r for r in found}
    out = []
    for host in req.hosts:
        r = rows.get(host)
        status: str = r.status if r else HostStatus.PENDING
        if req.check_mode and status == HostStatus.CHANGED:
            status = "would change"  # a dry run changed nothing (apt and dnf report changed in check mode)
        out.append({"host": host, "status": status, "ok": r.ok if r else 0,
                    "changed": r.changed if r else 0, "failed": r.failed if r else 0,
                    "unreachable": r.unreachable if r else 0})
    return out


def build_message(session: Session, kind: str, req: PatchRequest, entry: AuditLog, settings: Settings,
                  catalog: Catalog) -> dict[str, Any]:
    """The format-neutral message: kind, one-line text, details, link, per-host summary."""
    what = (f"{'Dry run of' if req.check_mode else 'Patch'} {_hosts_text(req, catalog)} "
            f"with {req.patch_group or 'pre-checks'}")
    link = request_link(settings, req.id)
    hosts: list[dict[str, Any]] = []
    if kind == AWAITING_APPROVAL:
        text = f"{req.requested_by} asks for approval: {what}"
    elif kind == APPROVED:
        text = f"{entry.actor} approved {req.requested_by}'s request: {what}"
    elif kind == REJECTED:
        because = f" ({entry.reason})" if entry.reason and entry.reason != REJECTED else ""
        text = f"{entry.actor} rejected {req.requested_by}'s request{because}: {what}"
    elif kind == EXPIRED:
        text = f"{req.requested_by}'s proposal expired without a decision: {what}"
    elif kind == STARTED:
        text = f"{_job_name(req)} started: {what}"
    else:
        hosts = host_summary(session, req)
        outcome = ", ".join(f"{h['host']} {h['status']}" for h in hosts)
        who = f" by {req.decided_by}" if kind == CANCELED and req.decided_by else ""
        reason = f" ({req.failure_reason})" if kind == FAILED and req.failure_reason else ""
        text = f"{_job_name(req)} {kind}{who}{reason}: {outcome}"
    return {"kind": kind, "text": text, "request_id": req.id, "awx_job_id": req.awx_job_id, "link": link,
            "requested_by": req.requested_by, "approved_by": req.approved_by, "hosts": list(req.hosts),
            "patch_group": req.patch_group, "check_mode": req.check_mode, "state": req.state,
            "at": entry.at.isoformat() if entry.at else None, "host_results": hosts}


def render(fmt: str, message: Mapping[str, Any]) -> dict[str, Any]:
    """The body one webhook gets: Slack's incoming-webhook JSON, a Teams MessageCard, or the generic message."""
    kind, text, link = message["kind"], message["text"], message["link"]
    changed = "would change" if message.get("check_mode") else "changed"
    lines = [f"{h['host']}: {h['status']} (ok {h['ok']}, {changed} {h['changed']}, failed {h['failed']}, "
             f"unreachable {h['unreachable']})" for h in message.get("host_results") or []]
    if fmt == "slack":
        listed = "\n" + "\n".join(f"• {line}" for line in lines) if lines else ""
        body = f"*{text}*{listed}\n<{link}|Open in patchpilot>"
        return {"text": f"{text} {link}", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": body}}]}
    if fmt == "teams":
        return {"@type": "MessageCard", "@context": "https://schema.org/extensions", "summary": text,
                "themeColor": COLOURS.get(kind, "439FE0"), "title": f"patchpilot: {kind.replace('_', ' ')}",
                "text": text + ("<br>" + "<br>".join(lines) if lines else ""),
                "potentialAction": [{"@type": "OpenUri", "name": "Open in patchpilot",
                                     "targets": [{"os": "default", "uri": link}]}]}
    return {"event": kind, **{k: v for k, v in message.items() if k != "kind"}}


# --- the round ----------------------------------------------------------------------------------


def collect(session: Session, hooks: list[dict[str, str]], settings: Settings, catalog: Catalog) -> int:
    """Turn new audit rows into messages (one per webhook). Returns how many audit rows made messages."""
    cursor = session.get(NotifyCursor, CURSOR, with_for_update=True)
    if cursor is None:
        session.execute(pg_insert(NotifyCursor).values(name=CURSOR, last_audit_id=0).on_conflict_do_nothing())
        session.flush()
        cursor = session.get(NotifyCursor, CURSOR, with_for_update=True)
    assert cursor is not None  # inserted just above
    now = utcnow()
    query = (select(AuditLog).where(col(AuditLog.id) > cursor.last_audit_id,
                                    or_(col(AuditLog.action) == PROPOSED,
                                        (col(AuditLog.action) == "transition")
                                        & col(AuditLog.to_state).in_(list(KIND_OF_STATE))))
             .order_by(col(AuditLog.id)).limit(BATCH))
    if cursor.last_audit_id == 0:
        query = query.where(col(AuditLog.at) > now - FIRST_LOOK_BACK)
    entries: list[AuditLog] = list(session.execute(query).scalars())
    made = 0
    found: Iterable[PatchRequest] = session.execute(select(PatchRequest).where(
        col(PatchRequest.id).in_({e.request_id for e in entries if e.request_id}))).scalars() if entries else []
    requests = {r.id: r for r in found}
    for entry in entries:
        req = requests.get(entry.request_id or "")
        if req is None:
            continue
        kind = AWAITING_APPROVAL if entry.action == PROPOSED else KIND_OF_STATE[RequestState(str(entry.to_state))]
        message = build_message(session, kind, req, entry, settings, catalog)
        rows = [{"audit_id": entry.id, "request_id": req.id, "kind": kind, "target": hook["name"],
                 "payload": {"format": hook["format"], "message": message}, "state": DeliveryState.PENDING,
                 "attempts": 0, "next_attempt_at": now, "created_at": now} for hook in hooks]
        result = session.execute(pg_insert(Notification).values(rows)
                                 .on_conflict_do_nothing(constraint="uq_notifications_audit_target"))
        made += 1 if getattr(result, "rowcount", 0) else 0
    settled = [e.id for e in entries if e.at <= now - CURSOR_LAG]
    # Move over the settled prefix only: a younger row may still have an older, not yet visible, neighbour.
    last = cursor.last_audit_id
    for entry in entries:
        if entry.id is not None and entry.id in settled and entry.id > last:
            last = entry.id
        else:
            break
    cursor.last_audit_id = last
    session.commit()
    return made


def deliver_due(hooks: list[dict[str, str]], settings: Settings, *, limit: int = 20,
                client: httpx.Client | None = None) -> dict[str, int]:
    """Send the messages that are due. Returns counts of sent, retried and dead."""
    by_name = {hook["name"]: hook for hook in hooks}
    counts = {"sent": 0, "retry": 0, "dead": 0}
    with Session(get_engine()) as session:
        now = utcnow()
        due: list[Notification] = list(session.execute(
            select(Notification).where(col(Notification.state) == DeliveryState.PENDING,
                                       col(Notification.next_attempt_at) <= now)
            .order_by(col(Notification.id)).limit(limit).with_for_update(skip_locked=True)).scalars())
        for row in due:
            row.next_attempt_at = now + LEASE  # leased: nobody else sends it while this POST is out
        session.commit()
        claimed = [(row.id, row.target, row.payload, row.attempts) for row in due]
    if not claimed:
        return counts
    own = client is None
    http = client or httpx.Client(timeout=TIMEOUT_SECONDS)
    try:
        for row_id, target, payload, attempts in claimed:
            hook = by_name.get(target)
            error = None
            if hook is None:
                error = f"webhook {target} is no longer configured"
            else:
                try:
                    response = http.post(hook["url"], json=render(payload.get("format", "generic"), payload["message"]))
                    if response.status_code >= 300:
                        error = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:500]
            with Session(get_engine()) as session:
                values: dict[str, Any] = {"attempts": attempts + 1}
                if error is None:
                    values.update(state=DeliveryState.SENT, sent_at=utcnow(), last_error=None)
                    counts["sent"] += 1
                elif attempts + 1 >= settings.notify_attempts or hook is None:
                    values.update(state=DeliveryState.DEAD, last_error=error)
                    counts["dead"] += 1
                    log.warning("notification %s to %s is dead after %d attempts: %s", row_id, target, attempts + 1,
                                error)
                else:
                    pause = BACKOFF_SECONDS[min(attempts, len(BACKOFF_SECONDS) - 1)]
                    values.update(last_error=error, next_attempt_at=utcnow() + timedelta(seconds=pause))
                    counts["retry"] += 1
                session.execute(update(Notification).where(col(Notification.id) == row_id).values(**values))
                session.commit()
    finally:
        if own:
            http.close()
    return counts


def notify_round(settings: Settings, catalog: Catalog, *, client: httpx.Client | None = None) -> dict[str, int]:
    """Collect new messages and deliver what is due. Nothing at all when no webhook is configured."""
    hooks = webhooks(settings)
    if not hooks:
        return {}
    with Session(get_engine()) as session:
        collected = collect(session, hooks, settings, catalog)
    counts = deliver_due(hooks, settings, client=client)
    if collected or any(counts.values()):
        log.info("notifications: %d new, %s", collected, counts)
    return {"collected": collected, **counts}
