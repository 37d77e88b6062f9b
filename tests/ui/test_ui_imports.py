"""The UI imports only its HTTP client: no module under ui/ imports the backend's packages, and importing the UI
loads none of the backend's libraries (SQLModel, SQLAlchemy, prometheus, pydantic-settings)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "ui"
# The project's other packages: the frontend image has none of them.
BACKEND_PACKAGES = {"core", "agent", "api", "worker", "evals", "awx_double", "patchpilot", "migrations", "bench"}
# Libraries of the backend that must not be loaded into the frontend process.
BACKEND_LIBRARIES = {"sqlmodel", "sqlalchemy", "prometheus_client", "pydantic_settings", "celery", "psycopg",
                     "langchain", "langchain_core", "fastapi", "redis", "yaml"}


def ui_files() -> list[Path]:
    return sorted(UI.rglob("*.py"))


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, module) for every import of a file, relative imports resolved against the ui package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = ".".join(path.relative_to(root).with_suffix("").parts[: -node.level])
                found.append((node.lineno, f"{package}.{node.module}" if node.module else package))
            elif node.module:
                found.append((node.lineno, node.module))
    return found


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "ui" / "views" / "sample.py"
    sample.parent.mkdir(parents=True)
    sample.write_text("import core.states\nfrom api import schemas\nfrom ..client import ApiError\nimport httpx as h\n"
                      "def f():\n    from worker import tasks\n")
    assert [m for _, m in imported_modules(sample, tmp_path)] == ["core.states", "api", "ui.client", "httpx", "worker"]


def test_no_ui_module_imports_the_backend() -> None:
    files = ui_files()
    assert len(files) >= 10 and UI / "app.py" in files and UI / "views" / "progress.py" in files
    offending = [f"{path.relative_to(ROOT)}:{line}: import {module}" for path in files
                 for line, module in imported_modules(path) if module.split(".")[0] in BACKEND_PACKAGES]
    assert not offending, "the UI talks to the API over HTTP only:\n" + "\n".join(offending)


def test_importing_the_ui_loads_none_of_the_backends_libraries() -> None:
    """Every module under ui/ but app.py (which draws the page when imported), in a fresh interpreter."""
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in ui_files() if p.name != "app.py")
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert {"streamlit", "httpx", "pydantic", "ui"} <= loaded  # the check has teeth: the UI's own are there
    assert not loaded & (BACKEND_PACKAGES | BACKEND_LIBRARIES), sorted(loaded & (BACKEND_PACKAGES | BACKEND_LIBRARIES))


@pytest.mark.parametrize("path", ["ui/app.py", "ui/client.py", "ui/config.py"])
def test_the_entry_points_import_only_the_ui_and_its_libraries(path: str) -> None:
    allowed = {"streamlit", "httpx", "pydantic", "ui", "__future__", *sys.stdlib_module_names}
    for line, module in imported_modules(ROOT / path):
        assert module.split(".")[0] in allowed, f"{path}:{line}: import {module}"
