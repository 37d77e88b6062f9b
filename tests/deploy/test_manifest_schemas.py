"""Every manifest validates: core kinds against the Kubernetes OpenAPI schemas (kubernetes-validate,
strict: unknown fields are errors), OpenShift/operator kinds against the schemas kept in openshift/schemas/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .render import (
    KUSTOMIZATION,
    MONITORING_COMPONENT,
    SCHEMAS_DIR,
    Resource,
    load_kustomization,
    render,
    secret_templates,
)

jsonschema = pytest.importorskip("jsonschema")
try:
    import kubernetes_validate
except ImportError:  # slim environments: core kinds are skipped, the project's own schemas still run
    kubernetes_validate = None

K8S_VERSION = kubernetes_validate.latest_version() if kubernetes_validate else None
CORE_GROUPS = ("v1", "apps/v1", "batch/v1", "networking.k8s.io/v1", "policy/v1", "autoscaling/v2")
# The base, the optional monitoring component and the Secret templates.
ALL_RESOURCES: list[Resource] = render(components=[MONITORING_COMPONENT]).resources + secret_templates()
# OpenShift 4.14 runs Kubernetes 1.27, 4.17 runs 1.30: the manifests must be valid there too, not only at the latest.
OLDER_VERSIONS = ("1.27.0", "1.30.0")


def _schema_path(doc: dict) -> str:
    group_version = doc["apiVersion"].replace("/", "-")
    return str(SCHEMAS_DIR / f"{group_version}-{doc['kind']}.json")


def _validate(doc: dict) -> str:
    """Validate one document; return which validator did it."""
    if kubernetes_validate is None:
        if doc["apiVersion"] in CORE_GROUPS:
            pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
        return _validate_with_project_schema(doc)
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        return f"kubernetes {K8S_VERSION}"
    except kubernetes_validate.SchemaNotFoundError:
        return _validate_with_project_schema(doc)


def _validate_with_project_schema(doc: dict) -> str:
    path = _schema_path(doc)
    try:
        with open(path, encoding="utf-8") as fh:
            schema = json.load(fh)
    except FileNotFoundError:
        pytest.skip(f"{doc['apiVersion']}/{doc['kind']}: not a core kind and no schema at {path}")
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    return path


@pytest.mark.parametrize("resource", ALL_RESOURCES, ids=lambda r: f"{r.source.name}:{r.kind}/{r.name}")
def test_resource_is_schema_valid(resource: Resource) -> None:
    errors = (jsonschema.ValidationError,) + ((kubernetes_validate.ValidationError,) if kubernetes_validate else ())
    try:
        _validate(resource.doc)
    except errors as exc:
        pytest.fail(f"{resource.source.name} {resource.kind}/{resource.name}: {exc.message} at {list(exc.path)}")


def test_every_non_core_kind_has_a_project_schema() -> None:
    """No resource is waved through: each kind is either known to Kubernetes or has a schema here."""
    if kubernetes_validate is None:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    missing = []
    for resource in ALL_RESOURCES:
        try:
            kubernetes_validate.validate(resource.doc, K8S_VERSION, strict=False)
        except kubernetes_validate.SchemaNotFoundError:
            if not Path(_schema_path(resource.doc)).exists():
                missing.append(f"{resource.doc['apiVersion']}/{resource.kind}")
        except kubernetes_validate.ValidationError:
            pass  # reported by test_resource_is_schema_valid
    assert not missing, f"kinds without a schema in openshift/schemas/: {sorted(set(missing))}"


def test_kustomization_matches_its_schema() -> None:
    with open(SCHEMAS_DIR / "kustomize.config.k8s.io-v1beta1-Kustomization.json", encoding="utf-8") as fh:
        schema = json.load(fh)
    jsonschema.validate(load_kustomization(KUSTOMIZATION), schema, cls=jsonschema.Draft202012Validator)


def test_validators_reject_broken_documents() -> None:
    """The validation above would notice a mistake (guards against a validator that accepts anything)."""
    if kubernetes_validate is None:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    deployment = next(r.doc for r in ALL_RESOURCES if r.kind == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)
    route = json.loads(json.dumps(next(r.doc for r in ALL_RESOURCES if r.kind == "Route")))
    route["spec"]["tls"]["termination"] = "edgy"
    with pytest.raises(jsonschema.ValidationError):
        _validate(route)


@pytest.mark.parametrize("version", OLDER_VERSIONS)
def test_core_kinds_are_valid_on_older_clusters(version: str) -> None:
    if kubernetes_validate is None:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    errors = []
    for resource in ALL_RESOURCES:
        if resource.doc["apiVersion"] not in CORE_GROUPS:
            continue
        try:
            kubernetes_validate.validate(resource.doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{resource.kind}/{resource.name}: {exc.message} at {list(exc.path)}")
    assert not errors, errors
