"""compose.yaml runs the same stack as openshift/: same service names, same environment variable names, and it
comes up with Podman as with Docker: every service another one waits for has its own healthcheck."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .render import COMPOSE_FILE, REPO_ROOT, containers, env_names, load_kustomization, pod_spec, render

RENDERED = render()
CONFIGMAPS = {r.name: r.doc for r in RENDERED.of_kind("ConfigMap")}
WORKLOADS = {r.name: r.doc for r in RENDERED.resources if pod_spec(r.doc) is not None}
COMPOSE_ONLY = {"awx-double"}  # the AWX test double is for laptop demos only


@pytest.fixture(scope="module")
def compose() -> dict:
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def test_same_service_names(compose: dict) -> None:
    assert set(compose["services"]) - COMPOSE_ONLY == set(WORKLOADS)


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_same_environment_variable_names(compose: dict, name: str) -> None:
    main = next(c for section, c in containers(WORKLOADS[name]) if section == "containers")
    expected = env_names(main, CONFIGMAPS)
    got = set((compose["services"][name].get("environment") or {}).keys())
    assert got == expected, (
        f"{name}: only in compose {sorted(got - expected)}, only in openshift {sorted(expected - got)}"
    )


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_same_commands(compose: dict, name: str) -> None:
    """Kubernetes `command` + `args` is compose's `entrypoint` + `command` (with compose's $$ for a literal $)."""
    main = next(c for section, c in containers(WORKLOADS[name]) if section == "containers")
    if "command" not in main:
        return  # the image's own entrypoint (PostgreSQL)
    service = compose["services"][name]
    got = [str(part).replace("$$", "$") for part in (service.get("entrypoint") or []) + service["command"]]
    assert got == main["command"] + (main.get("args") or []), name


def test_same_data_store_images(compose: dict) -> None:
    images = {e["name"]: f"{e['newName']}:{e['newTag']}" for e in load_kustomization()["images"]}
    assert compose["services"]["patchpilot-postgres"]["image"] == images["postgresql"]
    assert compose["services"]["patchpilot-redis"]["image"] == images["redis"]


def test_backend_services_build_the_backend_image(compose: dict) -> None:
    for name, svc in compose["services"].items():
        if name in {"patchpilot-postgres", "patchpilot-redis"}:
            continue
        dockerfile = "Dockerfile.frontend" if name == "patchpilot-ui" else "Dockerfile.backend"
        assert svc["build"]["dockerfile"] == dockerfile, name
        assert ":" in svc["image"] and not svc["image"].endswith(":latest"), name


def test_awx_double_and_start_order(compose: dict) -> None:
    services = compose["services"]
    assert services["awx-double"]["command"][:3] == ["python", "-m", "awx_double"]
    command = services["awx-double"]["command"]
    assert command[command.index("--port") + 1] == "8052"
    # the double accepts exactly the token the backend sends, and it is not on a command line
    assert "--token" not in command
    double_env, api_env = services["awx-double"]["environment"], services["patchpilot-api"]["environment"]
    assert double_env["AWX_DOUBLE_TOKEN"] == api_env["AWX_TOKEN"]
    assert services["patchpilot-api"]["environment"]["AWX_URL"].endswith("awx-double:8052/api/v2/}")
    for name in ("patchpilot-api", "patchpilot-worker"):
        condition = services[name]["depends_on"]["patchpilot-migrate"]["condition"]
        assert condition == "service_completed_successfully"


def test_published_ports_stay_on_loopback(compose: dict) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_every_awaited_service_has_its_own_healthcheck(compose: dict) -> None:
    """Podman builds OCI images, which drop the Dockerfile's HEALTHCHECK: a service waited for as service_healthy
    without a healthcheck here would keep podman-compose waiting for ever."""
    services = compose["services"]
    for name, svc in services.items():
        for dependency, spec in (svc.get("depends_on") or {}).items():
            condition = spec["condition"]
            assert condition in {"service_healthy", "service_completed_successfully"}, (name, dependency, condition)
            if condition == "service_healthy":
                check = services[dependency].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), f"{name} waits for {dependency}: no healthcheck"


def test_long_running_services_have_healthchecks(compose: dict) -> None:
    for name, svc in compose["services"].items():
        if name == "patchpilot-migrate":
            continue  # a one-shot job: the others wait for it to complete
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), name


def test_the_ui_waits_for_a_healthy_api(compose: dict) -> None:
    services = compose["services"]
    assert services["patchpilot-ui"]["depends_on"]["patchpilot-api"]["condition"] == "service_healthy"
    assert "/healthz" in " ".join(services["patchpilot-api"]["healthcheck"]["test"])
    assert services["patchpilot-api"]["depends_on"]["awx-double"]["condition"] == "service_healthy"


def test_root_file_systems_are_read_only(compose: dict) -> None:
    for name, svc in compose["services"].items():
        assert svc.get("read_only") is True, name
        assert "/tmp" in (svc.get("tmpfs") or []), name
    assert "/home/patchpilot" in compose["services"]["patchpilot-ui"]["tmpfs"]
    assert {"/var/lib/pgsql", "/var/run/postgresql"} <= set(compose["services"]["patchpilot-postgres"]["tmpfs"])


def test_ca_directory_is_mounted_where_awx_ca_bundle_points(compose: dict) -> None:
    for name in ("patchpilot-api", "patchpilot-worker"):
        svc = compose["services"][name]
        target = svc["environment"]["AWX_CA_BUNDLE"]
        mounts = [v.rsplit(":", 2) for v in svc["volumes"] if v.rsplit(":", 2)[1] == target]
        assert mounts and "ro" in mounts[0][2].split(","), name
        assert mounts[0][0] == "${PATCHPILOT_CA_DIR:-./certs}"
    assert (REPO_ROOT / "certs").is_dir(), "the default CA directory exists (podman refuses a missing bind source)"


def _podman_compose() -> str | None:
    # the dev extra's (1.1+) first: older ones, such as Debian 12's 1.0.3, have no `config`
    for candidate in (str(Path(sys.executable).parent / "podman-compose"), shutil.which("podman-compose")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def test_podman_compose_reads_the_file(tmp_path: Path) -> None:
    """podman-compose's own parser (no engine needed for `config`) accepts the file and sees every healthcheck."""
    binary = _podman_compose()
    if binary is None:
        pytest.skip("podman-compose is not installed (it is in the dev extra)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([binary, "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True, timeout=60,
                            cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert set(config["services"]) == set(yaml.safe_load(COMPOSE_FILE.read_text())["services"])
    for name, svc in config["services"].items():
        for dependency, spec in (svc.get("depends_on") or {}).items():
            if spec.get("condition") == "service_healthy":
                assert config["services"][dependency]["healthcheck"]["test"], (name, dependency)
    # interpolation: defaults filled in, $$ turned into $
    assert config["services"]["patchpilot-api"]["environment"]["AWX_URL"] == "http://awx-double:8052/api/v2/"
    assert "$REDIS_PASSWORD" in config["services"]["patchpilot-redis"]["command"][0]


def test_the_readme_laptop_steps_reach_a_signed_in_chat(compose: dict) -> None:
    """README step 11 brings the stack up, makes the first API token in the api container and says where it goes."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### 11. Laptop: Podman or Docker compose"):readme.index("### Troubleshooting")]
    assert "compose up --build" in section
    command = "compose exec patchpilot-api patchpilot token create admin --role admin"
    assert command in section
    service = command.split()[2]
    assert service in compose["services"] and "DATABASE_URL" in compose["services"][service]["environment"]
    assert compose["services"][service]["environment"]["AUTH_MODE"].endswith("token}")
    cli = (REPO_ROOT / "patchpilot" / "cli.py").read_text(encoding="utf-8")
    assert 'add_parser("token"' in cli and 'add_parser("create"' in cli and '"--role"' in cli
    assert "**API token**" in section and '"API token"' in (REPO_ROOT / "ui" / "app.py").read_text(encoding="utf-8")
    assert "localhost:8080" in section and '"127.0.0.1:8080:8080"' in (COMPOSE_FILE.read_text())
    assert "Compose v2" in section and "Podman 4.7" in section
