"""Reading an eval dataset (JSONL, one case a line; the format is described in evals/README.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from core.intent import ACTIONS, REBOOT_POLICIES, Missing

SET_KEYS = ("hosts", "missing", "unknown_hosts")
EXPECTED_KEYS = ("action", "hosts", "patch_group", "reboot", "check_mode", "job_id", "missing", "unknown_hosts")
_MISSING_VALUES: tuple[str, ...] = get_args(Missing)
_REBOOT_VALUES = REBOOT_POLICIES


class DatasetError(ValueError):
    """The dataset cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    expected: dict
    history: tuple[str, ...] = field(default_factory=tuple)
    line: int = 0


def load_cases(path: Path) -> list[Case]:
    try:
        raw_lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None

    cases: list[Case] = []
    seen: set[str] = set()
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        case = _case_from(obj, f"{path}:{number}", number)
        if case.id in seen:
            raise DatasetError(f"{path}:{number}: duplicate id {case.id!r}")
        seen.add(case.id)
        cases.append(case)
    if not cases:
        raise DatasetError(f"{path}: no cases")
    return cases


def _case_from(obj: object, where: str, number: int) -> Case:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: a case must be a JSON object")
    unknown = set(obj) - {"id", "text", "expected", "history"}
    if unknown:
        raise DatasetError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    case_id, text, expected = obj.get("id"), obj.get("text"), obj.get("expected")
    history = obj.get("history", [])
    if not isinstance(case_id, str) or not case_id:
        raise DatasetError(f"{where}: 'id' must be a non-empty string")
    if not isinstance(text, str):
        raise DatasetError(f"{where}: 'text' must be a string")
    if not isinstance(history, list) or not all(isinstance(turn, str) for turn in history):
        raise DatasetError(f"{where}: 'history' must be a list of strings")
    if not isinstance(expected, dict):
        raise DatasetError(f"{where}: 'expected' must be an object")
    _check_expected(expected, where)
    return Case(id=case_id, text=text, expected=expected, history=tuple(history), line=number)


def _check_expected(expected: dict, where: str) -> None:
    bad_keys = set(expected) - set(EXPECTED_KEYS)
    if bad_keys:
        raise DatasetError(f"{where}: unknown expected key(s) {', '.join(sorted(bad_keys))}")
    if expected.get("action") not in ACTIONS:
        raise DatasetError(f"{where}: expected.action must be one of {', '.join(ACTIONS)}")
    for key in SET_KEYS:
        if key in expected and not (isinstance(expected[key], list) and all(isinstance(v, str) for v in expected[key])):
            raise DatasetError(f"{where}: expected.{key} must be a list of strings")
    if "missing" in expected and not set(expected["missing"]) <= set(_MISSING_VALUES):
        raise DatasetError(f"{where}: expected.missing may only hold {', '.join(_MISSING_VALUES)}")
    if "reboot" in expected and expected["reboot"] not in _REBOOT_VALUES:
        raise DatasetError(f"{where}: expected.reboot must be one of {', '.join(_REBOOT_VALUES)}")
    if "check_mode" in expected and not isinstance(expected["check_mode"], bool):
        raise DatasetError(f"{where}: expected.check_mode must be true or false")
    if "job_id" in expected and (not isinstance(expected["job_id"], int) or isinstance(expected["job_id"], bool)):
        raise DatasetError(f"{where}: expected.job_id must be an integer")
    if "patch_group" in expected and not isinstance(expected["patch_group"], (str, type(None))):
        raise DatasetError(f"{where}: expected.patch_group must be a string")
