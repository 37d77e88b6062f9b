"""The tools the model may call. None of them writes anything, approves or launches: proposals are validated
here and created by the chat service; job data comes through a read-only `JobReader` passed in.

Each tool takes validated arguments (a Pydantic model, the same schema the model is shown) and returns a
`ToolOutcome`: what the model sees, and, for the final tools, the validated intent that ends the turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.intent import Action, IntentDraft, IntentResult, JobsShown, RebootPolicy
from core.inventory import Catalog
from core.language import load_language
from core.targets import Selection, TargetExpr, Term, from_fields
from core.targets import name as name_term
from core.validation import normalize_name, validate_draft
from core.vocabulary import MAX_PHRASE_WORDS

MAX_SEARCH_RESULTS = 20


class JobReader(Protocol):
    """Read-only access to stored requests and jobs (the chat service implements it over PostgreSQL)."""

    def job_status(self, job_id: int | None, hosts: list[str]) -> dict[str, Any] | None: ...

    def list_jobs(self, limit: int, jobs: str | None = None) -> list[dict[str, Any]]: ...


# --- argument schemas (what the model sees) ---------------------------------------------------------------------

class SearchInventory(BaseModel):
    """Find inventory hosts, groups and environments by name or description ("prod web", "db", "stage-www-01").
    Unknown names come back with "did you mean" suggestions."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=100, description="Words or a name to look for.")


class ListPatchGroups(BaseModel):
    """List the patch groups with their descriptions."""

    model_config = ConfigDict(extra="forbid")


TermText = Annotated[str, Field(min_length=1, max_length=253)]
SelectionTerms = Annotated[list[TermText], Field(min_length=1, max_length=10)]
_INCLUDE_DOC = (
    'Selections added together, each a list of terms that must ALL match: [["live", "www"], ["pg-01"]] = the live '
    'www servers and pg-01. A term, in the user\'s words: a host, group, environment or alias; key=value for a host '
    'variable (os_family=Debian); a pattern with * or ? only if the user typed it.'
)


class Targets(BaseModel):
    """The hosts: (union of include) minus (union of exclude), each selection an intersection of terms."""

    model_config = ConfigDict(extra="forbid")
    include: list[SelectionTerms] = Field(default_factory=list, max_length=50, description=_INCLUDE_DOC)
    exclude: list[SelectionTerms] = Field(default_factory=list, max_length=50,
                                          description="Selections to leave out, same form.")

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _lenient(cls, value: Any) -> Any:
        """Also accepted: a bare term for a one-term selection ("www-01"), `{"terms": [...]}` selections and
        `{"kind", "value", "key"}` terms (the form of `core.targets`)."""
        if not isinstance(value, list):
            return value
        return [_selection_terms(item) for item in value]

    def expression(self) -> TargetExpr:
        return TargetExpr(include=[Selection(terms=[term_of(t) for t in s]) for s in self.include],
                          exclude=[Selection(terms=[term_of(t) for t in s]) for s in self.exclude])

    @classmethod
    def of(cls, expr: TargetExpr) -> Targets:
        """An expression in this compact form (how the open draft is shown to the model)."""
        return cls(include=[[text_of(t) for t in s.terms] for s in expr.include],
                   exclude=[[text_of(t) for t in s.terms] for s in expr.exclude])


def _selection_terms(item: Any) -> Any:
    if isinstance(item, dict) and set(item) == {"terms"}:
        item = item["terms"]
    if isinstance(item, (str, dict)):
        item = [item]
    if isinstance(item, list):
        return [text_of(Term.model_validate(t)) if isinstance(t, dict) else t for t in item]
    return item


def term_of(text: str) -> Term:
    """'os_family=Debian' -> an attribute term, 'web-0*' -> a glob term, anything else a name as written."""
    if "=" in text:
        key, _, value = text.partition("=")
        return Term(kind="attribute", key=key.strip(), value=value.strip())
    if re.search(r"[*?]", text):
        return Term(kind="glob", value=text.strip())
    return Term(kind="name", value=text.strip())


def text_of(term: Term) -> str:
    if term.kind == "attribute":
        return f"{term.key}={term.value}"
    if term.kind == "all":
        return "all"
    return term.value


# Flat keys older tool calls used (they are still in stored conversations the model sees). Accepted as a shorthand,
# converted to the expression, never shown in the schema.
_FLAT_KEYS = ("hosts", "groups", "within", "exclude_hosts")


class ProposePatch(BaseModel):
    """Propose a patch run (or a pre-check run) for a person to approve. Build `targets` only from words the user
    wrote. The system validates it and answers with the proposal, or with what it must ask the user."""

    model_config = ConfigDict(extra="forbid")
    action: Literal[Action.PATCH, Action.PRECHECK] = Action.PATCH
    targets: Targets = Field(default_factory=Targets)
    patch_group: str | None = Field(default=None, max_length=100, description="e.g. group 1; empty if not clear.")
    reboot: RebootPolicy | None = None
    check_mode: bool = Field(default=False, description="True for a dry run (check mode).")

    @model_validator(mode="before")
    @classmethod
    def _flat_shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not any(k in data for k in _FLAT_KEYS):
            return data
        data = dict(data)
        flat: list[list[str]] = []
        for key in _FLAT_KEYS:
            value = data.pop(key, None) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key} must be a list of names; better, use targets")
            flat.append(value)
        flat_targets = Targets.of(from_fields(*flat))
        given = data.get("targets") or {}
        if isinstance(given, BaseModel):
            given = given.model_dump()
        if not isinstance(given, dict):
            raise ValueError("targets must be an object with include / exclude")
        data["targets"] = {"include": [*(given.get("include") or []), *flat_targets.include],
                           "exclude": [*(given.get("exclude") or []), *flat_targets.exclude]}
        return data

    def draft(self) -> IntentDraft:
        return IntentDraft(action=self.action, targets=self.targets.expression(), patch_group=self.patch_group,
                           reboot=self.reboot, check_mode=self.check_mode)


class JobStatus(BaseModel):
    """The status of a job, by AWX job number or by host."""

    model_config = ConfigDict(extra="forbid")
    job_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    hosts: list[str] = Field(default_factory=list, max_length=20)


class ListJobs(BaseModel):
    """List recent patch requests and their jobs."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=10, ge=1, le=50)
    jobs: JobsShown | None = Field(default=None, description="active (running), failed or finished; empty: any.")


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


def openai_tools(names: list[str] | None = None) -> list[dict[str, Any]]:
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
        tool["function"]["parameters"] = _compact(tool["function"]["parameters"], root=True)
        tools.append(tool)
    return tools


_DROP_KEYS = {"maxItems", "minItems", "maxLength", "minLength", "minimum", "maximum", "title"}


def _compact(node: Any, root: bool = False) -> Any:
    """Limits and titles dropped, `X | None` as X, and the descriptions of nested objects (the target expression's
    classes, inlined wherever they are used) left to the system prompt, which explains them once."""
    if isinstance(node, list):
        return [_compact(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "anyOf" in node:  # X | None -> X: leaving a field out is how a model says "none"
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            node = {**{k: v for k, v in node.items() if k not in ("anyOf", "default")}, **options[0]}
    drop = _DROP_KEYS | ({"description"} if node.get("type") == "object" and not root else set())
    out = {k: _compact(v) for k, v in node.items() if k not in drop}
    if out.get("default") in (None, [], False) and "default" in out:
        del out["default"]
    return out


# --- running a tool ------------------------------------------------------------------------------------------------

@dataclass
class ToolOutcome:
    content: str  # what the model sees (JSON)
    draft: IntentDraft | None = None  # final tools: the draft and its validated result end the turn
    result: IntentResult | None = None


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
    """Words and phrases of the query against the fleet's vocabulary: exact hosts and short forms are listed, groups
    and host variables narrow each other ("prod web" -> hosts in both). What a search shows is for the model's
    information only: it never makes a name the user's (see `agent.llm_intent`)."""
    vocabulary = ctx.catalog.vocabulary
    filler = _search_filler()
    words = [w for w in (normalize_name(w) for w in re.split(r"[\s,;]+", args.query)) if w]
    hosts: set[str] = set()
    groups: list[str] = []
    attributes: list[str] = []
    scope: set[str] | None = None
    unknown: list[str] = []
    i = 0
    while i < len(words):
        size = 1
        for size in range(min(MAX_PHRASE_WORDS, len(words) - i), 0, -1):
            text = " ".join(words[i:i + size])
            if size == 1 and (host := vocabulary.host(text)):
                hosts.add(host)
                break
            found = vocabulary.groups(text) - {"all"}
            if len(found) == 1:
                group = found.pop()
                groups.append(group)
                scope = set(vocabulary.group_hosts(group)) & (scope if scope is not None else set(vocabulary.all_hosts))
                break
            values = [m for m in vocabulary.lookup(text) if m.kind == "attribute"]
            if len(values) == 1:
                attributes.append(f"{values[0].key}={values[0].value}")
                matched = set(vocabulary.hosts_with(values[0].key or "", values[0].value))
                scope = matched & (scope if scope is not None else set(vocabulary.all_hosts))
                break
            if size == 1:
                if tails := vocabulary.hosts_ending(text):
                    hosts |= tails
                elif text not in filler and not vocabulary.is_whole_fleet(text):
                    unknown.append(text)
        i += size
    if scope is not None:
        hosts |= scope
    suggestions = {word: hint for word in unknown if (hint := vocabulary.suggest(word))}
    listed = sorted(hosts)[:MAX_SEARCH_RESULTS]
    environments = set(vocabulary.environments)
    body = {
        "hosts": [{"name": h, "environment": ctx.catalog.environment_of(h),
                   "groups": sorted(ctx.catalog.inventory.hosts[h].groups - environments - {"all", "ungrouped"})}
                  for h in listed],
        "groups_matched": groups,
        "attributes_matched": attributes,
        "unknown": unknown,
        "did_you_mean": suggestions,
        "truncated": len(hosts) > len(listed),
        "note": SEARCH_NOTE,
    }
    return ToolOutcome(content=_dump(body))


SEARCH_NOTE = ("For your information only: propose_patch takes only names, groups, values and patterns the user "
               "wrote; a host that only this search shows would be refused.")
_SEARCH_FILLER = {"server", "servers", "host", "hosts", "box", "boxes", "machine", "machines", "the", "in", "of",
                  "and", "node", "nodes", "all", "first", "second", "third", "fourth", "last"}


def _search_filler() -> set[str]:
    language = load_language()
    return _SEARCH_FILLER | set(language.words.get("filler", ())) | set(language.words.get("host_nouns", ()))


def _patch_groups(args: ListPatchGroups, ctx: ToolContext) -> ToolOutcome:
    return ToolOutcome(content=_dump([{"name": g.name, "description": g.description}
                                      for g in ctx.catalog.patch_groups.values()]))


def result_view(result: IntentResult) -> str:
    """What the model sees of a validated result (and sees again, from memory, on later turns)."""
    view = {k: v for k, v in result.model_dump(mode="json").items() if v not in (None, [], {}, "")}
    if result.is_proposable:
        view["status"] = "proposed: waiting for a person to click Approve"
    elif result.action == Action.CLARIFY:
        view["status"] = "incomplete: the user will be asked"
    return _dump(view)


def _validated(draft: IntentDraft, ctx: ToolContext) -> ToolOutcome:
    result = validate_draft(draft, ctx.catalog)
    return ToolOutcome(content=result_view(result), draft=draft, result=result)


def _propose(args: ProposePatch, ctx: ToolContext) -> ToolOutcome:
    draft = args.draft()
    return _validated(draft.model_copy(update={"targets": _values_as_attributes(draft.targets, ctx.catalog)}), ctx)


def _values_as_attributes(expr: TargetExpr, catalog: Catalog) -> TargetExpr:
    """A plain term that is no host or group but exactly one host-variable value ('Debian') means that value
    (os_family=Debian), as it would from the user."""
    vocabulary = catalog.vocabulary

    def term(t: Term) -> Term:
        if (t.kind != "name" or vocabulary.host(t.value) or vocabulary.groups(t.value)
                or vocabulary.hosts_ending(t.value)):
            return t
        values = [m for m in vocabulary.lookup(t.value) if m.kind == "attribute"]
        return Term(kind="attribute", key=values[0].key, value=t.value) if len(values) == 1 else t

    def selections(items: list[Selection]) -> list[Selection]:
        return [Selection(terms=[term(t) for t in s.terms]) for s in items]

    return TargetExpr(include=selections(expr.include), exclude=selections(expr.exclude))


def _job_status(args: JobStatus, ctx: ToolContext) -> ToolOutcome:
    outcome = _validated(IntentDraft(action=Action.STATUS, job_id=args.job_id, targets=_plain_names(args.hosts)), ctx)
    return _with_job_data(outcome, ctx)


def _propose_cancel(args: ProposeCancel, ctx: ToolContext) -> ToolOutcome:
    outcome = _validated(IntentDraft(action=Action.CANCEL, job_id=args.job_id, targets=_plain_names(args.hosts)), ctx)
    return _with_job_data(outcome, ctx)


def _plain_names(hosts: list[str]) -> TargetExpr:
    """Host names for status and cancel, each a plain name: a pattern is never expanded here (it is unknown)."""
    return TargetExpr(include=[name_term(h) for h in hosts if h.strip()])


def _with_job_data(outcome: ToolOutcome, ctx: ToolContext) -> ToolOutcome:
    result = outcome.result
    if result is None or result.action == Action.CLARIFY or ctx.jobs is None:
        return outcome
    job = ctx.jobs.job_status(result.job_id, list(result.hosts))
    outcome.content = _dump({"job": job} if job else {"job": None, "note": "no matching request"})
    return outcome


def _list_jobs(args: ListJobs, ctx: ToolContext) -> ToolOutcome:
    draft = IntentDraft(action=Action.LIST_JOBS, jobs=args.jobs)
    result = validate_draft(draft, ctx.catalog)
    rows = ctx.jobs.list_jobs(args.limit, args.jobs) if ctx.jobs is not None else []
    return ToolOutcome(content=_dump({"jobs": rows}), draft=draft, result=result)


_HANDLERS: dict[str, Callable[[Any, ToolContext], ToolOutcome]] = {
    "search_inventory": _search,
    "list_patch_groups": _patch_groups,
    "propose_patch": _propose,
    "job_status": _job_status,
    "list_jobs": _list_jobs,
    "propose_cancel": _propose_cancel,
}
