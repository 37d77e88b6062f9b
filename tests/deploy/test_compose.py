"""compose.yaml runs the same stack as openshift/: same service names, same environment variable names."""

from __future__ import annotations

import pytest
import yaml

from .render import COMPOSE_FILE, containers, env_names, load_kustomization, pod_spec, render

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
    assert got == expected, f"{name}: only in compose {sorted(got - expected)}, only in openshift {sorted(expected - got)}"


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_same_commands(compose: dict, name: str) -> None:
    main = next(c for section, c in containers(WORKLOADS[name]) if section == "containers")
    if "command" not in main:
        return  # the image's own entrypoint (PostgreSQL, Redis)
    assert compose["services"][name]["command"] == main["command"], name


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
    # the double accepts exactly the token the backend sends
    assert command[command.index("--token") + 1] == services["patchpilot-api"]["environment"]["AWX_TOKEN"]
    assert services["patchpilot-api"]["environment"]["AWX_URL"].endswith("awx-double:8052/api/v2/}")
    for name in ("patchpilot-api", "patchpilot-worker"):
        condition = services[name]["depends_on"]["patchpilot-migrate"]["condition"]
        assert condition == "service_completed_successfully"


def test_published_ports_stay_on_loopback(compose: dict) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
