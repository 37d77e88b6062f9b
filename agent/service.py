"""The agent's one public entry point: a chat message (plus the conversation's open draft) -> a validated intent
and the words to answer with. The rules parser answers what it fully understands; the LLM path (when one is
configured) takes the rest. Either way the result passed `core.validation.validate_draft`.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.intent import IntentDraft, IntentResult
from core.inventory import Catalog


@dataclass(frozen=True)
class Interpretation:
    draft: IntentDraft
    result: IntentResult
    engine: str  # "rules" or "llm:<model>"
    prompt_version: str | None = None
    model_name: str | None = None


def interpret_message(text: str, *, catalog: Catalog, previous: IntentDraft | None = None) -> Interpretation:
    from agent import rules

    draft, result = rules.interpret(text, catalog, previous=previous)
    return Interpretation(draft=draft, result=result, engine="rules")


REBOOT_WORDS = {"never": "no reboot", "if_needed": "reboot only if needed", "always": "always reboot"}


def describe_targets(hosts: list[str], catalog: Catalog) -> str:
    by_env: dict[str, list[str]] = {}
    for host in hosts:
        env = catalog.inventory.hosts[host].environment or "other"
        by_env.setdefault(env, []).append(host)
    return "; ".join(f"{env}: {', '.join(sorted(names))}" for env, names in sorted(by_env.items()))


def describe_proposal(result: IntentResult, catalog: Catalog) -> str:
    group = catalog.patch_groups.get(result.patch_group or "")
    what = "Pre-checks" if result.action == "precheck" else "Patch"
    lines = [
        f"{what} proposal for {len(result.hosts)} host{'s' if len(result.hosts) != 1 else ''} ({describe_targets(result.hosts, catalog)}).",
    ]
    if group:
        lines.append(f"Patch group: {group.name} — {group.description}.")
    lines.append(f"Reboot: {REBOOT_WORDS.get(result.reboot or '', result.reboot)}. Dry run: {'yes (check mode)' if result.check_mode else 'no'}.")
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
        parts.append(f"I don't know a host or group called '{name}'." + (f" Did you mean {', '.join(hint)}?" if hint else ""))
    if "targets" in result.missing and not result.unknown_hosts and not result.refused_hosts:
        parts.append("Which hosts should I use? Name hosts (web-01), groups (prod web servers) or an environment.")
    if "patch_group" in result.missing:
        choices = "; ".join(f"{g.name}: {g.description}" for g in catalog.patch_groups.values())
        parts.append(f"Which patch group? Choices — {choices}.")
    if not parts:
        parts.append("Could you say which hosts and which patch group you mean?")
    return " ".join(dict.fromkeys(parts))


UNSUPPORTED_REPLY = (
    "I can only help with patching: propose a patch or pre-check run for inventory hosts with a patch group, "
    "report job status, list jobs, or prepare a cancel. Approvals happen only through the Approve button."
)
