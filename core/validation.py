"""Pure validation of parser output against the inventory and patch groups. No I/O, no clock, no randomness.

Fail closed: a name that does not resolve exactly is never guessed, it becomes a clarification that names it
(with "did you mean" suggestions). The AWX `limit` is built here too, and only from exact inventory names.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from core.intent import DEFAULT_REBOOT, Action, IntentDraft, IntentResult, Missing, RebootPolicy
from core.inventory import Catalog, Inventory
from core.targets import Resolution, evaluate

# Characters with a meaning in an Ansible host pattern. None of them may ever reach AWX's `limit`.
LIMIT_FORBIDDEN = re.compile(r"[,:!&*?~\[\]@\s]")
SAFE_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
GLOB_CHARS = re.compile(r"[*?\[\]]")
# Group names that mean the whole fleet. A chat request never targets the whole fleet in one go: it is asked to
# name environments or roles instead (a human still approves, but a fleet-wide run is too easy to trigger by accident).
TOO_BROAD_NOTE = "That would be the whole fleet. Please name an environment, a role or the hosts."
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)


class UnsafeLimitError(ValueError):
    """Raised when a limit would contain anything but exact, plain inventory host names."""


def normalize_name(raw: str) -> str:
    """Fold width and case and drop invisible characters. Homoglyphs (Cyrillic 'е' for 'e') are NOT folded:
    they stay non-ASCII, match nothing, and come back as unknown names."""
    text = unicodedata.normalize("NFKC", raw).translate(_ZERO_WIDTH)
    return text.strip().strip(".,;:!?\"'()").lower()


def canonical_patch_group(raw: str | None, catalog: Catalog) -> str | None:
    """'group 2', 'grp 2', 'GROUP-2', 'g2', an alias from the patch-groups file -> the group's name. None when it
    fits no group or several."""
    if not raw or not raw.strip():
        return None
    if raw in catalog.patch_groups:
        return raw
    found = {m.value for m in catalog.vocabulary.lookup(normalize_name(raw)) if m.kind == "patch_group"}
    return found.pop() if len(found) == 1 else None


def resolve_host(raw: str, catalog: Catalog) -> str | None:
    """The one host a name means exactly (name, FQDN, case and separators ignored when that stays unique).
    Different digits ('web-1', 'web-001') are not the same name and are not resolved."""
    return catalog.vocabulary.host(normalize_name(raw)) if raw.strip() else None


def resolve_group(raw: str, catalog: Catalog) -> str | None:
    """The one inventory group a name or alias means, else None."""
    groups = catalog.vocabulary.groups(normalize_name(raw)) if raw.strip() else set()
    return groups.pop() if len(groups) == 1 else None


def validate_draft(draft: IntentDraft, catalog: Catalog) -> IntentResult:
    """What `draft` means against the fleet: exact hosts and a canonical patch group, or a clarification."""
    if draft.action in (Action.UNSUPPORTED, Action.LIST_JOBS):
        return IntentResult(action=draft.action, jobs=draft.jobs, message=draft.note or "")
    resolved = _Resolved.of(draft, catalog)
    if draft.action in (Action.STATUS, Action.CANCEL):
        return _job_lookup(resolved)
    if draft.action == Action.CLARIFY:
        return _clarification(resolved)
    return _run(resolved, catalog)


@dataclass(frozen=True)
class _Resolved:
    """A draft with its targets resolved and its patch group made canonical: what each step below reads."""

    draft: IntentDraft
    targets: Resolution
    hosts: frozenset[str]
    patch_group: str | None
    unknown_patch_group: bool  # named, but not known: missing, never replaced by a default
    described: str  # the target expression in words ("" when the draft names none)

    @classmethod
    def of(cls, draft: IntentDraft, catalog: Catalog) -> _Resolved:
        targets = evaluate(draft.targets, catalog.vocabulary, catalog.refused_hosts)
        patch_group = canonical_patch_group(draft.patch_group, catalog)
        return cls(
            draft=draft, targets=targets, hosts=frozenset(targets.hosts), patch_group=patch_group,
            unknown_patch_group=bool(draft.patch_group and draft.patch_group.strip()) and patch_group is None,
            described=draft.targets.describe() if not draft.targets.is_empty else "",
        )

    def clarify(self, missing: list[Missing], *, hosts: list[str] | None = None, message: str = "",
                refused_hosts: list[str] | None = None, names: bool = True) -> IntentResult:
        """A clarification of what the user was trying to do. `names`: with the unknown names and their
        suggestions (a clarification about the policy has nothing unknown to list)."""
        draft = self.draft
        return IntentResult(
            action=Action.CLARIFY, requested_action=draft.action, hosts=hosts or [], patch_group=self.patch_group,
            reboot=draft.reboot, check_mode=draft.check_mode, missing=missing, refused_hosts=refused_hosts or [],
            unknown_hosts=self.targets.unknown if names else [],
            suggestions=self.targets.suggestions if names else {}, targets=self.described, message=message,
        )


def _job_lookup(resolved: _Resolved) -> IntentResult:
    """status / cancel: a job by its number, or the hosts' latest."""
    draft, targets = resolved.draft, resolved.targets
    if targets.unknown or targets.ambiguous:
        return _clarify(resolved, resolved.patch_group, ["targets"])
    if draft.action == Action.CANCEL and ((not resolved.hosts and draft.job_id is None) or targets.too_broad):
        return _clarify(resolved, None, ["targets"], message="Which job should I cancel? Give its number or the host.",
                        names=False)
    return IntentResult(action=draft.action, hosts=sorted(resolved.hosts), job_id=draft.job_id,
                        message=draft.note or "", targets=resolved.described)


def _clarification(resolved: _Resolved) -> IntentResult:
    """A parser's own clarification: what it did resolve, and what is still missing."""
    draft, hosts, patch_group = resolved.draft, resolved.hosts, resolved.patch_group
    missing: list[Missing] = []
    if not hosts:
        missing.append("targets")
    if patch_group is None:
        missing.append("patch_group")
    return IntentResult(
        action=Action.CLARIFY, hosts=sorted(hosts), patch_group=patch_group, reboot=draft.reboot,
        check_mode=draft.check_mode, missing=missing, message=draft.note or _target_problem(resolved.targets) or "",
        unknown_hosts=resolved.targets.unknown, suggestions=resolved.targets.suggestions, targets=resolved.described,
    )


def _run(resolved: _Resolved, catalog: Catalog) -> IntentResult:
    """patch / precheck: complete, within the policy's host limit and reboot rule, or a clarification."""
    draft, targets, patch_group = resolved.draft, resolved.targets, resolved.patch_group
    refused = sorted(resolved.hosts & catalog.refused_hosts)
    named_refused = sorted(set(refused) & targets.named)
    hosts = sorted(resolved.hosts - set(refused))
    missing = _missing(resolved, bool(hosts), bool(named_refused))
    if missing:
        note = _target_problem(targets)
        if not note and (named_refused or targets.refused_only):
            note = _refusal_note(named_refused or targets.refused_only, catalog)
        return resolved.clarify(missing, hosts=[] if targets.too_broad else hosts,
                                refused_hosts=named_refused or refused, message=note or draft.note or "")
    policy = catalog.policy
    if len(hosts) > policy.max_hosts_per_request:
        return resolved.clarify(
            ["targets"], refused_hosts=refused, names=False,
            message=f"That is {len(hosts)} hosts; the policy allows at most {policy.max_hosts_per_request} in one "
                    "request. Please narrow it down (an environment, a role, or a list of hosts).",
        )
    reboot = draft.reboot or DEFAULT_REBOOT
    if reboot != RebootPolicy.NEVER and not policy.may_reboot(patch_group):
        if draft.reboot is not None:
            return resolved.clarify(
                [], hosts=hosts, refused_hosts=refused, names=False,
                message=f"The policy does not allow {patch_group} runs to reboot. Say 'no reboot' to go ahead.",
            )
        reboot = RebootPolicy.NEVER  # the default yields to the policy; an explicit request is asked about above
    return IntentResult(
        action=draft.action, hosts=hosts, patch_group=patch_group,
        reboot=reboot, check_mode=draft.check_mode or draft.action == Action.PRECHECK,
        refused_hosts=refused, message=draft.note or "", targets=resolved.described,
    )


def _missing(resolved: _Resolved, any_hosts: bool, named_refused: bool) -> list[Missing]:
    """What a run still lacks: usable targets (none left, a problem with a name, or only hosts kept out), and a
    patch group (a patch needs one; one that was named must be known)."""
    targets = resolved.targets
    missing: list[Missing] = []
    if not any_hosts or targets.problems or named_refused or targets.refused_only:
        missing.append("targets")
    if (resolved.draft.action == Action.PATCH and resolved.patch_group is None) or resolved.unknown_patch_group:
        missing.append("patch_group")
    return missing


def _refusal_note(names: list[str], catalog: Catalog) -> str:
    """Why these hosts are kept out, one clause per reason: disabled in AWX, or the policy."""
    by_reason: dict[str, list[str]] = {}
    for name in names:
        reason = catalog.refusal_reason(name) if name in catalog.inventory.hosts else None
        by_reason.setdefault(reason or "may not be patched from chat (policy)", []).append(name)
    clauses = [f"{', '.join(hosts)} {reason}" for reason, hosts in by_reason.items()]
    return "; ".join(clauses) + ". Please name other hosts."


def _target_problem(targets: Resolution) -> str:
    """Why the targets cannot be used as they are (unknown names are listed by the reply itself)."""
    if targets.too_broad:
        return TOO_BROAD_NOTE
    for raw in targets.ambiguous:
        return f"'{raw}' fits several: {', '.join(targets.suggestions.get(raw, []))}. Which one do you mean?"
    if targets.empty:
        return f"No host matches {'; '.join(targets.empty)}."
    return ""


def _clarify(resolved: _Resolved, patch_group: str | None, missing: list[Missing],
             message: str | None = None, *, names: bool = True) -> IntentResult:
    """A status or cancel that cannot be answered as asked. `names`: with the unknown names, their suggestions
    and the targets in words."""
    draft, targets = resolved.draft, resolved.targets
    return IntentResult(
        action=Action.CLARIFY, requested_action=draft.action, patch_group=patch_group, job_id=draft.job_id,
        missing=missing, message=message or _target_problem(targets) or draft.note or "",
        unknown_hosts=targets.unknown if names else [], suggestions=targets.suggestions if names else {},
        targets=resolved.described if names else "",
    )


def build_limit(hosts: list[str], inventory: Inventory) -> str:
    """The AWX `limit` for exact inventory hosts. Raises instead of ever producing a pattern."""
    if not hosts:
        raise UnsafeLimitError("refusing an empty limit: AWX would run on the whole inventory")
    for host in hosts:
        if host not in inventory.hosts:
            raise UnsafeLimitError(f"{host!r} is not an inventory host")
        if LIMIT_FORBIDDEN.search(host) or not SAFE_HOST_NAME.match(host) or host.lower() == "all":
            raise UnsafeLimitError(f"{host!r} contains host-pattern characters")
    return ",".join(sorted(set(hosts)))
