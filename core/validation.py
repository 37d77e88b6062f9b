"""Pure validation of parser output against the inventory and patch groups. No I/O, no clock, no randomness.

Fail closed: a name that does not resolve exactly is never guessed, it becomes a clarification that names it
(with "did you mean" suggestions). The AWX `limit` is built here too, and only from exact inventory names.
"""

from __future__ import annotations

import re
import unicodedata

from core.intent import DEFAULT_REBOOT, IntentDraft, IntentResult
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
    if draft.action in ("unsupported", "list_jobs"):
        return IntentResult(action=draft.action, jobs=draft.jobs, message=draft.note or "")

    refused_all = catalog.refused_hosts
    targets = evaluate(draft.targets, catalog.vocabulary, refused_all)
    hosts = set(targets.hosts)
    patch_group = canonical_patch_group(draft.patch_group, catalog)
    # A patch group that was named but is not known counts as missing: it is never replaced by a default.
    unknown_patch_group = bool(draft.patch_group and draft.patch_group.strip()) and patch_group is None
    common = {"unknown_hosts": targets.unknown, "suggestions": targets.suggestions,
              "targets": draft.targets.describe() if not draft.targets.is_empty else ""}

    if draft.action in ("status", "cancel"):
        if targets.unknown or targets.ambiguous:
            return _clarify(draft, targets, patch_group, ["targets"], **common)
        if draft.action == "cancel" and ((not hosts and draft.job_id is None) or targets.too_broad):
            return _clarify(draft, targets, None, ["targets"], message="Which job should I cancel? Give its number or the host.")
        return IntentResult(action=draft.action, hosts=sorted(hosts), job_id=draft.job_id, message=draft.note or "",
                            targets=common["targets"])

    if draft.action == "clarify":
        missing = [m for m, absent in (("targets", not hosts), ("patch_group", patch_group is None)) if absent]
        return IntentResult(
            action="clarify", hosts=sorted(hosts), patch_group=patch_group, reboot=draft.reboot,
            check_mode=draft.check_mode, missing=missing, message=draft.note or _target_problem(targets) or "",
            **common,
        )

    # patch / precheck
    refused = sorted(hosts & refused_all)
    named_refused = sorted(set(refused) & targets.named)
    hosts -= set(refused)
    missing: list[str] = []
    if not hosts or targets.problems or named_refused or targets.refused_only:
        missing.append("targets")
    if (draft.action == "patch" and patch_group is None) or unknown_patch_group:
        missing.append("patch_group")
    if missing:
        note = _target_problem(targets)
        if not note and (named_refused or targets.refused_only):
            note = _refusal_note(named_refused or targets.refused_only, catalog)
        return IntentResult(
            action="clarify", requested_action=draft.action, hosts=[] if targets.too_broad else sorted(hosts),
            patch_group=patch_group, reboot=draft.reboot, check_mode=draft.check_mode, missing=missing,
            refused_hosts=named_refused or refused, message=note or draft.note or "", **common,
        )
    policy = catalog.policy
    if len(hosts) > policy.max_hosts_per_request:
        return IntentResult(
            action="clarify", requested_action=draft.action, patch_group=patch_group, reboot=draft.reboot,
            check_mode=draft.check_mode, missing=["targets"], refused_hosts=refused, targets=common["targets"],
            message=f"That is {len(hosts)} hosts; the policy allows at most {policy.max_hosts_per_request} in one "
                    "request. Please narrow it down (an environment, a role, or a list of hosts).",
        )
    reboot = draft.reboot or DEFAULT_REBOOT
    if reboot != "never" and not policy.may_reboot(patch_group):
        if draft.reboot is not None:
            return IntentResult(
                action="clarify", requested_action=draft.action, hosts=sorted(hosts), patch_group=patch_group,
                reboot=draft.reboot, check_mode=draft.check_mode, missing=[], refused_hosts=refused,
                targets=common["targets"],
                message=f"The policy does not allow {patch_group} runs to reboot. Say 'no reboot' to go ahead.",
            )
        reboot = "never"  # the default yields to the policy; an explicit request is asked about above
    return IntentResult(
        action=draft.action, hosts=sorted(hosts), patch_group=patch_group,
        reboot=reboot, check_mode=draft.check_mode or draft.action == "precheck",
        refused_hosts=refused, message=draft.note or "", targets=common["targets"],
    )


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


def _clarify(draft: IntentDraft, resolution: Resolution, patch_group: str | None, missing: list[str],
             message: str | None = None, **extra) -> IntentResult:
    return IntentResult(
        action="clarify", requested_action=draft.action, patch_group=patch_group, job_id=draft.job_id,
        missing=missing, message=message or _target_problem(resolution) or draft.note or "", **extra,
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
