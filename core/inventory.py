"""The fleet (an Ansible YAML inventory), the patch groups and the policy, loaded once and queried by the
parser and the validator.

A `Catalog` is pure data: its three sources are read once, when it is loaded. They are the inventory, patch-group
and policy files (INVENTORY_FILE, PATCH_GROUPS_FILE, POLICY_FILE), or, with INVENTORY_SOURCE=awx, the newest
inventory snapshot synced from AWX with the same patch-group and policy files (`core.inventory_sync`). What people
may call each thing is derived from this data in `core.vocabulary` (`Catalog.vocabulary`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import yaml

from core.policy import Policy, load_policy
from core.vocabulary import Vocabulary

# Where hosts that belong to no environment are listed (a heading, never an environment's name).
NO_ENVIRONMENT = "other"


@dataclass(frozen=True)
class Host:
    name: str
    groups: frozenset[str]
    vars: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    enabled: bool = True  # AWX's host `enabled`: a disabled host is never proposed

    @property
    def os_family(self) -> str | None:
        return self.vars.get("os_family")

    @property
    def patchable_from_chat(self) -> bool:
        return bool(self.vars.get("patch_from_chat", True))


@dataclass(frozen=True)
class Inventory:
    hosts: dict[str, Host]
    groups: dict[str, frozenset[str]]  # group -> all host names below it (children expanded)

    def host_names(self) -> list[str]:
        return sorted(self.hosts)

    def group_hosts(self, group: str) -> frozenset[str]:
        return self.groups.get(group, frozenset())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inventory:
        host_vars: dict[str, dict[str, Any]] = {}
        direct: dict[str, set[str]] = {}
        children: dict[str, set[str]] = {}

        def walk(group: str, body: dict[str, Any] | None) -> None:
            body = body or {}
            direct.setdefault(group, set())
            children.setdefault(group, set())
            for host, hvars in (body.get("hosts") or {}).items():
                direct[group].add(str(host))
                merged = host_vars.setdefault(str(host), {})
                merged.update(hvars or {})
            for child, child_body in (body.get("children") or {}).items():
                children[group].add(child)
                walk(child, child_body)

        for top, body in (data or {}).items():
            walk(top, body)

        def expand(group: str, seen: frozenset[str] = frozenset()) -> set[str]:
            if group in seen:
                return set()
            found = set(direct.get(group, set()))
            for child in children.get(group, set()):
                found |= expand(child, seen | {group})
            return found

        groups = {g: frozenset(expand(g)) for g in direct}
        membership: dict[str, set[str]] = {h: set() for h in host_vars}
        for group, members in groups.items():
            if group in ("all", "ungrouped"):
                continue
            for h in members:
                membership[h].add(group)
        hosts = {h: Host(name=h, groups=frozenset(membership[h]), vars=host_vars[h]) for h in host_vars}
        return cls(hosts=hosts, groups=groups)

    @classmethod
    def load(cls, path: Path) -> Inventory:
        # libyaml's loader when PyYAML has it: a 10,000-host inventory loads several times faster
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return cls.from_dict(yaml.load(Path(path).read_text(), Loader=loader))


@dataclass(frozen=True)
class PatchGroup:
    name: str
    description: str
    job_template: str
    extra_vars: dict[str, Any]
    aliases: tuple[str, ...] = ()  # what people call it besides its name ("monthly", "security only")
    organization: str | None = None  # the job template's AWX organization (names are unique per organization)


def load_patch_groups(path: Path) -> dict[str, PatchGroup]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    return {
        name: PatchGroup(
            name=name,
            description=str(body.get("description", "")),
            job_template=str(body["job_template"]),
            extra_vars=dict(body.get("extra_vars") or {}),
            aliases=tuple(str(a) for a in body.get("aliases") or ()),
            organization=str(body["organization"]) if body.get("organization") else None,
        )
        for name, body in data.items()
    }


@dataclass(frozen=True)
class Catalog:
    """Everything the parser and the validator check against."""

    inventory: Inventory
    patch_groups: dict[str, PatchGroup]
    policy: Policy = field(default_factory=Policy)
    snapshot_id: int | None = None  # INVENTORY_SOURCE=awx: the inventory snapshot this catalog serves

    @cached_property
    def vocabulary(self) -> Vocabulary:
        return Vocabulary.build(self)

    @cached_property
    def refused_hosts(self) -> frozenset[str]:
        """Every host kept out of chat (computed once: the validator asks on every turn)."""
        return frozenset(h for h in self.inventory.hosts if self.is_refused(h))

    def environment_of(self, host: str) -> str | None:
        return self.vocabulary.environment_of(host)

    def environment_or_other(self, host: str) -> str:
        """The host's environment, or NO_ENVIRONMENT where hosts the inventory gives none are listed."""
        return self.environment_of(host) or NO_ENVIRONMENT

    def is_refused(self, host: str) -> bool:
        """Kept out of chat by the inventory (patch_from_chat: false, or disabled in AWX) or by the policy file."""
        known = self.inventory.hosts.get(host)
        return (known is None or not known.patchable_from_chat or not known.enabled
                or host in self.policy.never_patch_hosts)

    def refusal_reason(self, host: str) -> str | None:
        """Why a host is kept out of chat, in words (None: it is not)."""
        known = self.inventory.hosts.get(host)
        if known is None:
            return "is not in the inventory"
        if not known.enabled:
            return "is disabled in AWX (enabled: false)"
        if not known.patchable_from_chat or host in self.policy.never_patch_hosts:
            return "may not be patched from chat (policy)"
        return None

    def is_production(self, host: str) -> bool:
        return host in self.inventory.hosts and self.environment_of(host) in self.policy.production()


@lru_cache(maxsize=4)
def load_catalog(inventory_file: Path, patch_groups_file: Path, policy_file: Path | None = None) -> Catalog:
    inventory = Inventory.load(inventory_file)
    patch_groups = load_patch_groups(patch_groups_file)
    policy = load_policy(policy_file, known_hosts=set(inventory.hosts), known_groups=set(patch_groups),
                         inventory_groups=set(inventory.groups))
    return Catalog(inventory=inventory, patch_groups=patch_groups, policy=policy)


def get_catalog() -> Catalog:
    from core.settings import get_settings

    s = get_settings()
    if s.inventory_source == "awx":
        from core.inventory_sync import current_catalog

        return current_catalog()  # the latest good snapshot synced from AWX, one Catalog per snapshot
    policy_file = Path(s.policy_file) if s.policy_file else None
    return load_catalog(Path(s.inventory_file), Path(s.patch_groups_file), policy_file)


def check_catalog() -> Catalog | None:
    """Load the inventory, patch groups and policy at start-up; exit with a readable reason if one is broken.
    None: the inventory comes from AWX and no snapshot has been synced yet."""
    from core.policy import PolicyError
    from core.settings import get_settings
    from core.stage_map import StageMapError, get_stage_map

    s = get_settings()

    try:
        get_stage_map()
    except StageMapError as exc:
        raise SystemExit(f"patchpilot cannot start: {exc} [STAGE_MAP_FILE={s.stage_map_file}]") from None
    if s.inventory_source == "awx":
        from core.inventory_sync import check_awx_catalog

        return check_awx_catalog()  # patch groups and policy files now; the inventory comes with the first sync
    # Which files were read, by the setting that names them: the operator knows at once what to change.
    files = (f"POLICY_FILE={s.policy_file}, INVENTORY_FILE={s.inventory_file}, "
             f"PATCH_GROUPS_FILE={s.patch_groups_file}")
    try:
        return get_catalog()
    except PolicyError as exc:
        raise SystemExit(f"patchpilot cannot start: {exc} [{files}]") from None
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise SystemExit(f"patchpilot cannot start: the inventory or patch-group file is unusable: {exc} "
                         f"[{files}]") from None
