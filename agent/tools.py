"""The tools the model may call. None of them writes anything, approves or launches: proposals are validated
here and created by the chat service; job data comes through a read-only `JobReader` passed in.

Each tool takes validated arguments (a Pydantic model, the same schema the model is shown) and returns a
`ToolOutcome`: what the model sees, and, for the final tools, the validated intent that ends the turn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz import fuzz, process

from core.intent import IntentDraft, IntentResult, RebootPolicy
from core.inventory import ENVIRONMENT_GROUPS, Catalog
from core.validation import normalize_name, resolve_group, resolve_host, validate_draft

MAX_SEARCH_RESULTS = 20


class JobReader(Protocol):
    """Read-only access to stored requests and jobs (the chat service implements it over PostgreSQL)."""

    def job_status(self, job_id: int | None, hosts: list[str]) -> dict | None: ...

    def list_jobs(self, limit: int) -> list[dict]: ...


# --- argument schemas (what the model sees) ---------------------------------------------------------------------

class SearchInventory(BaseModel):
    """Find inventory hosts, groups and environments by name or description ("prod web", "db", "stg-web-01").
    Unknown names come back with "did you mean" suggestions."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=100, description="Words or a name to look for.")


class ListPatchGroups(BaseModel):
    """List the patch groups with their descriptions."""

    model_config = ConfigDict(extra="forbid")


class ProposePatch(BaseModel):
    """Propose a patch run (or a pre-check run) for a person to approve. The system validates it against the
    inventory and answers with the proposal, or with what it must ask the user."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["patch", "precheck"] = "patch"
    hosts: list[str] = Field(default_factory=list, max_length=200, description="Host names exactly as given.")
    groups: list[str] = Field(default_factory=list, max_length=50, description="Roles or environments, unioned.")
    within: list[str] = Field(default_factory=list, max_length=10, description="Groups every group match must be in.")
    exclude_hosts: list[str] = Field(default_factory=list, max_length=200, description="Hosts to leave out.")
    patch_group: str | None = Field(default=None, max_length=100, description="e.g. Group-1; empty if not clear.")
    reboot: RebootPolicy | None = None
    check_mode: bool = Field(default=False, description="True for a dry run (check mode).")

    def draft(self) -> IntentDraft:
        return IntentDraft(**self.model_dump())


class JobStatus(BaseModel):
    """The status of a job, by AWX job number or by host."""

    model_config = ConfigDict(extra="forbid")
    job_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    hosts: list[str] = Field(default_factory=list, max_length=20)


class ListJobs(BaseModel):
    """List recent patch requests and their jobs."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=10, ge=1, le=50)


class ProposeCancel(BaseModel):
    """Prepare cancelling a running job, by job number or host. A person must still press Cancel."""

    model_config = ConfigDict(extra="forbid")
    job_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    hosts: list[str] = Field(default_factory=list, max_length=20)


TOOL_SCHEMAS: dict[str, type[BaseModel]] = {
    "search_inventory": SearchInventory,
    "list_patch_groups": ListPatchGroups,
    "propose_patch": ProposePatch,
    "job_status": JobStatus,
    "list_jobs": ListJobs,
    "propose_cancel": ProposeCancel,
}
FINAL_TOOLS = frozenset({"propose_patch", "job_status", "list_jobs", "propose_cancel"})


def openai_tools(names: list[str] | None = None) -> list[dict]:
    """The tools in OpenAI function format, named as the model must call them. The schemas are trimmed of what
    only our own validation needs (length limits, null alternatives), which keeps the prompt small for models
    with short contexts; the arguments are still validated against the full Pydantic models."""
    tools = []
    for name, schema in TOOL_SCHEMAS.items():
        if names is not None and name not in names:
            continue
        tool = convert_to_openai_tool(schema)
        tool["function"]["name"] = name
        tool["function"]["description"] = " ".join(tool["function"]["description"].split())
        tool["function"]["parameters"] = _compact(tool["function"]["parameters"])
        tools.append(tool)
    return tools


_DROP_KEYS = {"maxItems", "maxLength", "minLength", "minimum", "maximum", "title"}


def _compact(node: Any) -> Any:
    if isinstance(node, list):
        return [_compact(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "anyOf" in node:  # X | None -> X: leaving a field out is how a model says "none"
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            node = {**{k: v for k, v in node.items() if k not in ("anyOf", "default")}, **options[0]}
    out = {k: _compact(v) for k, v in node.items() if k not in _DROP_KEYS}
    if out.get("default") in (None, [], False) and "default" in out:
        del out["default"]
    return out


# --- running a tool ------------------------------------------------------------------------------------------------

@dataclass
class ToolOutcome:
    content: str  # what the model sees (JSON)
    draft: IntentDraft | None = None  # final tools: the draft and its validated result end the turn
    result: IntentResult | None = None
    seen_hosts: set[str] = field(default_factory=set)  # hosts a search showed the model


@dataclass
class ToolContext:
    catalog: Catalog
    jobs: JobReader | None = None


def run_tool(name: str, args: BaseModel, ctx: ToolContext) -> ToolOutcome:
    handler = _HANDLERS[name]
    return handler(args, ctx)


def _dump(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)


def _search(args: SearchInventory, ctx: ToolContext) -> ToolOutcome:
    inventory = ctx.catalog.inventory
    words = [w for w in re.split(r"[\s,]+", normalize_name(args.query)) if w]
    exact_hosts: set[str] = set()
    groups: list[str] = []
    unknown: list[str] = []
    for word in words:
        host = resolve_host(word, inventory)
        group = resolve_group(word, inventory)
        if host:
            exact_hosts.add(host)
        elif group and group != "all":
            groups.append(group)
        elif word not in _SEARCH_FILLER:
            unknown.append(word)
    hosts = set(exact_hosts)
    if groups:
        matched = set(inventory.hosts)
        for group in groups:
            matched &= inventory.group_hosts(group)  # "prod web" -> hosts in both
        hosts |= matched
    suggestions = {}
    for word in unknown:
        hint = process.extract(word, inventory.host_names(), scorer=fuzz.ratio, limit=3, score_cutoff=60)
        if hint:
            suggestions[word] = [h[0] for h in hint]
    listed = sorted(hosts)[:MAX_SEARCH_RESULTS]
    body = {
        "hosts": [{"name": h, "environment": inventory.hosts[h].environment,
                   "groups": sorted(inventory.hosts[h].groups - set(ENVIRONMENT_GROUPS))} for h in listed],
        "groups_matched": groups,
        "unknown": unknown,
        "did_you_mean": suggestions,
        "truncated": len(hosts) > len(listed),
    }
    return ToolOutcome(content=_dump(body), seen_hosts=set(listed))


_SEARCH_FILLER = {"server", "servers", "host", "hosts", "box", "boxes", "machine", "machines", "the", "in", "of",
                  "and", "node", "nodes", "all", "first", "second", "third", "fourth", "last"}


def _patch_groups(args: ListPatchGroups, ctx: ToolContext) -> ToolOutcome:
    return ToolOutcome(content=_dump([{"name": g.name, "description": g.description}
                                      for g in ctx.catalog.patch_groups.values()]))


def _validated(draft: IntentDraft, ctx: ToolContext) -> ToolOutcome:
    result = validate_draft(draft, ctx.catalog)
    view = {k: v for k, v in result.model_dump(mode="json").items() if v not in (None, [], {}, "")}
    if result.is_proposable:
        view["status"] = "proposed: waiting for a person to click Approve"
    elif result.action == "clarify":
        view["status"] = "incomplete: the user will be asked"
    return ToolOutcome(content=_dump(view), draft=draft, result=result)


def _propose(args: ProposePatch, ctx: ToolContext) -> ToolOutcome:
    return _validated(args.draft(), ctx)


def _job_status(args: JobStatus, ctx: ToolContext) -> ToolOutcome:
    outcome = _validated(IntentDraft(action="status", job_id=args.job_id, hosts=args.hosts), ctx)
    return _with_job_data(outcome, ctx)


def _propose_cancel(args: ProposeCancel, ctx: ToolContext) -> ToolOutcome:
    outcome = _validated(IntentDraft(action="cancel", job_id=args.job_id, hosts=args.hosts), ctx)
    return _with_job_data(outcome, ctx)


def _with_job_data(outcome: ToolOutcome, ctx: ToolContext) -> ToolOutcome:
    result = outcome.result
    if result is None or result.action == "clarify" or ctx.jobs is None:
        return outcome
    job = ctx.jobs.job_status(result.job_id, list(result.hosts))
    outcome.content = _dump({"job": job} if job else {"job": None, "note": "no matching request"})
    return outcome


def _list_jobs(args: ListJobs, ctx: ToolContext) -> ToolOutcome:
    draft = IntentDraft(action="list_jobs")
    result = validate_draft(draft, ctx.catalog)
    rows = ctx.jobs.list_jobs(args.limit) if ctx.jobs is not None else []
    return ToolOutcome(content=_dump({"jobs": rows}), draft=draft, result=result)


_HANDLERS = {
    "search_inventory": _search,
    "list_patch_groups": _patch_groups,
    "propose_patch": _propose,
    "job_status": _job_status,
    "list_jobs": _list_jobs,
    "propose_cancel": _propose_cancel,
}
