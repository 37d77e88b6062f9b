"""The agent's one public entry point: a chat message (plus the conversation's open draft) -> a validated intent
and the words to answer with. The rules parser answers what it fully understands; the LLM path (when one is
configured) takes the rest. Either way the result passed `core.validation.validate_draft`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.intent import REBOOT_LABELS, Action, IntentDraft, IntentResult
from core.inventory import Catalog
from core.settings import Settings

if TYPE_CHECKING:
    from agent.memory import Turn
    from agent.tools import JobReader

log = logging.getLogger(__name__)
DEFAULT_TURN_DEADLINE_SECONDS = 20.0


@dataclass(frozen=True)
class Interpretation:
    draft: IntentDraft
    result: IntentResult
    engine: str  # "rules" or "llm:<model>"
    prompt_version: str | None = None
    model_name: str | None = None
    reply: str | None = None  # the model's own answer, when it called no final tool (out of scope, small talk)
    notice: str | None = None  # said before the reply, e.g. that the model failed and the rules parser answered
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # stored with the reply: the conversation's memory
    usage: dict[str, int] = field(default_factory=dict)  # llm_calls, input_tokens, output_tokens of this turn


def interpret_message(text: str, *, catalog: Catalog, previous: IntentDraft | None = None,
                      history: list[Turn] | None = None, jobs: JobReader | None = None,
                      settings: Settings | None = None) -> Interpretation:
    """The hybrid path: the rules parser when it is confident (no model call), else the LLM agent when one is
    configured, else the rules parser alone. Whatever answers, its draft went through the validator.
    `history` is a list of `agent.memory.Turn`, `jobs` an `agent.tools.JobReader`."""
    from agent import rules
    from agent.llm import INTENT_TURNS, get_chat_model, model_name

    draft, result = rules.interpret(text, catalog, previous=previous)
    rules_answer = Interpretation(draft=draft, result=result, engine="rules")
    if rules.is_confident(draft, result):
        INTENT_TURNS.labels(path="rules_confident").inc()
        return rules_answer
    if settings is None:
        from core.settings import get_settings

        settings = get_settings()
    try:
        model = get_chat_model(settings)
    except Exception as exc:
        log.error("cannot build the chat model: %s", exc)
        INTENT_TURNS.labels(path="rules_fallback").inc()
        return Interpretation(draft=draft, result=unconfirmed(result), engine="rules",
                              notice="The language model is misconfigured; the offline rules parser answered instead.")
    if model is None:
        INTENT_TURNS.labels(path="rules_only").inc()
        return Interpretation(draft=draft, result=unconfirmed(result), engine="rules")

    from agent.llm_intent import PROMPT_VERSION, AgentFailure, run_agent

    name = model_name(settings, model)
    try:
        outcome = run_agent(
            text, catalog=catalog, model=model, previous=previous, history=history or [], jobs=jobs,
            max_calls=settings.llm_max_calls_per_turn, max_history_messages=settings.memory_max_messages,
            max_history_chars=settings.memory_max_chars,
            deadline_seconds=getattr(settings, "llm_turn_deadline_seconds", DEFAULT_TURN_DEADLINE_SECONDS),
        )
    except AgentFailure as failure:
        log.warning("LLM turn failed (%s), the rules parser answers: %s", failure.kind, failure)
        INTENT_TURNS.labels(path="rules_fallback").inc()
        # The rules parser was not sure of this message: its reading is asked about, never proposed.
        return Interpretation(
            draft=draft, result=unconfirmed(result), engine="rules", usage=failure.usage,
            notice=f"The language model {failure.notice}; the offline rules parser answered instead.",
        )
    INTENT_TURNS.labels(path="llm").inc()
    result = _without_hosts_left_out(outcome.result, rules.kept_out(draft))
    return Interpretation(
        draft=outcome.draft, result=result, engine=f"llm:{name}", prompt_version=PROMPT_VERSION,
        model_name=name, reply=outcome.reply, tool_calls=outcome.tool_calls, usage=outcome.usage,
    )


def _without_hosts_left_out(result: IntentResult, kept_out: set[str]) -> IntentResult:
    """The model may not bring back a host the user excluded or only mentioned in passing (it could drop an
    exclusion, or read a mention as a target): such a proposal becomes a question naming the hosts."""
    back = sorted(kept_out & set(result.hosts))
    if not back or not result.is_proposable:
        return result
    return result.model_copy(update={
        "action": Action.CLARIFY, "requested_action": result.action, "missing": ["targets"],
        "message": f"You left out {', '.join(back)}, but the proposal I came up with holds "
                   f"{'it' if len(back) == 1 else 'them'}. Please say again which hosts to patch."})


def unconfirmed(result: IntentResult) -> IntentResult:
    """A proposable reading that nobody is sure of (the rules parser was not confident and no model answered) as a
    question: what was understood, and a request to confirm it in plain words. Anything else is returned as it is.
    The hosts stay in the result (what was understood), but a clarification never becomes a proposal."""
    if not result.is_proposable:
        return result
    precheck = result.action == Action.PRECHECK
    hosts = ", ".join(result.hosts)
    read = f"{'pre-checks' if precheck else 'a dry run' if result.check_mode else 'a patch run'} on {hosts}"
    if result.patch_group:
        read += f" with {result.patch_group}"
    if not precheck and result.reboot:
        read += f", {REBOOT_WORDS[result.reboot]}"
    example = f"{'Pre-checks on' if precheck else 'Patch'} {hosts}"
    if result.patch_group and not precheck:
        example += f" with {result.patch_group}"
    if result.check_mode and not precheck:
        example += ", dry run"
    message = (f"I am not sure I understood. I read {read}. Nothing is proposed yet: if that is right, please "
               f"confirm by writing it plainly, for example \"{example}\"; otherwise say what you mean.")
    return result.model_copy(update={"action": Action.CLARIFY, "requested_action": result.action, "missing": [],
                                     "message": message})


REBOOT_WORDS = REBOOT_LABELS


def describe_targets(hosts: list[str], catalog: Catalog) -> str:
    by_env: dict[str, list[str]] = {}
    for host in hosts:
        env = catalog.environment_or_other(host)
        by_env.setdefault(env, []).append(host)
    return "; ".join(f"{env}: {', '.join(sorted(names))}" for env, names in sorted(by_env.items()))


def describe_change(before: list[str], after: list[str]) -> str:
    """'removed www-01; now 2 hosts: www-02, www-03' (empty when the hosts did not change)."""
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    if not added and not removed:
        return ""
    parts = [f"added {', '.join(added)}"] if added else []
    parts += [f"removed {', '.join(removed)}"] if removed else []
    return f"{'; '.join(parts).capitalize()}; now {_hosts(len(after))}: {', '.join(after)}."


def _hosts(count: int) -> str:
    """'1 host', '3 hosts'."""
    return f"{count} host{'s' if count != 1 else ''}"


def describe_proposal(result: IntentResult, catalog: Catalog, previous_hosts: list[str] | None = None) -> str:
    group = catalog.patch_groups.get(result.patch_group or "")
    what = "Pre-checks" if result.action == Action.PRECHECK else "Patch"
    lines = [change] if previous_hosts and (change := describe_change(previous_hosts, result.hosts)) else []
    count = _hosts(len(result.hosts))
    lines.append(f"{what} proposal for {count} ({describe_targets(result.hosts, catalog)}).")
    if result.targets:
        listed = ", ".join(result.hosts[:20]) + (", …" if len(result.hosts) > 20 else "")
        lines.append(f"Targets: {result.targets} -> {count}: {listed}.")
    if group:
        lines.append(f"Patch group: {group.name} — {group.description}.")
    reboot = REBOOT_WORDS[result.reboot] if result.reboot else None
    lines.append(f"Reboot: {reboot}. Dry run: {'yes (check mode)' if result.check_mode else 'no'}.")
    if result.refused_hosts:
        lines.append(f"Left out by policy: {', '.join(result.refused_hosts)}.")
    lines.append("Nothing runs until someone clicks Approve.")
    return "\n".join(lines)


def describe_clarification(result: IntentResult, catalog: Catalog) -> str:
    parts: list[str] = []
    if result.message:
        parts.append(result.message)
    for name in result.unknown_hosts:
        hint = result.suggestions.get(name)
        parts.append(f"I don't know a host or group called '{name}'."
                     + (f" Did you mean {', '.join(hint)}?" if hint else ""))
    if "targets" in result.missing and not result.unknown_hosts and not result.refused_hosts:
        parts.append(f"Which hosts should I use? Name hosts ({_example_host(catalog)}), groups or an environment.")
    if "patch_group" in result.missing:
        choices = "; ".join(f"{g.name}: {g.description}" for g in catalog.patch_groups.values())
        parts.append(f"Which patch group? Choices — {choices}.")
    if not parts:
        parts.append("Could you say which hosts and which patch group you mean?")
    return " ".join(dict.fromkeys(parts))


def _example_host(catalog: Catalog) -> str:
    return next(iter(sorted(catalog.inventory.hosts)), "a host name")


UNSUPPORTED_REPLY = (
    "I can only help with patching: propose a patch or pre-check run for inventory hosts with a patch group, "
    "report job status, list jobs, or prepare a cancel. Approvals happen only through the Approve button."
)
# What the service says instead of a model's text that claims an approval, launch, cancel, reboot or patch: such
# outcomes are only ever worded by the service, from what really happened.
OUTCOME_CLAIM_REPLY = (
    "Nothing was approved, launched, canceled or rebooted by this message: chat text cannot do that. A proposal runs "
    "only after a person clicks its Approve button, and a running job stops only with its Cancel button. "
    + UNSUPPORTED_REPLY.split(": ", 1)[0] + "."
)
