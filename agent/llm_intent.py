"""The LLM tool-calling loop: chat text (+ history and the open draft) -> a validated intent.

An explicit loop rather than a generic agent, so it is bounded and testable: at most `max_calls` model calls per
turn; a final tool (propose_patch, job_status, list_jobs, propose_cancel) ends the turn with a validated result;
a malformed tool call is answered with its error once, the second one gives up. Every draft goes through
`core.validation.validate_draft`, and a draft naming hosts or groups that neither the user nor a search brought up
(the model widening the targets) becomes a clarification instead of a proposal. The model only ever sees the
tools in `agent.tools`: none of them writes, approves or launches.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from langchain_core import exceptions as lc_errors
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import ValidationError

from agent.llm import LLM_CALLS, LLM_TOKENS
from agent.memory import TOOL_CALL_CONTENT, Turn, history_messages
from agent.prompts import load_prompt
from agent.tools import FINAL_TOOLS, TOOL_SCHEMAS, JobReader, ToolContext, openai_tools, run_tool
from core.intent import IntentDraft, IntentResult
from core.inventory import ENVIRONMENT_GROUPS, Catalog
from core.validation import normalize_name, resolve_group, resolve_host

SYSTEM_PROMPT = "intent_system.v1"
EXAMPLES_PROMPT = "intent_examples.v1"
PROMPT_VERSION = f"{SYSTEM_PROMPT}+{EXAMPLES_PROMPT}"
MAX_REPLY_CHARS = 800
# Claims a model's free text must never make: only the Approve / Cancel buttons do these things.
_FALSE_CLAIM = re.compile(
    r"\b(?:i(?:'ve|\s+have)?|we(?:'ve|\s+have)?)\s+(?:just\s+|now\s+|already\s+)?(?:approved|launched|started|"
    r"executed|run|ran|rebooted|canceled|cancelled|patched|scheduled)\b|\b(?:has|have)\s+been\s+(?:approved|launched)\b",
    re.IGNORECASE,
)


class AgentFailure(RuntimeError):
    """The model could not produce a usable answer. `kind` is a short label, `notice` what the user is told."""

    def __init__(self, kind: str, notice: str, usage: dict | None = None):
        super().__init__(f"{kind}: {notice}")
        self.kind, self.notice, self.usage = kind, notice, usage or {}


@dataclass
class AgentOutcome:
    draft: IntentDraft
    result: IntentResult
    reply: str | None  # the model's own words, only when it answered without a final tool
    tool_calls: list[dict] = field(default_factory=list)  # [{"id", "name", "args", "result"}] for memory
    usage: dict = field(default_factory=dict)  # llm_calls, input_tokens, output_tokens


# --- the prompt ----------------------------------------------------------------------------------------------------

def system_prompt(catalog: Catalog, previous: IntentDraft | None) -> str:
    text, _ = load_prompt(SYSTEM_PROMPT)
    examples, _ = load_prompt(EXAMPLES_PROMPT)
    groups = "\n".join(f"- {g.name}: {g.description}" for g in catalog.patch_groups.values())
    inventory_groups = catalog.inventory.groups
    environments = [g for g in ENVIRONMENT_GROUPS if g in inventory_groups]
    roles = sorted(g for g in inventory_groups if g not in environments and g not in ("all", "ungrouped") and "_" not in g)
    if previous is not None and previous.action in ("patch", "precheck", "clarify"):
        fields = {k: v for k, v in previous.model_dump(mode="json", exclude={"note"}).items() if v not in (None, [], False)}
        open_draft = "Open request (amend it when the user changes something): " + json.dumps(fields)
    else:
        open_draft = "There is no open request."
    body = string.Template(text).safe_substitute(
        patch_groups=groups, environments=", ".join(environments), roles=", ".join(roles), open_draft=open_draft)
    return f"{body}\n\n{examples}"


# --- grounding: the model may not add targets nobody named ----------------------------------------------------------

def _named_in(texts: list[str], catalog: Catalog) -> tuple[set[str], set[str]]:
    """Hosts and groups that the user's own words name (single words and word pairs, aliases included)."""
    hosts: set[str] = set()
    groups: set[str] = set()
    inventory = catalog.inventory
    for text in texts:
        words = [w for w in (normalize_name(w) for w in re.split(r"[\s,;/]+", text)) if w]
        for i, word in enumerate(words):
            for candidate in (word, f"{word} {words[i + 1]}" if i + 1 < len(words) else None):
                if not candidate:
                    continue
                if host := resolve_host(candidate, inventory):
                    hosts.add(host)
                if (group := resolve_group(candidate, inventory)) is not None:
                    groups.add(group)
    return hosts, groups


def _ungrounded(draft: IntentDraft, catalog: Catalog, user_texts: list[str], previous: IntentDraft | None,
                seen_hosts: set[str]) -> list[str]:
    named_hosts, named_groups = _named_in(user_texts, catalog)
    if previous is not None:
        prev_hosts, prev_groups = _named_in([*previous.hosts, *previous.groups, *previous.within], catalog)
        named_hosts |= prev_hosts
        named_groups |= prev_groups
    inventory = catalog.inventory
    extra: list[str] = []
    for raw in draft.hosts:
        host = resolve_host(raw, inventory)
        if host and host not in named_hosts and host not in seen_hosts:
            extra.append(host)
        elif host is None and (group := resolve_group(raw, inventory)) and group not in named_groups:
            extra.append(raw)
    for raw in [*draft.groups, *draft.within]:
        group = resolve_group(raw, inventory)
        if group is not None and group not in named_groups:
            extra.append(raw)
    return extra


def _without(draft: IntentDraft, names: list[str]) -> IntentDraft:
    drop = {normalize_name(n) for n in names}

    def keep(values: list[str]) -> list[str]:
        return [v for v in values if normalize_name(v) not in drop]

    return draft.model_copy(update={"hosts": keep(draft.hosts), "groups": keep(draft.groups),
                                    "within": keep(draft.within)})


# --- the loop --------------------------------------------------------------------------------------------------------

def run_agent(text: str, *, catalog: Catalog, model: BaseChatModel, previous: IntentDraft | None = None,
              history: list[Turn] | None = None, jobs: JobReader | None = None, max_calls: int = 4,
              max_history_messages: int = 12, max_history_chars: int = 6000,
              tool_choice: str | dict = "auto") -> AgentOutcome:
    """One chat turn through the model. Raises `AgentFailure` when the model gives no usable answer."""
    history = history or []
    messages: list[BaseMessage] = [SystemMessage(system_prompt(catalog, previous))]
    messages += history_messages(history, max_messages=max_history_messages, max_chars=max_history_chars)
    messages.append(HumanMessage(text))
    user_texts = [t.text for t in history if t.role == "user"] + [text]
    bound = model.bind_tools(openai_tools(), tool_choice=tool_choice)
    ctx = ToolContext(catalog=catalog, jobs=jobs)
    usage = {"llm_calls": 0, "input_tokens": 0, "output_tokens": 0}
    trace: list[dict] = []
    seen_hosts: set[str] = set()
    errors_fed_back = 0

    while usage["llm_calls"] < max_calls:
        ai = _call(bound, messages, usage)
        _check_refusal(ai, usage)
        calls = list(ai.tool_calls)
        bad = list(getattr(ai, "invalid_tool_calls", []) or [])
        messages.append(ai.model_copy(update={"content": TOOL_CALL_CONTENT}) if (calls or bad) and not ai.content else ai)
        if not calls and not bad:
            reply = _text(ai)
            if not reply:
                raise AgentFailure("empty", "returned an empty answer", usage)
            # Nothing to do: the open draft (kept by the chat service) is left as it was.
            return AgentOutcome(draft=IntentDraft(action="unsupported", note=reply[:500]),
                                result=IntentResult(action="unsupported", message=reply[:500]),
                                reply=_safe_reply(reply), tool_calls=trace, usage=usage)

        final = None
        errors: list[str] = []
        for call in bad:
            error = f"Invalid tool call {call.get('name')!r}: the arguments are not valid JSON."
            messages.append(ToolMessage(error, tool_call_id=call.get("id") or "invalid", status="error"))
            errors.append(error)
        for call in calls:
            name, call_id = call["name"], call.get("id") or f"call_{len(trace)}"
            schema = TOOL_SCHEMAS.get(name)
            try:
                if schema is None:
                    raise ValueError(f"unknown tool {name!r}; the tools are {', '.join(TOOL_SCHEMAS)}")
                args = schema.model_validate(call.get("args") or {})
            except (ValidationError, ValueError) as exc:
                error = f"Invalid arguments for {name!r}: {_short_error(exc)}"
                messages.append(ToolMessage(error, tool_call_id=call_id, status="error"))
                errors.append(error)
                continue
            outcome = run_tool(name, args, ctx)
            seen_hosts |= outcome.seen_hosts
            messages.append(ToolMessage(outcome.content, tool_call_id=call_id))
            trace.append({"id": call_id, "name": name, "args": args.model_dump(mode="json", exclude_defaults=True),
                          "result": outcome.content})
            if name in FINAL_TOOLS and final is None:
                final = outcome
        if final is not None:
            draft, result = final.draft, final.result
            if result.is_proposable or (result.action == "clarify" and not result.unknown_hosts):
                extra = _ungrounded(draft, catalog, user_texts, previous, seen_hosts)
                if extra:
                    draft, result = _widened(draft, result, extra)
            return AgentOutcome(draft=draft, result=result, reply=None, tool_calls=trace, usage=usage)
        if errors:
            if errors_fed_back:
                raise AgentFailure("malformed", "sent tool calls that could not be used", usage)
            errors_fed_back += 1
    raise AgentFailure("exhausted", f"did not finish within {max_calls} calls", usage)


def _widened(draft: IntentDraft, result: IntentResult, extra: list[str]) -> tuple[IntentDraft, IntentResult]:
    names = ", ".join(dict.fromkeys(extra))
    clarify = IntentResult(
        action="clarify", requested_action=result.requested_action or result.action, hosts=[],
        patch_group=result.patch_group, reboot=result.reboot, check_mode=result.check_mode, missing=["targets"],
        message=f"I left out {names}: you did not name {'it' if len(extra) == 1 else 'them'} and I did not look "
                f"{'it' if len(extra) == 1 else 'them'} up. Please name the hosts the request should cover.",
    )
    return _without(draft, extra), clarify


def _call(bound: Any, messages: list[BaseMessage], usage: dict) -> AIMessage:
    usage["llm_calls"] += 1
    try:
        ai = bound.invoke(messages)
    except Exception as exc:  # every failure of the call becomes one labelled AgentFailure
        LLM_CALLS.labels(outcome="error").inc()
        raise _failure(exc, usage) from exc
    LLM_CALLS.labels(outcome="ok").inc()
    meta = getattr(ai, "usage_metadata", None) or {}
    for key in ("input_tokens", "output_tokens"):
        usage[key] += int(meta.get(key) or 0)
        LLM_TOKENS.labels(kind=key.split("_")[0]).inc(int(meta.get(key) or 0))
    if not isinstance(ai, AIMessage):
        raise AgentFailure("malformed", "returned something that is not a chat message", usage)
    return ai


def _failure(exc: Exception, usage: dict) -> AgentFailure:
    if isinstance(exc, (openai.APITimeoutError, lc_errors.ModelTimeoutError, httpx.TimeoutException, TimeoutError)):
        return AgentFailure("timeout", "did not answer in time", usage)
    if isinstance(exc, (openai.RateLimitError, lc_errors.ModelRateLimitError)):
        return AgentFailure("rate_limit", "is rate-limited (HTTP 429) right now", usage)
    if isinstance(exc, (openai.APIConnectionError, lc_errors.ModelConnectionError, httpx.TransportError, OSError)):
        return AgentFailure("network", "could not be reached", usage)
    if isinstance(exc, lc_errors.ModelRefusalError):
        return AgentFailure("refusal", "declined to answer", usage)
    if isinstance(exc, openai.APIStatusError):
        return AgentFailure("server_error", f"answered with an error (HTTP {exc.status_code})", usage)
    if isinstance(exc, (lc_errors.OutputParserException, ValidationError, json.JSONDecodeError)):
        return AgentFailure("malformed", "sent an answer that could not be read", usage)
    return AgentFailure("error", f"failed ({type(exc).__name__})", usage)


def _check_refusal(ai: AIMessage, usage: dict) -> None:
    refused = ai.additional_kwargs.get("refusal") or (ai.response_metadata or {}).get("finish_reason") == "content_filter"
    if isinstance(ai.content, list):
        refused = refused or any(isinstance(b, dict) and b.get("type") == "refusal" for b in ai.content)
    if refused:
        raise AgentFailure("refusal", "declined to answer", usage)


def _text(ai: AIMessage) -> str:
    if isinstance(ai.content, str):
        return ai.content.strip()
    return " ".join(b.get("text", "") for b in ai.content if isinstance(b, dict) and b.get("type") == "text").strip()


def _safe_reply(text: str) -> str:
    from agent.service import UNSUPPORTED_REPLY

    if _FALSE_CLAIM.search(text):
        return UNSUPPORTED_REPLY
    return text if len(text) <= MAX_REPLY_CHARS else text[:MAX_REPLY_CHARS].rstrip() + "…"


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()[:5])
    return str(exc)[:300]


# --- evals entry point --------------------------------------------------------------------------------------------

def parse_with_llm(text: str, catalog: Catalog, history: list[str] | None = None, *,
                   model: BaseChatModel | None = None, tool_choice: str | dict = "auto") -> IntentDraft:
    """The LLM path alone (no rules parser), for `python -m evals --provider llm`. Earlier user turns are replayed
    through the agent as a conversation would be, each with the open draft the previous one left."""
    from agent.llm import get_chat_model
    from core.settings import get_settings

    settings = get_settings()
    model = model or get_chat_model(settings)
    if model is None:
        raise RuntimeError("no LLM is configured")
    turns: list[Turn] = []
    previous: IntentDraft | None = None
    outcome = None
    for message in [*(history or []), text]:
        outcome = run_agent(message, catalog=catalog, model=model, previous=previous, history=turns,
                            max_calls=settings.llm_max_calls_per_turn, max_history_messages=settings.memory_max_messages,
                            max_history_chars=settings.memory_max_chars, tool_choice=tool_choice)
        if outcome.result.action in ("patch", "precheck", "clarify"):
            previous = outcome.draft
        turns += [Turn("user", message), Turn("assistant", outcome.reply or outcome.result.message or "",
                                              outcome.tool_calls)]
    return outcome.draft
