"""The patch intent schema.

Two stages, on purpose:
- `IntentDraft` is what a parser proposes (the rules parser or the LLM). It is untrusted: names are as the user
  (or the model) wrote them.
- `IntentResult` is what the pure validator (`core.validation.validate_draft`) makes of a draft against the
  inventory and patch groups: exact host names, a canonical patch group, or a clarification saying what is
  missing or unknown. Only a complete `patch`/`precheck` result can become a proposal.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Action = Literal["patch", "precheck", "status", "cancel", "list_jobs", "clarify", "unsupported"]
ACTIONS: tuple[str, ...] = ("patch", "precheck", "status", "cancel", "list_jobs", "clarify", "unsupported")
RebootPolicy = Literal["never", "if_needed", "always"]
Missing = Literal["targets", "patch_group"]

DEFAULT_REBOOT: RebootPolicy = "if_needed"


class IntentDraft(BaseModel):
    """A parser's proposal. Target semantics: `hosts` (exact names or globs) UNION `groups`, where every group
    (and glob) result is then intersected with each of the `within` groups.
    "prod web servers" -> groups=["web"], within=["prod"]; "web-01 and the db boxes" -> hosts=["web-01"], groups=["db"].
    """

    model_config = ConfigDict(extra="forbid")

    action: Action
    hosts: list[str] = Field(default_factory=list, max_length=200, description="Host names or globs as given.")
    groups: list[str] = Field(default_factory=list, max_length=50, description="Inventory groups, unioned.")
    within: list[str] = Field(default_factory=list, max_length=10, description="Groups every group/glob match must be in.")
    exclude_hosts: list[str] = Field(default_factory=list, max_length=200, description="Names removed from the result.")
    patch_group: str | None = Field(default=None, max_length=100)
    reboot: RebootPolicy | None = None
    check_mode: bool = False
    job_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    # Why the parser chose clarify/unsupported, for the reply. Never used as a command.
    note: str | None = Field(default=None, max_length=500)


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
    missing: list[Missing] = Field(default_factory=list)
    unknown_hosts: list[str] = Field(default_factory=list)
    suggestions: dict[str, list[str]] = Field(default_factory=dict)  # unknown name -> did you mean
    refused_hosts: list[str] = Field(default_factory=list)  # known hosts that policy keeps out of chat
    message: str = ""

    @property
    def is_proposable(self) -> bool:
        return self.action in ("patch", "precheck") and bool(self.hosts) and bool(self.patch_group)

    def eval_view(self) -> dict:
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
