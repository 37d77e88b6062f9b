"""The domain's words as the API gives them (`GET /api/v1/meta`), and the questions the views ask of them.

The UI keeps no copy of a request state, a stage, an environment, a role, a reboot policy or an action: it asks
the `Meta` the API sent ("is this state final?", "is this environment production?", "how is this reboot policy
said?"). Every question has an answer while a key is missing (an older API): a word is then shown as it is, and
no state counts as final, active or cancelable.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, field_validator

from ui.models import ApiModel


class StateInfo(ApiModel):
    value: str = Field(validation_alias=AliasChoices("value", "state"))
    label: str = ""
    icon: str = ""
    terminal: bool = False
    active: bool = False
    cancelable: bool = False


class StageInfo(ApiModel):
    value: str = Field(validation_alias=AliasChoices("value", "stage"))
    label: str = Field(default="", validation_alias=AliasChoices("label", "title"))


class Choice(ApiModel):
    """A word with its text: a reboot policy, an action."""

    value: str
    label: str = ""


class JobsShown(ApiModel):
    """Which request states each 'show … jobs' filter lists."""

    active: list[str] = []
    failed: list[str] = []
    finished: list[str] = []


def _choices(value: Any) -> Any:
    """Choices as a list of {value, label}, or as a mapping value -> label."""
    if isinstance(value, dict):
        return [{"value": k, "label": v} for k, v in value.items()]
    return value


class Meta(ApiModel):
    """The words the UI shows and what they mean. Every question has an answer when a key is missing (an older API):
    then a word is shown as it is and no state counts as final, active or cancelable."""

    states: list[StateInfo] = []
    stages: list[StageInfo] = []
    production_environments: list[str] = []
    environments: list[str] = Field(default=[], validation_alias=AliasChoices("environments", "environment_order"))
    roles: list[str] = []
    reboot_policies: list[Choice] = []
    actions: list[Choice] = []
    jobs_shown: JobsShown = JobsShown()

    @field_validator("reboot_policies", "actions", mode="before")
    @classmethod
    def _choice_list(cls, value: Any) -> Any:
        return _choices(value)

    @field_validator("roles", mode="before")
    @classmethod
    def _role_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [r.get("value") if isinstance(r, dict) else r for r in value]
        return value

    # -- states --

    def state(self, value: str) -> StateInfo | None:
        return next((s for s in self.states if s.value == value), None)

    def state_values(self) -> list[str]:
        return [s.value for s in self.states]

    def icon(self, state: str) -> str:
        info = self.state(state)
        return (info.icon if info else "") or "•"

    def label(self, state: str) -> str:
        info = self.state(state)
        return (info.label if info else "") or state

    def badge(self, state: str) -> str:
        return f"{self.icon(state)} {state}"

    def is_terminal(self, state: str, default: bool = False) -> bool:
        info = self.state(state)
        return info.terminal if info else default

    def is_active(self, state: str) -> bool:
        info = self.state(state)
        return bool(info and info.active)

    def is_cancelable(self, state: str) -> bool:
        info = self.state(state)
        return bool(info and info.cancelable)

    def is_failure(self, state: str) -> bool:
        return state in self.jobs_shown.failed

    def has_run(self, state: str) -> bool:
        """The request was approved: it has (or had) a run to follow. Proposals, rejections and expiries have none."""
        return self.is_active(state) or state in self.jobs_shown.finished

    def run_states(self) -> list[str]:
        return [s.value for s in self.states if self.has_run(s.value)]

    def other_states(self) -> list[str]:
        return [s.value for s in self.states if not self.has_run(s.value)]

    # -- stages --

    def play_stages(self) -> list[str]:
        """The stages of the playbook's plays, in order (all but the last, which is the run's end)."""
        return [s.value for s in self.stages[:-1]]

    def changing_stages(self) -> list[str]:
        """The plays that change hosts: those between the first (checks before) and the last (checks after)."""
        return self.play_stages()[1:-1]

    def stage_label(self, stage: str) -> str:
        return next((s.label for s in self.stages if s.value == stage and s.label), stage)

    # -- environments, roles, choices --

    def is_production(self, environment: str) -> bool:
        return environment in self.production_environments

    def role_rank(self, roles: list[str] | None) -> int:
        """The highest of the roles in the API's order (the lowest only reads); -1 for none or unknown ones."""
        return max((self.roles.index(r) for r in roles or () if r in self.roles), default=-1)

    def only_reads(self, roles: list[str] | None) -> bool:
        """No role above the lowest (which only reads); False while the API has not said which roles there are."""
        return bool(self.roles) and self.role_rank(roles) <= 0

    def reboot_text(self, value: str) -> str:
        label = next((c.label for c in self.reboot_policies if c.value == value and c.label), value)
        return label[:1].upper() + label[1:]

    def action_label(self, value: str) -> str:
        label = next((c.label for c in self.actions if c.value == value and c.label), value)
        return label[:1].upper() + label[1:]
