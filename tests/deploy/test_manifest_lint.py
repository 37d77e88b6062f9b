"""Policy checks on the rendered manifests: hardening, resources, probes, secrets, network access, wiring."""

from __future__ import annotations

import re

import pytest

from core.settings import Settings

from .render import (
    MONITORING_COMPONENT,
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
    pytest.param(w, section, c, id=f"{w.kind}/{w.name}/{c['name']}")
    for w in WORKLOADS for section, c in containers(w.doc)
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
    assert ctx.get("readOnlyRootFilesystem") is True, f"{container['name']}: readOnlyRootFilesystem: true"


def _writable_mounts(workload: Resource, container: dict) -> dict[str, str]:
    """mountPath -> volume kind, for the mounts a container may write to."""
    volumes = {v["name"]: v for v in pod_spec(workload.doc).get("volumes") or []}
    claims = {t["metadata"]["name"] for t in workload.doc["spec"].get("volumeClaimTemplates") or []}
    out = {}
    for mount in container.get("volumeMounts") or []:
        if mount.get("readOnly"):
            continue
        if mount["name"] in claims:
            out[mount["mountPath"]] = "persistentVolumeClaim"
        else:
            volume = volumes[mount["name"]]
            kind = next(k for k in volume if k != "name")
            assert kind in {"emptyDir", "persistentVolumeClaim"}, f"{mount['name']}: a {kind} volume mounted writable"
            out[mount["mountPath"]] = kind
    return out


# Where each image writes, besides /tmp (read-only root file system: each needs a volume).
WRITES = {
    # HOME (passwd, config), data, socket
    "postgresql": {"/var/lib/pgsql", "/var/lib/pgsql/data", "/var/run/postgresql"},
    "redis": {"/var/lib/redis/data"},
    "patchpilot-frontend": {"/home/patchpilot"},  # Streamlit's ~/.streamlit
    "patchpilot-backend": set(),
}


@pytest.mark.parametrize(("workload", "section", "container"), CONTAINERS)
def test_every_written_path_is_a_volume(workload: Resource, section: str, container: dict) -> None:
    writable = _writable_mounts(workload, container)
    assert writable.get("/tmp") == "emptyDir", f"{container['name']}: /tmp must be an emptyDir"
    image = next(name for name in WRITES if f"/{name}" in container["image"])
    assert WRITES[image] <= set(writable), f"{container['name']}: no volume at {sorted(WRITES[image] - set(writable))}"


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


LONG_RUNNING = [r for r in WORKLOADS if r.kind in {"Deployment", "StatefulSet"}]


@pytest.mark.parametrize("workload", LONG_RUNNING, ids=lambda r: f"{r.kind}/{r.name}")
def test_every_long_running_container_has_probes(workload: Resource) -> None:
    for container in pod_spec(workload.doc)["containers"]:
        for probe in ("livenessProbe", "readinessProbe"):
            assert probe in container, f"{workload.name}/{container['name']}: no {probe}"
            spec = container[probe]
            if "exec" in spec:
                # an exec probe that hangs must not count as alive: a timeout is set, and the command is bounded
                assert spec.get("timeoutSeconds", 1) >= 1
                assert spec["exec"]["command"], workload.name


def test_worker_and_beat_probes_watch_their_loops() -> None:
    worker = RENDERED.get("Deployment", "patchpilot-worker").doc["spec"]["template"]["spec"]["containers"][0]
    heartbeat = next(e["value"] for e in worker["env"] if e["name"] == "WORKER_HEARTBEAT_FILE")
    for probe in ("livenessProbe", "readinessProbe"):
        assert heartbeat in " ".join(worker[probe]["exec"]["command"]), probe
    beat = RENDERED.get("Deployment", "patchpilot-beat").doc["spec"]["template"]["spec"]["containers"][0]
    schedule = beat["command"][beat["command"].index("--schedule") + 1]
    for probe in ("livenessProbe", "readinessProbe"):
        assert f"{schedule}*" in " ".join(beat[probe]["exec"]["command"]) or \
            f"'{schedule.rsplit('/', 1)[1]}*'" in " ".join(beat[probe]["exec"]["command"]), probe
    # beat syncs its schedule at least every 3 minutes: the liveness window must be longer
    assert "-mmin -10" in " ".join(beat["livenessProbe"]["exec"]["command"])


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
        selector = {"matchLabels": svc["spec"]["selector"]}
        matched = [t for t in templates if label_selector_matches(selector, t["metadata"]["labels"])]
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
    for monitor in render(components=[MONITORING_COMPONENT]).of_kind("ServiceMonitor"):
        spec = monitor.doc["spec"]
        for svc in services:
            if label_selector_matches(spec["selector"], svc["metadata"]["labels"]):
                names = {p["name"] for p in svc["spec"]["ports"]}
                for endpoint in spec["endpoints"]:
                    assert endpoint["port"] in names and endpoint["path"] == "/metrics"
                scraped.add(svc["metadata"]["labels"]["app.kubernetes.io/component"])
    assert scraped == {"api", "worker"}


# ------------------------------------------------------------------------------------------ network policy


ROUTER = "router"          # the OpenShift router's namespaces
MONITORING = "monitoring"  # openshift-monitoring, openshift-user-workload-monitoring
NAMESPACE_PEERS = {
    (("policy-group.network.openshift.io/ingress", ""),): ROUTER,
    (("network.openshift.io/policy-group", "monitoring"),): MONITORING,
}


def _policies_for(target_labels: dict) -> list[dict]:
    return [p.doc for p in RENDERED.of_kind("NetworkPolicy")
            if label_selector_matches(p.doc["spec"]["podSelector"], target_labels)]


def _admitted(target_component: str) -> dict[str, set[int]]:
    """Who the NetworkPolicies admit to the target's pods: component (or ROUTER / MONITORING) -> ports."""
    target = next(w for w in WORKLOADS if _component(w) == target_component)
    target_labels = target.doc["spec"]["template"]["metadata"]["labels"]
    policies = _policies_for(target_labels)
    assert policies, f"no NetworkPolicy isolates {target_component}"
    admitted: dict[str, set[int]] = {}
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"].get("ingress") or []:
            assert rule.get("from"), f"{policy['metadata']['name']}: an ingress rule without `from` admits everyone"
            assert rule.get("ports"), f"{policy['metadata']['name']}: a rule without ports admits every port"
            ports = {p["port"] for p in rule["ports"]}
            for peer in rule["from"]:
                if "namespaceSelector" in peer:
                    assert set(peer) == {"namespaceSelector"}, policy["metadata"]["name"]
                    labels = tuple(sorted(peer["namespaceSelector"]["matchLabels"].items()))
                    assert labels in NAMESPACE_PEERS, f"{policy['metadata']['name']}: namespaces {labels}"
                    admitted.setdefault(NAMESPACE_PEERS[labels], set()).update(ports)
                    continue
                assert set(peer) == {"podSelector"}, f"{policy['metadata']['name']}: only pod or namespace selectors"
                for workload in WORKLOADS:
                    pod_labels = workload.doc["spec"]["template"]["metadata"]["labels"]
                    if label_selector_matches(peer["podSelector"], pod_labels):
                        admitted.setdefault(_component(workload), set()).update(ports)
    return admitted


def test_every_pod_denies_ingress_by_default() -> None:
    deny = [p.doc for p in RENDERED.of_kind("NetworkPolicy") if not p.doc["spec"].get("ingress")]
    assert deny, "a default-deny NetworkPolicy"
    for workload in WORKLOADS:
        labels = workload.doc["spec"]["template"]["metadata"]["labels"]
        assert any(label_selector_matches(p["spec"]["podSelector"], labels) for p in deny), workload.key


def test_only_backend_pods_reach_postgres() -> None:
    assert _admitted("postgres") == {c: {5432} for c in ("api", "worker", "beat", "migrate")}


def test_only_backend_pods_reach_redis() -> None:
    assert _admitted("redis") == {c: {6379} for c in ("api", "worker", "beat")}


def test_router_reaches_the_ui_and_the_ui_the_api() -> None:
    assert _admitted("ui") == {ROUTER: {8080}}
    assert _admitted("api") == {ROUTER: {8080}, "ui": {8080}, MONITORING: {9808, 9809}}


def test_monitoring_reaches_only_the_metrics_ports() -> None:
    assert _admitted("worker") == {MONITORING: {9808, 9809}}
    metrics_ports = {p["containerPort"] for w in WORKLOADS for c in pod_spec(w.doc)["containers"]
                     for p in c.get("ports") or [] if p["name"] == "metrics"}
    assert metrics_ports == {9808, 9809}


def test_nothing_reaches_beat_or_the_migration() -> None:
    assert _admitted("beat") == {}
    assert _admitted("migrate") == {}


# ------------------------------------------------------------------------------------- metrics, CA bundle


def _env(name: str) -> dict[str, str]:
    container = RENDERED.get("Deployment", name).doc["spec"]["template"]["spec"]["containers"][0]
    values = {e["name"]: e.get("value") for e in container.get("env") or []}
    for source in container.get("envFrom") or []:
        values = {**(CONFIGMAPS[source["configMapRef"]["name"]].get("data") or {}), **values}
    return values


def test_database_gauges_are_exported_by_the_api_only() -> None:
    assert Settings.model_fields["metrics_database_gauges"].default is True
    assert _env("patchpilot-worker")["METRICS_DATABASE_GAUGES"] == "false"
    assert _env("patchpilot-api").get("METRICS_DATABASE_GAUGES", "true") == "true"


def test_metrics_ports_listen_on_the_pod_address() -> None:
    """The /metrics servers default to loopback; in a pod they listen on the pod's address, where only the
    monitoring namespaces may reach them (test_monitoring_reaches_only_the_metrics_ports)."""
    assert Settings.model_fields["metrics_host"].default == "127.0.0.1"
    for name in ("patchpilot-api", "patchpilot-worker"):
        assert _env(name)["METRICS_HOST"] == "0.0.0.0", name


def test_awx_ca_bundle_is_mounted_where_the_setting_points() -> None:
    trusted = CONFIGMAPS["patchpilot-trusted-ca"]
    assert trusted["metadata"]["labels"]["config.openshift.io/inject-trusted-cabundle"] == "true"
    assert not trusted.get("data"), "OpenShift fills it; a re-apply must not fight the injection"
    for name in ("patchpilot-api", "patchpilot-worker"):
        env = _env(name)
        assert env["AWX_VERIFY_TLS"] == "true"
        spec = RENDERED.get("Deployment", name).doc["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
        mount = mounts[env["AWX_CA_BUNDLE"]]
        assert mount.get("readOnly") is True
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        sources = {s["configMap"]["name"]: s["configMap"] for s in volume["projected"]["sources"]}
        assert set(sources) == {"patchpilot-trusted-ca", "patchpilot-ca"}
        assert all(s["optional"] is True for s in sources.values()), "a cluster without either still starts"
        assert sources["patchpilot-trusted-ca"]["items"][0]["key"] == "ca-bundle.crt"
        assert all(i["path"].endswith(".crt") for s in sources.values() for i in s["items"])


def _shipped_policy_text() -> str:
    return CONFIGMAPS["patchpilot-policy"]["data"]["policy.yaml"]


@pytest.mark.parametrize("fleet", ["empty", "demo", "other"])
def test_the_shipped_policy_validates_against_any_inventory(tmp_path, fleet: str) -> None:
    """The pods validate POLICY_FILE against the inventory at start-up: the shipped policy names no host, group or
    patch group, so pointing INVENTORY_FILE at a real fleet never sends the pods into CrashLoopBackOff."""
    from core.inventory import Inventory
    from core.policy import load_policy

    path = tmp_path / "policy.yaml"
    path.write_text(_shipped_policy_text())
    if fleet == "demo":
        from core.inventory import get_catalog

        catalog = get_catalog()
        inventory = catalog.inventory
        hosts, groups, patch_groups = set(inventory.hosts), set(inventory.groups), set(catalog.patch_groups)
    elif fleet == "other":
        inventory = Inventory.from_dict(
            {"all": {"children": {"site_a": {"hosts": {"srv1.corp": {}, "srv2.corp": {}}}}}}
        )
        hosts, groups, patch_groups = set(inventory.hosts), set(inventory.groups), {"Monthly"}
    else:
        hosts, groups, patch_groups = set(), set(), set()
    policy = load_policy(path, known_hosts=hosts, known_groups=patch_groups, inventory_groups=groups)
    assert not policy.never_patch_hosts and not policy.environments and not policy.reboot_allowed
    assert not policy.production_environments
    # nothing is named production yet: nobody approves their own request anywhere
    assert policy.allow_self_approval_non_production is False


def test_the_policy_configmap_is_mounted_at_policy_file() -> None:
    assert CONFIGMAPS["patchpilot-config"]["data"]["POLICY_FILE"] == "/etc/patchpilot/policy.yaml"
    for name in ("patchpilot-api", "patchpilot-worker"):
        spec = RENDERED.get("Deployment", name).doc["spec"]["template"]["spec"]
        mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == "/etc/patchpilot")
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["configMap"]["name"] == "patchpilot-policy"
        assert "policy.yaml" in CONFIGMAPS["patchpilot-policy"]["data"]
