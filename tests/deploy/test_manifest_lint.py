"""Policy checks on the rendered manifests: hardening, resources, probes, secrets, network access, wiring."""

from __future__ import annotations

import re

import pytest

from core.settings import Settings

from .render import (
    Rendered,
    Resource,
    containers,
    env_names,
    label_selector_matches,
    pod_spec,
    render,
    secret_templates,
    split_image,
)

RENDERED: Rendered = render()
WORKLOADS: list[Resource] = [r for r in RENDERED.resources if pod_spec(r.doc) is not None]
CONTAINERS = [
    pytest.param(w, section, c, id=f"{w.kind}/{w.name}/{c['name']}") for w in WORKLOADS for section, c in containers(w.doc)
]
CONFIGMAPS = {r.name: r.doc for r in RENDERED.of_kind("ConfigMap")}
SECRETS = {r.name: r.doc for r in secret_templates()}

SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|API_KEY|PRIVATE_KEY|CREDENTIAL)", re.IGNORECASE)
# Environment variables that are not Settings fields but are used to build DATABASE_URL / REDIS_URL, or are
# read by the PostgreSQL and Redis images themselves.
HELPER_ENV = {"DATABASE_USER", "DATABASE_PASSWORD", "DATABASE_NAME", "REDIS_PASSWORD",
              "POSTGRESQL_USER", "POSTGRESQL_PASSWORD", "POSTGRESQL_DATABASE",
              "PROMETHEUS_MULTIPROC_DIR"}  # read by prometheus_client in the worker
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}


def _component(resource: Resource) -> str:
    return resource.doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def _effective(container: dict, pod: dict, key: str):
    """A securityContext field: the container's value wins over the pod's."""
    ctx = container.get("securityContext") or {}
    if key in ctx:
        return ctx[key]
    return (pod.get("securityContext") or {}).get(key)


# --------------------------------------------------------------------------------------------- containers


@pytest.mark.parametrize(("workload", "section", "container"), CONTAINERS)
def test_image_is_pinned(workload: Resource, section: str, container: dict) -> None:
    _, tag, digest = split_image(container["image"])
    assert digest or (tag and tag != "latest"), f"{container['image']}: pin a tag (not latest) or a digest"


@pytest.mark.parametrize(("workload", "section", "container"), CONTAINERS)
def test_container_is_hardened(workload: Resource, section: str, container: dict) -> None:
    pod = pod_spec(workload.doc)
    assert _effective(container, pod, "runAsNonRoot") is True
    ctx = container.get("securityContext") or {}
    assert ctx.get("allowPrivilegeEscalation") is False
    assert ctx.get("privileged") in (None, False)
    assert "ALL" in (ctx.get("capabilities") or {}).get("drop", [])
    assert not (ctx.get("capabilities") or {}).get("add")
    assert (_effective(container, pod, "seccompProfile") or {}).get("type") == "RuntimeDefault"
    run_as_user = _effective(container, pod, "runAsUser")
    assert run_as_user is None or run_as_user > 0, "never run as root"


@pytest.mark.parametrize(("workload", "section", "container"), CONTAINERS)
def test_container_has_requests_and_limits(workload: Resource, section: str, container: dict) -> None:
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        for what in ("cpu", "memory"):
            assert what in (resources.get(kind) or {}), f"{container['name']}: resources.{kind}.{what} missing"


@pytest.mark.parametrize(("workload", "section", "container"), CONTAINERS)
def test_secrets_are_never_inline(workload: Resource, section: str, container: dict) -> None:
    for item in container.get("env") or []:
        if SECRET_NAME.search(item["name"]):
            assert "value" not in item, f"{item['name']} has an inline value"
            assert "secretKeyRef" in item.get("valueFrom", {}), f"{item['name']} must come from a Secret"
        value = str(item.get("value", ""))
        # A URL may carry credentials only as $(VAR) references to Secret-backed variables.
        for userinfo in re.findall(r"://([^@/]*)@", value):
            assert re.fullmatch(r"(\$\([A-Z_]+\))?:\$\([A-Z_]+\)", userinfo), f"{item['name']}: inline credentials"
    for source in container.get("envFrom") or []:
        assert set(source) <= {"configMapRef", "secretRef", "prefix"}


def test_no_secret_values_in_configmaps() -> None:
    for name, cm in CONFIGMAPS.items():
        for key in cm.get("data") or {}:
            assert not SECRET_NAME.search(key), f"ConfigMap {name} holds {key}: that belongs in a Secret"


@pytest.mark.parametrize(("workload", "section", "container"), CONTAINERS)
def test_references_resolve(workload: Resource, section: str, container: dict) -> None:
    """Every ConfigMap and Secret key a container refers to exists (Secrets: in the templates)."""
    for item in container.get("env") or []:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] in SECRETS, f"no template for Secret {ref['name']}"
            assert ref["key"] in SECRETS[ref["name"]]["stringData"], f"Secret {ref['name']} has no key {ref['key']}"
        ref = item.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            assert ref["key"] in CONFIGMAPS[ref["name"]]["data"]
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] in CONFIGMAPS
        if "secretRef" in source:
            assert source["secretRef"]["name"] in SECRETS
    # $(VAR) expansion only sees variables defined earlier in the same list.
    defined: list[str] = []
    for item in container.get("env") or []:
        for ref in re.findall(r"\$\(([A-Z_]+)\)", str(item.get("value", ""))):
            assert ref in defined, f"{item['name']} uses $({ref}) before it is defined"
        defined.append(item["name"])


@pytest.mark.parametrize(("workload", "section", "container"), CONTAINERS)
def test_environment_names_are_known_settings(workload: Resource, section: str, container: dict) -> None:
    unknown = env_names(container, CONFIGMAPS) - SETTINGS_ENV - HELPER_ENV
    assert not unknown, f"not a field of core.settings.Settings: {sorted(unknown)}"


# ---------------------------------------------------------------------------------------------- workloads


def test_every_secret_placeholder_is_marked() -> None:
    for name, secret in SECRETS.items():
        for key, value in secret["stringData"].items():
            if SECRET_NAME.search(key) or key in {"token", "api-key"}:
                assert value.startswith("CHANGE-ME"), f"{name}.{key} must be a CHANGE-ME placeholder"


def test_api_and_ui_have_probes() -> None:
    api = RENDERED.get("Deployment", "patchpilot-api").doc["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ui = RENDERED.get("Deployment", "patchpilot-ui").doc["spec"]["template"]["spec"]["containers"][0]
    assert ui["readinessProbe"]["httpGet"]["path"]
    assert ui["livenessProbe"]["httpGet"]["path"]
    for resource in RENDERED.of_kind("StatefulSet"):
        container = resource.doc["spec"]["template"]["spec"]["containers"][0]
        assert "readinessProbe" in container and "livenessProbe" in container, resource.key


def test_beat_is_a_singleton() -> None:
    beat = RENDERED.get("Deployment", "patchpilot-beat").doc
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"


def test_commands_match_the_process_model() -> None:
    def command(name: str) -> list[str]:
        return RENDERED.get("Deployment", name).doc["spec"]["template"]["spec"]["containers"][0]["command"]

    assert command("patchpilot-api")[:2] == ["uvicorn", "api.main:app"] and "8080" in command("patchpilot-api")
    worker = command("patchpilot-worker")
    assert worker[:4] == ["celery", "-A", "worker.celery_app:celery_app", "worker"]
    assert worker[worker.index("--concurrency") + 1] == "2" and worker[worker.index("--prefetch-multiplier") + 1] == "1"
    assert command("patchpilot-beat")[:4] == ["celery", "-A", "worker.celery_app:celery_app", "beat"]
    assert command("patchpilot-ui")[:3] == ["streamlit", "run", "ui/app.py"]
    job = RENDERED.get("Job", "patchpilot-migrate").doc["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["patchpilot", "migrate"]


def test_schema_users_wait_for_the_migration() -> None:
    for name in ("patchpilot-api", "patchpilot-worker"):
        inits = RENDERED.get("Deployment", name).doc["spec"]["template"]["spec"].get("initContainers") or []
        assert [c["name"] for c in inits] == ["wait-for-migrations"], name
        script = " ".join(inits[0]["args"])
        assert "alembic heads" in script and "alembic current" in script


def test_pods_get_no_service_account_token() -> None:
    for workload in WORKLOADS:
        assert pod_spec(workload.doc).get("automountServiceAccountToken") is False, workload.key


def test_services_select_pods_and_routes_point_at_services() -> None:
    templates = [w.doc["spec"]["template"] for w in WORKLOADS]
    services = {r.name: r.doc for r in RENDERED.of_kind("Service")}
    for name, svc in services.items():
        matched = [t for t in templates if label_selector_matches({"matchLabels": svc["spec"]["selector"]}, t["metadata"]["labels"])]
        assert matched, f"Service {name} selects no pod"
        ports = {p["name"] for t in matched for c in t["spec"]["containers"] for p in c.get("ports") or []}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: no container port named {port['targetPort']}"
    routes = {r.name: r.doc for r in RENDERED.of_kind("Route")}
    assert set(routes) == {"patchpilot-ui", "patchpilot-api"}
    for route in routes.values():
        target = services[route["spec"]["to"]["name"]]
        assert route["spec"]["port"]["targetPort"] in {p["name"] for p in target["spec"]["ports"]}
        assert route["spec"]["tls"]["termination"] == "edge"
        assert route["spec"]["tls"]["insecureEdgeTerminationPolicy"] == "Redirect"


def test_metrics_are_scraped_on_api_and_worker() -> None:
    services = [r.doc for r in RENDERED.of_kind("Service")]
    scraped = set()
    for monitor in RENDERED.of_kind("ServiceMonitor"):
        spec = monitor.doc["spec"]
        for svc in services:
            if label_selector_matches(spec["selector"], svc["metadata"]["labels"]):
                names = {p["name"] for p in svc["spec"]["ports"]}
                for endpoint in spec["endpoints"]:
                    assert endpoint["port"] in names and endpoint["path"] == "/metrics"
                scraped.add(svc["metadata"]["labels"]["app.kubernetes.io/component"])
    assert scraped == {"api", "worker"}


# ------------------------------------------------------------------------------------------ network policy


def _admitted(target_component: str) -> set[str]:
    """Components whose pods the NetworkPolicies admit to the target's pods (same namespace)."""
    target = next(w for w in WORKLOADS if _component(w) == target_component)
    target_labels = target.doc["spec"]["template"]["metadata"]["labels"]
    policies = [p.doc for p in RENDERED.of_kind("NetworkPolicy") if label_selector_matches(p.doc["spec"]["podSelector"], target_labels)]
    assert policies, f"no NetworkPolicy isolates {target_component}"
    admitted = set()
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress") or []:
            assert rule.get("from"), f"{policy['metadata']['name']}: an ingress rule without `from` admits everyone"
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, f"{policy['metadata']['name']}: only pod selectors allowed"
                for workload in WORKLOADS:
                    if label_selector_matches(peer["podSelector"], workload.doc["spec"]["template"]["metadata"]["labels"]):
                        admitted.add(_component(workload))
    return admitted


def test_only_backend_pods_reach_postgres() -> None:
    assert _admitted("postgres") == {"api", "worker", "beat", "migrate"}


def test_only_backend_pods_reach_redis() -> None:
    assert _admitted("redis") == {"api", "worker", "beat"}


def test_the_shipped_policy_configmap_is_a_valid_policy():
    """The pods validate POLICY_FILE at start-up: a ConfigMap that does not parse would stop them all."""
    import yaml as _yaml

    from core.inventory import get_catalog
    from core.policy import Policy

    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    docs = [d for d in _yaml.safe_load_all((root / "openshift" / "configmap.yaml").read_text()) if d]
    policy_doc = next(d for d in docs if d["metadata"]["name"] == "patchpilot-policy")
    policy = Policy.model_validate(_yaml.safe_load(policy_doc["data"]["policy.yaml"]))
    catalog = get_catalog()
    assert set(policy.never_patch_hosts) <= set(catalog.inventory.hosts)
    config = next(d for d in docs if d["metadata"]["name"] == "patchpilot-config")
    assert config["data"]["POLICY_FILE"] == "/etc/patchpilot/policy.yaml"
