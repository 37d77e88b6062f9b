"""Formatting helpers shared by the views: times, durations, names, host rows. Pure: testable without Streamlit.

The domain's words come from the API (`ui.models.Meta`); nothing here knows a request state or a stage by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ui.meta import Meta
from ui.models import HostResult, InboxItem, PatchRequest

# The host table: the name, its status, its counts (from the API's host results), the reason.
HOST_COUNTS = tuple(name for name, field in HostResult.model_fields.items()
                    if field.annotation is int and name != "skipped")
HOST_COLUMNS = ("name", "status", *HOST_COUNTS, "message")
WOULD_CHANGE = "would change"  # a dry run changed nothing: apt and dnf report "changed" in check mode


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    # A naive timestamp from the API is UTC.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def fmt_time(value: str | None, *, with_date: bool = True) -> str:
    parsed = parse_time(value)
    if parsed is None:
        return ""
    local = parsed.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def fmt_duration(start: str | None, end: str | None, now: datetime | None = None) -> str:
    """`1m 05s` from start to end (or to now while running); empty when it never started."""
    began = parse_time(start)
    if began is None:
        return ""
    finished = parse_time(end) or now or datetime.now(UTC)
    return fmt_seconds((finished - began).total_seconds())


def fmt_age(value: str | None, now: datetime | None = None) -> str:
    """'5m 02s ago' / 'in 54m 10s'."""
    moment = parse_time(value)
    if moment is None:
        return ""
    delta = ((now or datetime.now(UTC)) - moment).total_seconds()
    return f"{fmt_seconds(delta)} ago" if delta >= 0 else f"in {fmt_seconds(-delta)}"


def md_escape(text: str) -> str:
    """Text shown through st.markdown as is (a user name like a_b_c stays plain)."""
    return "".join("\\" + c if c in "\\`*_[]<>#|~" else c for c in str(text))


def capitalized(text: str | None) -> str | None:
    return text[:1].upper() + text[1:] if text else None


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def request_link(request_id: str) -> str:
    """A link to one request that anyone signed in can open (relative to the UI's own address)."""
    return f"?request={request_id}"


def job_name(req: PatchRequest) -> str:
    """The one name of a run: its AWX job number once AWX has it, the request id before."""
    if req.awx_job_id:
        return f"AWX job {req.awx_job_id}"
    return f"Request {req.id[:8]}"


def environment_groups(item: PatchRequest | InboxItem, meta: Meta) -> list[tuple[str, list[str]]]:
    """(environment, hosts) pairs in the policy's order (production first), empty environments dropped."""
    by_env = item.hosts_by_environment
    if not any(by_env.values()):
        names = item.host_names if isinstance(item, PatchRequest) else list(item.hosts)
        return [("hosts", names)] if names else []
    order = meta.environments
    ordered = [env for env in order if env in by_env] + sorted(env for env in by_env if env not in order)
    return [(env, list(by_env[env])) for env in ordered if by_env.get(env)]


def environment_line(env: str, names: Sequence[str], meta: Meta) -> str:
    """':red[**production**] (2): a, b': production environments in red, the others in blue."""
    colour = "red" if meta.is_production(env) else "blue"
    return f":{colour}[**{env}**] ({len(names)}): {', '.join(names)}"


def host_rows(req: PatchRequest) -> list[dict[str, Any]]:
    rows = []
    for host in req.hosts:
        row: dict[str, Any] = {column: getattr(host, column) for column in HOST_COLUMNS}
        row["message"] = row["message"] or ""
        if req.check_mode and row["status"] == "changed":
            row["status"] = WOULD_CHANGE  # a dry run changed nothing (the API says so too)
        rows.append(row)
    return rows


def host_summary(req: PatchRequest) -> str:
    """'www-01 changed, www-02 ok' -- each host's outcome."""
    return ", ".join(f"{r['name']} {r['status']}" for r in host_rows(req))


def failing_hosts(req: PatchRequest) -> list[str]:
    """Hosts with a failed or unreachable result."""
    return [host.name for host in req.hosts if host.failed or host.unreachable]
