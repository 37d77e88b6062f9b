"""Pure validation of parser output against the inventory and patch groups. No I/O, no clock, no randomness.

Fail closed: a name that does not resolve exactly is never guessed, it becomes a clarification that names it
(with "did you mean" suggestions). The AWX `limit` is built here too, and only from exact inventory names.
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata

from rapidfuzz import fuzz, process

from core.intent import DEFAULT_REBOOT, IntentDraft, IntentResult
from core.inventory import Catalog, Inventory

# Spellings people use for the demo fleet's groups. Canonical group names always work as they are.
GROUP_ALIASES: dict[str, str] = {
    "production": "prod", "prd": "prod", "live": "prod",
    "stage": "staging", "stg": "staging", "preprod": "staging", "pre-prod": "staging", "uat": "staging",
    "development": "dev", "develop": "dev",
    "webserver": "web", "webservers": "web", "websrv": "web", "frontend": "web", "frontends": "web",
    "application": "app", "applications": "app", "apps": "app", "appserver": "app", "appservers": "app",
    "database": "db", "databases": "db", "dbs": "db", "dbserver": "db", "dbservers": "db",
    "caches": "cache", "redis": "cache",
    "loadbalancer": "lb", "loadbalancers": "lb", "lbs": "lb", "balancer": "lb", "balancers": "lb",
    "bastions": "bastion", "jump": "bastion", "jumphost": "bastion", "jumphosts": "bastion",
    "everything": "all", "allhosts": "all", "allservers": "all", "fleet": "all",
}

# Characters with a meaning in an Ansible host pattern. None of them may ever reach AWX's `limit`.
LIMIT_FORBIDDEN = re.compile(r"[,:!&*?~\[\]@\s]")
SAFE_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
GLOB_CHARS = re.compile(r"[*?\[\]]")
# What a name from a parser may look like: letters, digits, '.', '_', '-', spaces (group phrases) and the two
# glob wildcards. Anything else ('!all', 'a:&b', '~regex', '@file', 'web*,db*', '[1-4]') is Ansible pattern syntax
# and is reported as an unknown name instead of being interpreted.
SAFE_NAME_INPUT = re.compile(r"^[A-Za-z0-9._* ?-]+$")
# Group names that mean the whole fleet. A chat request never targets the whole fleet in one go: it is asked to
# name environments or roles instead (a human still approves, but a fleet-wide run is too easy to trigger by accident).
WHOLE_FLEET = "all"
TOO_BROAD_NOTE = "That would be the whole fleet. Please name an environment, a role or the hosts."
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)


class UnsafeLimitError(ValueError):
    """Raised when a limit would contain anything but exact, plain inventory host names."""


def normalize_name(raw: str) -> str:
    """Fold width and case and drop invisible characters. Homoglyphs (Cyrillic 'е' for 'e') are NOT folded:
    they stay non-ASCII, match nothing, and come back as unknown names."""
    text = unicodedata.normalize("NFKC", raw).translate(_ZERO_WIDTH)
    return text.strip().strip(".,;:!?\"'()").lower()


def canonical_patch_group(raw: str | None, names: list[str]) -> str | None:
    """'group 2', 'grp 2', 'GROUP-2', 'g2', 'Group-2' -> 'Group-2'. None when it matches no known group."""
    if not raw:
        return None
    key = re.sub(r"[^a-z0-9]", "", normalize_name(raw))
    words = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
    for word, digit in words.items():
        key = key.replace(word, digit)
    for prefix in ("patchgroup", "group", "grp", "gr", "pg", "g"):
        if key.startswith(prefix) and key[len(prefix):].isdigit():
            key = key[len(prefix):]
            break
    for name in names:
        name_key = re.sub(r"[^a-z0-9]", "", name.lower())
        if key == name_key or (key.isdigit() and name_key.endswith(key) and re.sub(r"\d+$", "", name_key) + key == name_key):
            return name
    return None


def is_safe_name(raw: str) -> bool:
    """True when `raw` contains no host-pattern syntax (checked before any punctuation is stripped)."""
    text = unicodedata.normalize("NFKC", raw).translate(_ZERO_WIDTH).strip()
    return bool(text) and SAFE_NAME_INPUT.match(text) is not None


def _separator_key(name: str) -> str:
    return re.sub(r"[-_.\s]", "", name.lower())


def resolve_host(raw: str, inventory: Inventory) -> str | None:
    """Exact host name, ignoring case and separators ('WEB01' -> 'web-01') when exactly one host matches.
    Different digits ('web-1', 'web-001') are not the same name and are not resolved."""
    name = normalize_name(raw)
    by_lower = {h.lower(): h for h in inventory.hosts}
    if name in by_lower:
        return by_lower[name]
    key = _separator_key(name)
    matches = [h for h in inventory.hosts if _separator_key(h) == key]
    return matches[0] if len(matches) == 1 else None


def resolve_group(raw: str, inventory: Inventory) -> str | None:
    name = normalize_name(raw).replace(" ", "")
    if name in inventory.groups:
        return name
    alias = GROUP_ALIASES.get(name)
    if alias and alias in inventory.groups:
        return alias
    # "prod-web" / "prod web" -> prod_web
    underscored = re.sub(r"[-\s]+", "_", normalize_name(raw))
    if underscored in inventory.groups:
        return underscored
    return None


def suggest_hosts(name: str, inventory: Inventory, limit: int = 3) -> list[str]:
    matches = process.extract(name, inventory.host_names(), scorer=fuzz.ratio, limit=limit, score_cutoff=60)
    return [m[0] for m in matches]


class Targets:
    """What the target fields of a draft resolve to."""

    def __init__(self) -> None:
        self.hosts: set[str] = set()
        self.explicit: set[str] = set()  # hosts named one by one (not via a group or glob)
        self.unknown: list[str] = []
        self.suggestions: dict[str, list[str]] = {}
        self.too_broad = False  # asked for the whole fleet

    def add_unknown(self, raw: str, inventory: Inventory) -> None:
        name = raw.strip()
        if name not in self.unknown:
            self.unknown.append(name)
        hint = suggest_hosts(normalize_name(raw), inventory) if is_safe_name(raw) and raw.isascii() else []
        if hint:
            self.suggestions[name] = hint


def _glob_matches(raw: str, inventory: Inventory) -> set[str]:
    # Not normalize_name: it strips a trailing '?', which is part of the glob here.
    pattern = unicodedata.normalize("NFKC", raw).translate(_ZERO_WIDTH).strip().lower()
    return {h for h in inventory.hosts if fnmatch.fnmatchcase(h.lower(), pattern)}


def _is_glob(name: str) -> bool:
    return bool(GLOB_CHARS.search(name))


def resolve_targets(draft: IntentDraft, inventory: Inventory) -> Targets:
    """The hosts a draft's target fields name (before policy), plus what could not be resolved."""
    targets = Targets()
    every_host = set(inventory.hosts)

    within_sets: list[frozenset[str]] = []
    for raw in draft.within:
        group = resolve_group(raw, inventory) if is_safe_name(raw) else None
        if group is None:
            targets.add_unknown(raw, inventory)
        elif group != WHOLE_FLEET:  # "all prod servers": 'all' narrows nothing
            within_sets.append(inventory.group_hosts(group))

    def narrow(hosts: set[str]) -> set[str]:
        for allowed in within_sets:
            hosts &= allowed
        return hosts

    def add_group(raw: str) -> None:
        group = resolve_group(raw, inventory)
        if group == WHOLE_FLEET:
            targets.too_broad = True
        elif group is not None:
            targets.hosts |= narrow(set(inventory.group_hosts(group)))
        else:
            targets.add_unknown(raw, inventory)

    for raw in draft.hosts:
        if not raw.strip():
            continue
        if not is_safe_name(raw):
            targets.add_unknown(raw, inventory)
            continue
        name = normalize_name(raw)
        host = resolve_host(raw, inventory)
        if host:
            targets.hosts.add(host)
            targets.explicit.add(host)
        elif _is_glob(raw):
            matched = _glob_matches(raw, inventory)
            if not re.search(r"[a-z0-9]", name) or matched == every_host:
                targets.too_broad = True
            elif narrow(matched):
                targets.hosts |= narrow(matched)
            else:
                targets.add_unknown(raw, inventory)
        elif resolve_group(raw, inventory):
            # A parser may put a group where a host belongs; accept it as the group it names.
            add_group(raw)
        else:
            targets.add_unknown(raw, inventory)

    groups = list(draft.groups)
    if not groups and within_sets and not draft.hosts:
        # "patch prod with Group-1": the environment alone is the target.
        groups = [g for g in draft.within if resolve_group(g, inventory) not in (None, WHOLE_FLEET)]
    for raw in groups:
        if is_safe_name(raw):
            add_group(raw)
        else:
            targets.add_unknown(raw, inventory)

    for raw in draft.exclude_hosts:
        # An exclusion that does not resolve is reported, not skipped: skipping it would patch a host the user
        # meant to leave out (a typo in "except stg-web-1").
        host = resolve_host(raw, inventory) if is_safe_name(raw) else None
        group = resolve_group(raw, inventory) if is_safe_name(raw) else None
        if host:
            targets.hosts.discard(host)
        elif is_safe_name(raw) and _is_glob(raw) and _glob_matches(raw, inventory):
            targets.hosts -= _glob_matches(raw, inventory)
        elif group not in (None, WHOLE_FLEET):
            targets.hosts -= set(inventory.group_hosts(group))
        else:
            targets.add_unknown(raw, inventory)
    return targets


def validate_draft(draft: IntentDraft, catalog: Catalog) -> IntentResult:
    inventory = catalog.inventory

    if draft.action in ("unsupported", "list_jobs"):
        return IntentResult(action=draft.action, message=draft.note or "")

    targets = resolve_targets(draft, inventory)
    hosts, unknown, suggestions = targets.hosts, targets.unknown, targets.suggestions
    refused = sorted(h for h in hosts if catalog.is_refused(h))
    patch_group = canonical_patch_group(draft.patch_group, list(catalog.patch_groups))
    # A patch group that was named but is not known counts as missing: it is never replaced by a default.
    unknown_patch_group = bool(draft.patch_group and draft.patch_group.strip()) and patch_group is None

    if draft.action in ("status", "cancel"):
        if unknown:
            return _clarify(draft, [], unknown, suggestions, [], patch_group, "targets")
        if draft.action == "cancel" and ((not hosts and draft.job_id is None) or targets.too_broad):
            return _clarify(draft, [], [], {}, [], None, "targets", note="Which job should I cancel? Give its number or the host.")
        return IntentResult(action=draft.action, hosts=sorted(hosts), job_id=draft.job_id, message=draft.note or "")

    if draft.action == "clarify":
        missing = []
        if not hosts:
            missing.append("targets")
        if patch_group is None:
            missing.append("patch_group")
        return IntentResult(
            action="clarify", hosts=sorted(hosts), patch_group=patch_group, reboot=draft.reboot,
            check_mode=draft.check_mode, missing=missing, unknown_hosts=unknown, suggestions=suggestions,
            message=draft.note or (TOO_BROAD_NOTE if targets.too_broad else ""),
        )

    # patch / precheck
    explicit_refused = sorted(set(refused) & targets.explicit)
    hosts -= set(refused)
    missing: list[str] = []
    if not hosts or unknown or explicit_refused or targets.too_broad:
        missing.append("targets")
    if (draft.action == "patch" and patch_group is None) or unknown_patch_group:
        missing.append("patch_group")
    if missing:
        if unknown:
            note = ""
        elif targets.too_broad:
            note = TOO_BROAD_NOTE
        elif explicit_refused:
            note = f"{', '.join(explicit_refused)} may not be patched from chat (policy). Please name other hosts."
        else:
            note = draft.note or ""
        return IntentResult(
            action="clarify", requested_action=draft.action, hosts=[] if targets.too_broad else sorted(hosts),
            patch_group=patch_group, reboot=draft.reboot, check_mode=draft.check_mode, missing=missing,
            unknown_hosts=unknown, suggestions=suggestions, refused_hosts=explicit_refused or refused, message=note,
        )
    policy = catalog.policy
    if len(hosts) > policy.max_hosts_per_request:
        return IntentResult(
            action="clarify", requested_action=draft.action, patch_group=patch_group, reboot=draft.reboot,
            check_mode=draft.check_mode, missing=["targets"], refused_hosts=refused,
            message=f"That is {len(hosts)} hosts; the policy allows at most {policy.max_hosts_per_request} in one "
                    "request. Please narrow it down (an environment, a role, or a list of hosts).",
        )
    reboot = draft.reboot or DEFAULT_REBOOT
    if reboot != "never" and not policy.may_reboot(patch_group):
        if draft.reboot is not None:
            return IntentResult(
                action="clarify", requested_action=draft.action, hosts=sorted(hosts), patch_group=patch_group,
                reboot=draft.reboot, check_mode=draft.check_mode, missing=[], refused_hosts=refused,
                message=f"The policy does not allow {patch_group} runs to reboot. Say 'no reboot' to go ahead.",
            )
        reboot = "never"  # the default yields to the policy; an explicit request is asked about above
    return IntentResult(
        action=draft.action, hosts=sorted(hosts), patch_group=patch_group,
        reboot=reboot, check_mode=draft.check_mode or draft.action == "precheck",
        refused_hosts=refused, message=draft.note or "",
    )


def _clarify(draft, hosts, unknown, suggestions, refused, patch_group, *missing, note=None) -> IntentResult:
    return IntentResult(
        action="clarify", requested_action=draft.action, hosts=sorted(hosts), patch_group=patch_group,
        job_id=draft.job_id, missing=list(missing), unknown_hosts=unknown, suggestions=suggestions,
        refused_hosts=refused, message=note or draft.note or "",
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
