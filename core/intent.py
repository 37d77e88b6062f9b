"""The patch intent schema.

Two stages, on purpose:
- `IntentDraft` is what a parser proposes (the rules parser or the LLM). It is untrusted: names are as the user
  (or the model) wrote them.
- `IntentResult` is what the pure validator (`core.validation.validate_draft`) makes of a draft against the
  inventory and patch groups: exact host names, a canonical patch group, or a clarification saying what is
  missing or unknown. Only a complete `patch`/`precheck` result can become a proposal.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.targets import TargetExpr, from_fields


class Action(StrEnum):
    """What a message asks for."""

    PATCH = "patch"
    PRECHECK = "precheck"
    STATUS = "status"
    CANCEL = "cancel"
    LIST_JOBS = "list_jobs"
    CLARIFY = "clarify"
    UNSUPPORTED = "unsupported"


ACTIONS: tuple[Action, ...] = tuple(Action)
RUNS = frozenset({Action.PATCH, Action.PRECHECK})  # the actions that become a proposal and an AWX job
DRAFTING = frozenset({*RUNS, Action.CLARIFY})  # the actions that leave an open draft the next message may amend


# What each action is called where a person reads it.
ACTION_LABELS = {
    Action.PATCH: "Patch", Action.PRECHECK: "Pre-checks", Action.STATUS: "Job status", Action.CANCEL: "Cancel",
    Action.LIST_JOBS: "List jobs", Action.CLARIFY: "Clarify", Action.UNSUPPORTED: "Unsupported",
}


# Whether a run may reboot its hosts. (No docstring: it would become a description in the tool schemas the model
# is shown.)
class RebootPolicy(StrEnum):
    NEVER = "never"
    IF_NEEDED = "if_needed"
    ALWAYS = "always"


REBOOT_POLICIES: tuple[RebootPolicy, ...] = tuple(RebootPolicy)
# A reboot policy in words, as replies and the UI say it.
REBOOT_LABELS = {RebootPolicy.NEVER: "no reboot", RebootPolicy.IF_NEEDED: "reboot only if needed",
                 RebootPolicy.ALWAYS: "always reboot"}


JobsShown = Literal["active", "failed", "finished"]  # list_jobs: which requests (None: the recent ones, any state)
# The order a message is read for them: "which active jobs failed" asks for the failed ones.
JOBS_SHOWN_READ_ORDER: tuple[JobsShown, ...] = ("failed", "active", "finished")
Missing = Literal["targets", "patch_group"]

DEFAULT_REBOOT = RebootPolicy.IF_NEEDED


_FLAT_TARGET_KEYS = ("hosts", "groups", "within", "exclude_hosts")


class IntentDraft(BaseModel):
    """A parser's proposal. `targets` is a set expression (`core.targets`): names as written, resolved only by
    the validator. The flat keys `hosts`, `groups`, `within`, `exclude_hosts` are accepted as a shorthand
    (hosts UNION groups, group and glob matches narrowed to `within`, minus `exclude_hosts`)."""

    model_config = ConfigDict(extra="forbid")

    action: Action
    targets: TargetExpr = Field(default_factory=TargetExpr)
    patch_group: str | None = Field(default=None, max_length=100)
    reboot: RebootPolicy | None = None
    check_mode: bool = False
    job_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    jobs: JobsShown | None = None
    # Why the parser chose clarify/unsupported, for the reply. Never used as a command.
    note: str | None = Field(default=None, max_length=500)

    @model_validator(mode="before")
    @classmethod
    def _flat_targets(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(k in data for k in _FLAT_TARGET_KEYS):
            data = dict(data)
            flat = from_fields(*(list(data.pop(k, None) or []) for k in _FLAT_TARGET_KEYS))
            given = TargetExpr.model_validate(data.get("targets") or {})
            data["targets"] = TargetExpr(include=[*given.include, *flat.include],
                                         exclude=[*given.exclude, *flat.exclude])
        return data


class IntentResult(BaseModel):
    """A validated intent. For `patch`/`precheck` the hosts are exact inventory names and the patch group is
    canonical; anything that could not be resolved turned the action into `clarify`."""

    action: Action
    requested_action: Action | None = None  # for clarify: what the user was trying to do
    hosts: list[str] = Field(default_factory=list)
    patch_group: str | None = None
    reboot: RebootPolicy | None = None
    check_mode: bool = False
    job_id: int | None = None
    jobs: JobsShown | None = None
    missing: list[Missing] = Field(default_factory=list)
    unknown_hosts: list[str] = Field(default_factory=list)
    suggestions: dict[str, list[str]] = Field(default_factory=dict)  # unknown name -> did you mean
    refused_hosts: list[str] = Field(default_factory=list)  # known hosts that policy keeps out of chat
    targets: str = ""  # the target expression in words ("prod ∩ Debian, except lb-01")
    message: str = ""

    @property
    def is_proposable(self) -> bool:
        # A pre-check may name no patch group: it runs the default template (AWX_DEFAULT_JOB_TEMPLATE).
        return self.action in RUNS and bool(self.hosts) and (
            bool(self.patch_group) or self.action == Action.PRECHECK)

    def eval_view(self) -> dict[str, Any]:
        """The keys the eval format compares (see evals/README)."""
        return {
            "action": self.action,
            "hosts": sorted(self.hosts),
            "patch_group": self.patch_group,
            "reboot": self.reboot,
            "check_mode": self.check_mode,
            "job_id": self.job_id,
            "missing": sorted(self.missing),
            "unknown_hosts": sorted(self.unknown_hosts),
        }
