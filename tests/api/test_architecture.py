"""The API's layers, checked on the code: use cases own the transaction, services never commit, routes never
write, the API reaches the worker through worker.dispatch only, and the domain's words come from core."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "api"
# Owned by the domain's vocabulary (the labels and the timeline the UI shows), checked with core.
NOT_CHECKED_FOR_WORDS = {API / "services" / "timeline.py", API / "routes" / "meta.py"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _method_calls(path: Path, names: set[str]) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{node.lineno} .{node.func.attr}()" for node in ast.walk(_tree(path))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_importing_the_api_loads_no_worker_code_but_the_dispatch_module():
    code = "import api.main, sys, json; print(json.dumps(sorted(m for m in sys.modules if m.startswith('worker'))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "API_METRICS_PORT": "0"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["worker", "worker.dispatch"]


def test_services_flush_and_never_end_a_transaction():
    calls = [c for path in sorted((API / "services").glob("*.py")) for c in _method_calls(path, {"commit", "rollback"})]
    assert calls == []


def test_only_the_use_cases_end_a_transaction_in_the_api():
    allowed = {API / "usecases.py", API / "auth.py"}  # auth: the token lookup and a role refusal, before any route
    calls = [c for path in sorted(API.rglob("*.py")) if path not in allowed
             for c in _method_calls(path, {"commit", "rollback"})]
    assert calls == []


@pytest.mark.parametrize("path", sorted((API / "routes").glob("*.py")), ids=lambda p: p.name)
def test_routes_never_call_a_service_that_writes(path):
    imports = _imports(path)
    assert not any(name.startswith(("api.services.decisions", "api.services.chat")) for name in imports), imports
    assert _method_calls(path, {"add", "flush", "commit", "rollback", "delete"}) == []


def test_the_api_reaches_the_worker_through_dispatch_only_and_awx_through_its_client():
    worker_imports = {name for path in API.rglob("*.py") for name in _imports(path) if name.startswith("worker")}
    modules = {name.split(".")[1] for name in worker_imports if name.count(".") >= 1}
    assert modules <= {"dispatch", "awx_client"}, worker_imports
    raw_http = [path.name for path in API.rglob("*.py") if {"httpx", "requests", "urllib.request"} & _imports(path)]
    assert raw_http == []


def test_every_task_dispatch_sends_is_a_task_the_worker_runs():
    from worker import dispatch
    from worker.celery_app import celery_app

    celery_app.loader.import_default_modules()  # what a worker does at start: worker.tasks registers its tasks
    sent = {node.value for node in ast.walk(_tree(ROOT / "worker" / "dispatch.py"))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("worker.")}
    assert sent == {dispatch.LAUNCH_TASK, dispatch.FOLLOW_TASK}
    assert sent <= set(celery_app.tasks), sorted(sent - set(celery_app.tasks))


def _words() -> set[str]:
    from core.states import RequestState, Stage

    return {s.value for s in RequestState} | {s.value for s in Stage}


# Strings that are the same word in another vocabulary: a JSON field of the API's own bodies, an SSE event name.
PROTOCOL_WORDS = {("api/routes/requests.py", "error"),   # the SSE `error` event of the stream
                  ("api/services/requests.py", "failed"),  # the host results' `failed` count (a column name)
                  ("api/routes/inventory.py", "error")}   # the sync's `error` field


def test_no_state_or_stage_literal_in_the_api():
    found = []
    for path in sorted(API.rglob("*.py")):
        if path in NOT_CHECKED_FOR_WORDS:
            continue
        tree = _tree(path)
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)}
        relative = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in _words()
                    and id(node) not in docstrings and (relative, node.value) not in PROTOCOL_WORDS):
                found.append(f"{relative}:{node.lineno} {node.value!r}")
    assert found == []


def test_no_environment_or_fleet_name_in_the_api():
    from core.inventory import load_catalog
    from core.settings import get_settings

    settings = get_settings()
    catalog = load_catalog(settings.inventory_file, settings.patch_groups_file, settings.policy_file)
    names = set(catalog.inventory.hosts) | set(catalog.patch_groups) | {"prod", "production", "staging", "dev"}
    names |= {catalog.environment_of(host) for host in catalog.inventory.hosts} - {None}
    names |= catalog.policy.production()
    found = [f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}"
             for path in sorted(API.rglob("*.py")) if path not in NOT_CHECKED_FOR_WORDS
             for node in ast.walk(_tree(path))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names]
    assert found == []
