"""`oc apply -k openshift/` renders: every file is listed, images are named only in the kustomization."""

from __future__ import annotations

from .render import (
    KUSTOMIZATION,
    OPENSHIFT_DIR,
    SECRETS_DIR,
    containers,
    load_kustomization,
    raw_workload_images,
    render,
    split_image,
)


def test_render_succeeds_and_is_not_empty() -> None:
    rendered = render()
    kinds = {r.kind for r in rendered.resources}
    assert {"Deployment", "StatefulSet", "Service", "Route", "ConfigMap", "Job", "NetworkPolicy"} <= kinds
    for name in ("patchpilot-api", "patchpilot-worker", "patchpilot-beat", "patchpilot-ui"):
        rendered.get("Deployment", name)


def test_every_manifest_file_is_listed() -> None:
    listed = {(OPENSHIFT_DIR / entry).resolve() for entry in load_kustomization()["resources"]}
    on_disk = {p.resolve() for p in OPENSHIFT_DIR.glob("*.y*ml") if p.name != KUSTOMIZATION.name}
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
