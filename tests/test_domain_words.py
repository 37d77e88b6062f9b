"""One source for the domain's words: request states, stages, reboot policies and environments are spelled in
`core` only. Everything else imports the enums (`core.states`, `core.intent`) or asks the policy, and the UI gets
them from GET /api/v1/meta. A copy elsewhere drifts (the production environment was once the literal "prod" in the
API and the UI although the policy makes it configurable)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from core.intent import RebootPolicy
from core.states import RequestState, Stage

ROOT = Path(__file__).resolve().parents[1]
# The product's packages outside core. awx_double is left out: it plays AWX and speaks AWX's words.
PACKAGES = ("agent", "api", "worker", "ui", "evals", "patchpilot")

# Words that mean one thing only here: a literal of one is a copy of core's word.
OWN_WORDS = ({s.value for s in RequestState} | {s.value for s in Stage}) - {"pending", "running", "failed", "canceled",
                                                                              "error", "reboot"}
OWN_WORDS |= {p.value for p in RebootPolicy} - {"never", "always"}
# Words AWX, Ansible or plain English share with ours ("failed" is also an event field and a host status): a literal
# of one is a copy only where it is compared with a request's state or stage.
SHARED_WORDS = {"pending", "running", "failed", "canceled", "error", "reboot"}
STATE_NAMES = {"state", "stage", "to_state", "from_state", "final"}


def _environment_names() -> set[str]:
    names: set[str] = set()
    for path in (*ROOT.glob("fixtures/*.yml"), *ROOT.glob("fixtures/*/*.yml")):
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and isinstance(data.get("environments"), dict):
            names |= set(data["environments"])
    return names


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _strings(node: ast.AST) -> Iterator[ast.Constant]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        for element in node.elts:
            yield from _strings(element)


def _names_state(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr in STATE_NAMES
    if isinstance(node, ast.Name):
        return node.id in STATE_NAMES
    if isinstance(node, ast.Subscript):  # view["state"]
        return any(c.value in STATE_NAMES for c in _strings(node.slice))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return any(c.value in STATE_NAMES for arg in node.args[:1] for c in _strings(arg))
    return False


def copies(tree: ast.Module, environments: set[str]) -> list[tuple[int, str]]:
    """(line, word) for every copy of a domain word in one module."""
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if node.value in OWN_WORDS or node.value in environments:
                found.append((node.lineno, node.value))
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_names_state(side) for side in sides):
                found += [(c.lineno, c.value) for side in sides for c in _strings(side) if c.value in SHARED_WORDS]
    return found


def test_no_state_stage_reboot_policy_or_environment_literal_outside_core():
    environments = _environment_names()
    assert {"staging"} <= environments  # the fixtures' environments are read, so the check has teeth
    found = [f"{path.relative_to(ROOT)}:{line}: {word!r}" for path, tree in _modules()
             for line, word in copies(tree, environments)]
    assert not found, "domain words copied outside core (import them from core.states / core.intent):\n" + \
        "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ('if req.state == "running": pass', [(1, "running")]),
    ('ok = view["state"] in ("failed", "error")', [(1, "failed"), (1, "error")]),
    ('x = "succeeded"', [(1, "succeeded")]),
    ('envs = {"staging"}', [(1, "staging")]),
    ('counts = {"failed": 0}; task = "running"', []),  # an event field and plain English are not copies
    ('def f():\n    """The request is approved."""', []),
])
def test_the_check_finds_copies_and_leaves_other_words(source, expected):
    assert copies(ast.parse(source), {"staging"}) == expected
