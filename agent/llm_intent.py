"""The LLM tool-calling loop: chat text (+ history and the open draft) -> a validated intent.

An explicit loop rather than a generic agent, so it is bounded and testable: at most `max_calls` model calls per
turn, all within one deadline for the turn; a final tool (propose_patch, job_status, list_jobs, propose_cancel)
ends the turn with a validated result; a malformed tool call is answered with its error once, the second one gives
up. Every draft goes through `core.validation.validate_draft`, and every target term of a proposal must be grounded
in the user's own words of this conversation (see `ungrounded_terms`): a term that only a search, the model itself
or an earlier draft brought up makes the turn a clarification naming it. The model only ever sees the tools in
`agent.tools`: none of them writes, approves or launches, and free text claiming such an outcome is never shown.
"""

from __future__ import annotations

import contextvars
import json
import re
import string
import threading
import time
import unicodedata
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
from agent.tools import (
    FINAL_TOOLS,
    TOOL_SCHEMAS,
    JobReader,
    Targets,
    ToolContext,
    openai_tools,
    result_view,
    run_tool,
)
from core.intent import DRAFTING, RUNS, Action, IntentDraft, IntentResult, Missing
from core.inventory import Catalog
from core.targets import Selection, TargetExpr, Term, clean_name, evaluate
from core.validation import normalize_name, validate_draft
from core.vocabulary import MAX_PHRASE_WORDS, Vocabulary, fold, phrase

SYSTEM_PROMPT = "intent_system.v2"
EXAMPLES_PROMPT = "intent_examples.v2"
PROMPT_VERSION = f"{SYSTEM_PROMPT}+{EXAMPLES_PROMPT}"
MAX_REPLY_CHARS = 800
# Outcomes a model's free text must never claim: only the Approve / Cancel buttons and the worker make them happen,
# and the service words them. Matched on text folded to lower case without accents; deliberately broad (a false
# alarm only replaces the model's sentence with the service's own).
_CLAIM_WORDS = (
    # English
    r"approved|launched|started|executed|ran|rebooted|restarted|cancell?ed|stopped|aborted|terminated|killed|"
    r"patched|applied|installed|scheduled|triggered|kicked\s+off|deployed|completed|finished|queued|submitted|"
    r"done|under\s*way|in\s+progress|(?:is|are)\s+(?:now\s+)?running|launching|rebooting|cancell?ing|approving|"
    r"success(?:ful(?:ly)?)?|"
    # German
    r"genehmigt|freigegeben|gestartet|ausgefuhrt|gepatcht|abgebrochen|storniert|installiert|eingespielt|"
    r"aktualisiert|erledigt|lauft|"
    # French
    r"approuvee?s?|validee?s?|lancee?s?|demarree?s?|executee?s?|redemarree?s?|annulee?s?|patchee?s?|appliquee?s?|"
    r"installee?s?|mise?s?\s+a\s+jour|terminee?s?|c'est\s+fait|en\s+cours|"
    # Spanish
    r"aprobad[oa]s?|lanzad[oa]s?|iniciad[oa]s?|ejecutad[oa]s?|reiniciad[oa]s?|cancelad[oa]s?|parchead[oa]s?|"
    r"aplicad[oa]s?|instalad[oa]s?|actualizad[oa]s?|completad[oa]s?|terminad[oa]s?|hecho|listo|en\s+marcha"
)
_FALSE_CLAIM = re.compile(rf"\b(?:{_CLAIM_WORDS})\b")


class AgentFailure(RuntimeError):
    """The model could not produce a usable answer. `kind` is a short label, `notice` what the user is told."""

    def __init__(self, kind: str, notice: str, usage: dict[str, int] | None = None):
        super().__init__(f"{kind}: {notice}")
        self.kind, self.notice, self.usage = kind, notice, usage or {}


@dataclass
class AgentOutcome:
    draft: IntentDraft
    result: IntentResult
    reply: str | None  # the model's own words, only when it answered without a final tool
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{"id", "name", "args", "result"}] for memory
    usage: dict[str, int] = field(default_factory=dict)  # llm_calls, input_tokens, output_tokens


# --- the prompt ----------------------------------------------------------------------------------------------------

def system_prompt(catalog: Catalog, previous: IntentDraft | None) -> str:
    text, _ = load_prompt(SYSTEM_PROMPT)
    examples, _ = load_prompt(EXAMPLES_PROMPT)
    groups = "\n".join(f"- {g.name}: {g.description}" for g in catalog.patch_groups.values())
    inventory_groups = catalog.inventory.groups
    environments = sorted(catalog.vocabulary.environments)
    roles = sorted(g for g in inventory_groups
                   if g not in environments and g not in ("all", "ungrouped") and "_" not in g)
    if previous is not None and previous.action in DRAFTING:
        fields = previous.model_dump(mode="json", exclude={"note", "targets"}, exclude_defaults=True)
        if not previous.targets.is_empty:
            fields["targets"] = Targets.of(previous.targets).model_dump(exclude_defaults=True)
        open_draft = "Open request: " + json.dumps(fields, ensure_ascii=False)
    else:
        open_draft = "There is no open request."
    body = string.Template(text).safe_substitute(
        patch_groups=groups, environments=", ".join(environments), roles=", ".join(roles),
        attributes=_attributes(catalog), open_draft=open_draft)
    return f"{body}\n\n{examples}"


def _attributes(catalog: Catalog, limit: int = 8) -> str:
    """'os_family (Debian, RedHat)': the host variables a request may filter on, with some of their values."""
    parts = []
    for key in catalog.policy.filter_variables:
        values = sorted({str(h.vars[key]) for h in catalog.inventory.hosts.values()
                         if isinstance(h.vars.get(key), (str, int, float)) and not isinstance(h.vars.get(key), bool)})
        if values:
            more = ", …" if len(values) > limit else ""
            parts.append(f"{key} ({', '.join(values[:limit])}{more})")
    return "; ".join(parts) or "none"


# --- grounding: every target term comes from the user's own words ------------------------------------------------

_TOKEN_SPLIT = re.compile(r"[\s,;()\[\]{}<>\"`]+")
_GLOB_CHARS = re.compile(r"[*?]")
Meaning = tuple[str, str, "str | None"]  # (host | group | attribute, value, attribute key)


@dataclass(frozen=True)
class UserWords:
    """What the user's own messages of a conversation can mean: the hosts, groups and host-variable values that
    their words and 1-4-word phrases resolve to, and the patterns (globs) they typed."""

    meanings: frozenset[Meaning]
    globs: frozenset[str]
    phrases: frozenset[str]  # every 1-4-word phrase typed, words joined by one space


def user_words(texts: list[str], catalog: Catalog) -> UserWords:
    vocabulary = catalog.vocabulary
    meanings: set[Meaning] = set()
    globs: set[str] = set()
    phrases: set[str] = set()
    for text in texts:
        tokens = [t for t in _TOKEN_SPLIT.split(text) if t]
        for token in tokens:
            if _GLOB_CHARS.search(token):
                typed = clean_name(token).strip(".,:!'").lower()
                globs |= {form for form in (typed, typed.rstrip("?")) if _GLOB_CHARS.search(form)}
        words = [w for w in (normalize_name(t) for t in tokens) if w]
        for start in range(len(words)):
            for size in range(1, min(MAX_PHRASE_WORDS, len(words) - start) + 1):
                text_phrase = " ".join(words[start:start + size])
                phrases.add(phrase(text_phrase))
                meanings |= _phrase_meanings(text_phrase, vocabulary)
    return UserWords(frozenset(meanings), frozenset(globs), frozenset(phrases))


def _phrase_meanings(text: str, vocabulary: Vocabulary) -> set[Meaning]:
    out: set[Meaning] = set()
    if host := vocabulary.host(text):
        out.add(("host", host, None))
    else:  # a short form ('www-01' for 'fra1-prd-www-01'): every host it may stand for
        out |= {("host", h, None) for h in vocabulary.hosts_ending(text)}
    out |= {("group", g, None) for g in vocabulary.groups(text)}
    out |= {(m.kind, m.value, m.key) for m in vocabulary.lookup(text) if m.kind in ("group", "attribute")}
    return out


def _term_meanings(term: Term, vocabulary: Vocabulary) -> set[Meaning] | None:
    """What a name or attribute term resolves to, as the validator resolves it. None: it narrows nothing ('all' in
    an intersection; alone the validator refuses it) or resolves to nothing (the validator reports it unknown)."""
    raw = clean_name(term.value)
    if term.kind == "all" or vocabulary.is_whole_fleet(raw):
        return None
    if term.kind == "attribute":
        return {("attribute", fold(raw), term.key)}
    if host := vocabulary.host(raw):
        return {("host", host, None)}
    if groups := vocabulary.groups(raw):
        return {("group", g, None) for g in groups}
    if tails := vocabulary.hosts_ending(raw):
        return {("host", h, None) for h in tails}
    return None


def ungrounded_terms(targets: TargetExpr, words: UserWords, catalog: Catalog) -> list[Term]:
    """The include terms that the user's own words do not ground. A term is grounded when the user typed it (as a
    word or phrase, case and separators aside), when it resolves to the same hosts, groups or host-variable values
    as something the user typed, or, for a pattern, when the user typed exactly that pattern. A selection that only
    resolves to hosts the user named one by one is grounded as a whole ('www-01' + 'fra1' for 'fra1-prd-www-01').
    Exclusions only narrow a request and are not checked here (one that does not resolve stops the request in the
    validator)."""
    vocabulary = catalog.vocabulary
    out: list[Term] = []
    for selection in targets.include:
        bad = [term for term in selection.terms if not _term_grounded(term, words, vocabulary)]
        if bad and _only_named_hosts(selection, words, vocabulary):
            bad = []
        out += bad
    return list(dict.fromkeys(out))


def _term_grounded(term: Term, words: UserWords, vocabulary: Vocabulary) -> bool:
    if term.kind == "glob":
        return clean_name(term.value).lower() in words.globs
    if phrase(clean_name(term.value)) in words.phrases:  # the user's own word or phrase
        return True
    meanings = _term_meanings(term, vocabulary)
    if meanings is None:
        return True  # narrows nothing, or is unknown (the validator names it)
    if term.kind == "attribute" and term.key is None:
        return any(kind == "attribute" and value == fold(clean_name(term.value)) for kind, value, _ in words.meanings)
    return meanings <= words.meanings


def _only_named_hosts(selection: Selection, words: UserWords, vocabulary: Vocabulary) -> bool:
    resolved = evaluate(TargetExpr(include=[selection]), vocabulary)
    named = {value for kind, value, _ in words.meanings if kind == "host"}
    return not resolved.problems and bool(resolved.hosts) and resolved.hosts <= named


def _grounded(draft: IntentDraft, result: IntentResult, catalog: Catalog,
              words: UserWords) -> tuple[IntentDraft, IntentResult]:
    """A patch / pre-check draft whose include terms are all the user's, unchanged; else a clarification naming the
    rest, and a draft that keeps only the include selections free of them (dropping a whole selection, never a
    term of one: that would widen it). The kept draft becomes the open draft of the conversation."""
    bad = ungrounded_terms(draft.targets, words, catalog)
    if not bad:
        return draft, result
    dropped = set(bad)
    kept = TargetExpr(include=[s for s in draft.targets.include if not dropped & set(s.terms)],
                      exclude=list(draft.targets.exclude))
    pruned = draft.model_copy(update={"targets": kept})
    check = validate_draft(pruned, catalog)
    labels = list(dict.fromkeys(t.label() for t in bad))
    one = len(labels) == 1
    it = "it" if one else "them"
    message = (f"I left out {', '.join(labels)}: you did not write {it} in this conversation, and a request only "
               f"uses the names, groups, values and patterns you typed yourself (a search result or my own guess "
               f"does not count). If you mean {it}, please name {it}.")
    missing: list[Missing] = ["targets"]
    if result.patch_group is None and (draft.action == Action.PATCH or draft.patch_group):
        missing.append("patch_group")
    clarify = IntentResult(
        action=Action.CLARIFY, requested_action=draft.action, hosts=check.hosts if not kept.is_empty else [],
        patch_group=result.patch_group, reboot=draft.reboot, check_mode=draft.check_mode, missing=missing,
        unknown_hosts=check.unknown_hosts, suggestions=check.suggestions,
        targets=kept.describe() if not kept.is_empty else "", message=message,
    )
    return pruned, clarify


# --- the deadline of a turn ------------------------------------------------------------------------------------------

class _Deadline:
    """One time limit for all model calls of a turn. `remaining()` is the timeout of the next call."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.end = time.monotonic() + seconds if seconds else None

    def remaining(self, usage: dict[str, int]) -> float | None:
        if self.end is None:
            return None
        left = self.end - time.monotonic()
        if left <= 0.01:
            raise self.failure(usage)
        return left

    def failure(self, usage: dict[str, int]) -> AgentFailure:
        return AgentFailure("deadline", f"did not finish within the time limit of a turn ({self.seconds:g} s)", usage)


class _DeadlinePassed(Exception):
    pass


def _invoke(bound: Any, messages: list[BaseMessage], timeout: float | None) -> Any:
    """One model call. With a timeout it is passed to the call (the openai client's own request timeout) and the
    call runs on its own thread, so the turn goes on when the time is up even if the call does not return."""
    if timeout is None:
        return bound.invoke(messages)
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = bound.invoke(messages, timeout=timeout)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(work,), name="llm-call", daemon=True).start()
    if not done.wait(timeout):
        raise _DeadlinePassed()
    if "error" in box:
        raise box["error"]
    return box["value"]


# --- the loop --------------------------------------------------------------------------------------------------------

def run_agent(text: str, *, catalog: Catalog, model: BaseChatModel, previous: IntentDraft | None = None,
              history: list[Turn] | None = None, jobs: JobReader | None = None, max_calls: int = 4,
              max_history_messages: int = 12, max_history_chars: int = 6000,
              tool_choice: str | dict[str, Any] = "auto", deadline_seconds: float | None = None) -> AgentOutcome:
    """One chat turn through the model. Raises `AgentFailure` when the model gives no usable answer, or none within
    `deadline_seconds` (all calls of the turn together; None: each call only has the client's own timeout)."""
    deadline = _Deadline(deadline_seconds)
    history = history or []
    messages: list[BaseMessage] = [SystemMessage(system_prompt(catalog, previous))]
    messages += history_messages(history, max_messages=max_history_messages, max_chars=max_history_chars)
    messages.append(HumanMessage(text))
    # The user's own words of this conversation: the only thing that grounds a target.
    words = user_words([t.text for t in history if t.role == "user"] + [text], catalog)
    # A forced tool is a dict ({"type": "function", ...}): ChatOpenAI takes it, BaseChatModel's signature says str.
    bound = model.bind_tools(openai_tools(), tool_choice=tool_choice)  # type: ignore[arg-type]
    ctx = ToolContext(catalog=catalog, jobs=jobs)
    usage = {"llm_calls": 0, "input_tokens": 0, "output_tokens": 0}
    trace: list[dict[str, Any]] = []
    errors_fed_back = 0

    while usage["llm_calls"] < max_calls:
        ai = _call(bound, messages, usage, deadline)
        _check_refusal(ai, usage)
        calls = list(ai.tool_calls)
        bad = list(getattr(ai, "invalid_tool_calls", []) or [])
        only_calls = (calls or bad) and not ai.content
        messages.append(ai.model_copy(update={"content": TOOL_CALL_CONTENT}) if only_calls else ai)
        if not calls and not bad:
            reply = _text(ai)
            if not reply:
                raise AgentFailure("empty", "returned an empty answer", usage)
            # Nothing to do: the open draft (kept by the chat service) is left as it was.
            shown = _safe_reply(reply)
            return AgentOutcome(draft=IntentDraft(action=Action.UNSUPPORTED, note=shown[:500]),
                                result=IntentResult(action=Action.UNSUPPORTED, message=shown[:500]),
                                reply=shown, tool_calls=trace, usage=usage)

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
            messages.append(ToolMessage(outcome.content, tool_call_id=call_id))
            trace.append({"id": call_id, "name": name, "args": args.model_dump(mode="json", exclude_defaults=True),
                          "result": outcome.content})
            if name in FINAL_TOOLS and final is None:
                final, final_entry = outcome, trace[-1]
        if final is not None:
            draft, result = final.draft, final.result
            assert draft is not None and result is not None, "every final tool validates a draft"
            if draft.action in RUNS:
                draft, grounded = _grounded(draft, result, catalog, words)
                if grounded is not result:  # memory keeps what really came of the call, not the refused proposal
                    final_entry["result"] = result_view(grounded)
                result = grounded
            return AgentOutcome(draft=draft, result=result, reply=None, tool_calls=trace, usage=usage)
        if errors:
            if errors_fed_back:
                raise AgentFailure("malformed", "sent tool calls that could not be used", usage)
            errors_fed_back += 1
    raise AgentFailure("exhausted", f"did not finish within {max_calls} calls", usage)


def _call(bound: Any, messages: list[BaseMessage], usage: dict[str, int], deadline: _Deadline) -> AIMessage:
    timeout = deadline.remaining(usage)
    usage["llm_calls"] += 1
    try:
        ai = _invoke(bound, messages, timeout)
    except _DeadlinePassed:
        LLM_CALLS.labels(outcome="error").inc()
        raise deadline.failure(usage) from None
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


def _failure(exc: Exception, usage: dict[str, int]) -> AgentFailure:
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


def _check_refusal(ai: AIMessage, usage: dict[str, int]) -> None:
    refused = (ai.additional_kwargs.get("refusal")
               or (ai.response_metadata or {}).get("finish_reason") == "content_filter")
    if isinstance(ai.content, list):
        refused = refused or any(isinstance(b, dict) and b.get("type") == "refusal" for b in ai.content)
    if refused:
        raise AgentFailure("refusal", "declined to answer", usage)


def _text(ai: AIMessage) -> str:
    if isinstance(ai.content, str):
        return ai.content.strip()
    return " ".join(b.get("text", "") for b in ai.content if isinstance(b, dict) and b.get("type") == "text").strip()


def claims_an_outcome(text: str) -> bool:
    """Whether text says that something was approved, launched, started, canceled, rebooted or patched (English,
    German, French, Spanish; accents and case ignored)."""
    folded = unicodedata.normalize("NFKD", text.replace("\u2019", "'"))
    folded = "".join(c for c in folded if not unicodedata.combining(c)).lower()
    return bool(_FALSE_CLAIM.search(folded))


def _safe_reply(text: str) -> str:
    """The model's own words, unless they claim an outcome: then the service's wording (nothing happened)."""
    from agent.service import OUTCOME_CLAIM_REPLY

    if claims_an_outcome(text):
        return OUTCOME_CLAIM_REPLY
    return text if len(text) <= MAX_REPLY_CHARS else text[:MAX_REPLY_CHARS].rstrip() + "…"


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()[:5])
    return str(exc)[:300]


# --- evals entry point --------------------------------------------------------------------------------------------

def parse_with_llm(text: str, catalog: Catalog, history: list[str] | None = None, *,
                   model: BaseChatModel | None = None, tool_choice: str | dict[str, Any] = "auto") -> IntentDraft:
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
                            max_calls=settings.llm_max_calls_per_turn,
                            max_history_messages=settings.memory_max_messages,
                            max_history_chars=settings.memory_max_chars, tool_choice=tool_choice,
                            deadline_seconds=settings.llm_turn_deadline_seconds)
        if outcome.result.action in DRAFTING:
            previous = outcome.draft
        turns += [Turn("user", message), Turn("assistant", outcome.reply or outcome.result.message or "",
                                              outcome.tool_calls)]
    assert outcome is not None  # the loop read at least the message itself
    return outcome.draft
