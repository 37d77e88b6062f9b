"""Which stage a play or task of a patch playbook starts, per job template: the customer's own playbooks name their
plays and tasks their own way.

STAGE_MAP_FILE (YAML) maps a job template name (or `"*"`: every other template) to an ordered list of rules; a rule
matches a play name or a task name with a shell-style pattern, case-insensitive, and names the stage it starts:

    "Linux monthly patching":
      - {play: "Preflight*", stage: prechecks}
      - {task: "yum update*", stage: patching}
      - {play: "*reboot*", stage: reboot}
      - {play: "Verify*", stage: postchecks}

The first matching rule wins. Without a file (or for a template it does not name and no `"*"`), the reference
playbook's play names apply: "Pre-checks", "Patching", "Reboot", "Post-checks". A play that matches no rule is
shown under "Patching" by its own name rather than disappearing; a task that matches no rule changes nothing.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

MappedStage = Literal["prechecks", "patching", "reboot", "postchecks"]
FALLBACK_STAGE = "patching"


class StageMapError(ValueError):
    """STAGE_MAP_FILE is unreadable or invalid: the service refuses to start with this message."""


class StageRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    play: str | None = None
    task: str | None = None
    stage: MappedStage

    @model_validator(mode="after")
    def _one_pattern(self) -> StageRule:
        if (self.play is None) == (self.task is None):
            raise ValueError("a rule names exactly one of play or task")
        return self

    def matches(self, kind: str, name: str) -> bool:
        pattern = self.play if kind == "play" else self.task
        return pattern is not None and fnmatch.fnmatchcase(name.strip().lower(), pattern.strip().lower())


REFERENCE_RULES: tuple[StageRule, ...] = (
    StageRule(play="Pre-checks", stage="prechecks"), StageRule(play="Patching", stage="patching"),
    StageRule(play="Reboot", stage="reboot"), StageRule(play="Post-checks", stage="postchecks"),
)


@dataclass(frozen=True)
class StageMap:
    templates: dict[str, tuple[StageRule, ...]]

    def rules_for(self, template: str | None) -> tuple[StageRule, ...]:
        if template is not None and template in self.templates:
            return self.templates[template]
        return self.templates.get("*", REFERENCE_RULES)

    def stage_of(self, template: str | None, kind: str, name: str) -> str | None:
        for rule in self.rules_for(template):
            if rule.matches(kind, name):
                return rule.stage
        return None

    def play_stage(self, template: str | None, play: str) -> tuple[str, str | None]:
        """(stage, detail) for a play start: its mapped stage, or Patching with the play's own name."""
        stage = self.stage_of(template, "play", play)
        if stage is not None:
            return stage, None
        return FALLBACK_STAGE, play.strip() or None


def load_stage_map(path: Path | None) -> StageMap:
    if path is None:
        return StageMap(templates={})
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise StageMapError(f"cannot read the stage map {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise StageMapError(f"the stage map {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise StageMapError(f"the stage map {path} must map job template names to lists of rules")
    templates: dict[str, tuple[StageRule, ...]] = {}
    for template, rules in data.items():
        if not isinstance(rules, list) or not rules:
            raise StageMapError(f"the stage map {path}: {template!r} needs a list of rules")
        try:
            templates[str(template)] = tuple(StageRule.model_validate(rule) for rule in rules)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in exc.errors())
            raise StageMapError(f"the stage map {path}, template {template!r}: {problems}") from exc
    return StageMap(templates=templates)


@lru_cache(maxsize=4)
def _cached(path: str | None) -> StageMap:
    return load_stage_map(Path(path) if path else None)


def get_stage_map() -> StageMap:
    from core.settings import get_settings

    path = get_settings().stage_map_file
    return _cached(str(path) if path and str(path) not in ("", ".") else None)


def template_for(patch_group: str | None) -> str:
    """The job template a request with this patch group runs (the default one for pre-checks without one)."""
    from core.inventory import get_catalog
    from core.settings import get_settings

    group = get_catalog().patch_groups.get(patch_group or "")
    return group.job_template if group else get_settings().awx_default_job_template
