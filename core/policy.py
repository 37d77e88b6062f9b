"""The patching policy: a YAML file (POLICY_FILE), validated at start-up.

What may be patched from chat, how many hosts at once, who may approve what, and when changes may run. The
pure parts (hosts, sizes, reboots) are applied by the validator; the time-dependent parts (change freezes and
maintenance windows) at approval, with the clock passed in.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PolicyError(ValueError):
    """The policy file is missing, unreadable or invalid: the service refuses to start with this message."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MaintenanceWindow(_Strict):
    name: str
    days: list[Weekday] = Field(min_length=1)
    start: time
    end: time  # may be earlier than start: the window then runs past midnight
    timezone: str = "UTC"
    environments: list[str] = Field(default_factory=list, description="Empty: every environment.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    def covers(self, environments: set[str]) -> bool:
        return not self.environments or bool(environments & set(self.environments))

    def open_at(self, moment: datetime) -> bool:
        local = moment.astimezone(ZoneInfo(self.timezone))
        day, now = WEEKDAYS[local.weekday()], local.time()
        if self.start <= self.end:
            return day in self.days and self.start <= now < self.end
        previous_day = WEEKDAYS[(local.weekday() - 1) % 7]
        return (day in self.days and now >= self.start) or (previous_day in self.days and now < self.end)

    def next_opening(self, after: datetime) -> datetime:
        tz = ZoneInfo(self.timezone)
        local = after.astimezone(tz)
        for offset in range(0, 8):
            day = local.date() + timedelta(days=offset)
            if WEEKDAYS[day.weekday()] in self.days:
                opening = datetime.combine(day, self.start, tzinfo=tz)
                if opening > after:
                    return opening.astimezone(UTC)
        raise AssertionError("a window with at least one day opens within 8 days")


class ChangeFreeze(_Strict):
    name: str
    start: datetime
    end: datetime
    environments: list[str] = Field(default_factory=list, description="Empty: every environment.")

    @model_validator(mode="after")
    def _ordered(self) -> ChangeFreeze:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("freeze start and end need a time zone, e.g. 2026-12-20T00:00:00Z")
        if self.end <= self.start:
            raise ValueError(f"freeze {self.name!r} ends before it starts")
        return self

    def covers(self, environments: set[str]) -> bool:
        return not self.environments or bool(environments & set(self.environments))


class Environment(_Strict):
    production: bool = False
    aliases: list[str] = Field(default_factory=list, description="What people call it besides the group name.")


DEFAULT_FILTER_VARIABLES = ["os_family", "os_version", "os", "distribution", "site", "location", "datacenter",
                            "owner", "team"]


class Policy(_Strict):
    version: Literal[1] = 1
    never_patch_hosts: list[str] = Field(default_factory=list, description="Never patched from chat.")
    max_hosts_per_request: int = Field(default=25, ge=1, le=10000)
    # Inventory groups that are environments, their other names, and which are production (four-eyes). Empty:
    # groups named like an environment in some language are environments, production_environments production.
    environments: dict[str, Environment] = Field(default_factory=dict)
    production_environments: list[str] = Field(default_factory=list, description="Used when environments is empty.")
    # Host variables a request may filter on ("the Debian ones", "owner payments").
    filter_variables: list[str] = Field(default_factory=lambda: list(DEFAULT_FILTER_VARIABLES))
    allow_self_approval_non_production: bool = True
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list, description="Empty: any time.")
    change_freezes: list[ChangeFreeze] = Field(default_factory=list)
    reboot_allowed: dict[str, bool] = Field(default_factory=dict,
                                            description="Patch group -> may reboot (default yes).")

    def production(self) -> set[str]:
        """The production environments: the one definition four-eyes and the parser share."""
        if self.environments:
            return {name for name, env in self.environments.items() if env.production}
        return set(self.production_environments)

    def may_reboot(self, patch_group: str | None) -> bool:
        return self.reboot_allowed.get(patch_group or "", True)

    def when_refused(self, environments: set[str], now: datetime) -> str | None:
        """Why a run touching these environments may not start now (None: it may)."""
        for freeze in self.change_freezes:
            if freeze.covers(environments) and freeze.start <= now < freeze.end:
                return (f"change freeze '{freeze.name}' is in force until "
                        f"{freeze.end.astimezone(UTC):%Y-%m-%d %H:%M} UTC")
        windows = [w for w in self.maintenance_windows if w.covers(environments)]
        if windows and not any(w.open_at(now) for w in windows):
            nxt = min(windows, key=lambda w: w.next_opening(now))
            return (f"outside the maintenance window; the next one is '{nxt.name}' at "
                    f"{nxt.next_opening(now):%Y-%m-%d %H:%M} UTC")
        return None


def load_policy(path: Path | None, known_hosts: set[str] | None = None, known_groups: set[str] | None = None,
                inventory_groups: set[str] | None = None) -> Policy:
    if path is None:
        return Policy()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise PolicyError(f"cannot read the policy file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"the policy file {path} is not valid YAML: {exc}") from exc
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise PolicyError(f"the policy file {path} is invalid: {problems}") from exc
    if known_hosts is not None:
        unknown = sorted(set(policy.never_patch_hosts) - known_hosts)
        if unknown:
            raise PolicyError(f"the policy file {path} names hosts that are not in the inventory: {', '.join(unknown)} "
                              f"(key 'never_patch_hosts': remove them there, or use the inventory that has them)")
    if inventory_groups is not None:
        unknown = sorted((set(policy.environments) | set(policy.production_environments)) - inventory_groups)
        if unknown:
            keys = [k for k, names in (("environments", policy.environments),
                                        ("production_environments", policy.production_environments))
                    if set(names) & set(unknown)]
            raise PolicyError(f"the policy file {path} names environments that are not inventory groups: "
                              f"{', '.join(unknown)} (key {' and '.join(repr(k) for k in keys)}: name groups of the "
                              f"inventory there)")
    if known_groups is not None:
        unknown = sorted(set(policy.reboot_allowed) - known_groups)
        if unknown:
            raise PolicyError(f"the policy file {path} names unknown patch groups: {', '.join(unknown)} "
                              f"(key 'reboot_allowed': name patch groups of the patch-group file there)")
    return policy
