"""What an operator sees when a deployment's configuration is wrong, and the AWX CA bundle.

- A policy that names a host, environment or patch group the inventory does not have stops the start with a line
  that names the policy file, the key to change and the settings that chose the files.
- AWX_CA_BUNDLE (a PEM file or a directory of them) is trusted besides the public CAs, so an internal CA never
  needs AWX_VERIFY_TLS=false.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import httpx
import pytest

from core.settings import Settings, reset_settings_cache

from .render import REPO_ROOT

DEMO_POLICY = REPO_ROOT / "fixtures" / "policy.yml"
DEMO_GROUPS = REPO_ROOT / "fixtures" / "patch-groups.yml"


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Point the settings at files of a test's choosing; the caches are cleared before and after."""
    from core.inventory import load_catalog

    def use(policy: Path, inventory: Path, groups: Path = DEMO_GROUPS) -> None:
        monkeypatch.setenv("POLICY_FILE", str(policy))
        monkeypatch.setenv("INVENTORY_FILE", str(inventory))
        monkeypatch.setenv("PATCH_GROUPS_FILE", str(groups))
        reset_settings_cache()
        load_catalog.cache_clear()

    yield use
    monkeypatch.undo()
    reset_settings_cache()
    load_catalog.cache_clear()


def _inventory(tmp_path: Path) -> Path:
    """A real-looking fleet that has none of the demo's names."""
    path = tmp_path / "inventory.yml"
    path.write_text("all:\n  children:\n    site_a:\n      hosts:\n"
                    "        srv1.corp.example: {}\n        srv2.corp.example: {}\n")
    return path


def _exit_message(fleet_files) -> str:
    from core.inventory import check_catalog

    with pytest.raises(SystemExit) as excinfo:
        check_catalog()
    return str(excinfo.value)


def test_demo_policy_on_another_inventory_names_file_and_key(tmp_path: Path, fleet) -> None:
    inventory = _inventory(tmp_path)
    fleet(DEMO_POLICY, inventory)
    message = _exit_message(fleet)
    assert message.startswith("patchpilot cannot start: ")
    assert str(DEMO_POLICY) in message and "'never_patch_hosts'" in message and "jump-01" in message
    assert f"POLICY_FILE={DEMO_POLICY}" in message and f"INVENTORY_FILE={inventory}" in message


@pytest.mark.parametrize(("policy", "key"), [
    ("environments:\n  prod: {production: true}\n", "'environments'"),
    ("production_environments: [prod]\n", "'production_environments'"),
    ("reboot_allowed:\n  Nightly: false\n", "'reboot_allowed'"),
    ("max_hosts_per_request: 0\n", "max_hosts_per_request"),
])
def test_each_unknown_name_points_at_its_key(tmp_path: Path, fleet, policy: str, key: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\n" + policy)
    fleet(path, _inventory(tmp_path))
    message = _exit_message(fleet)
    assert str(path) in message and key in message, message
    assert "PATCH_GROUPS_FILE=" in message


def test_the_shipped_configmap_policy_starts_on_another_inventory(tmp_path: Path, fleet) -> None:
    import yaml

    docs = [d for d in yaml.safe_load_all((REPO_ROOT / "openshift" / "configmap.yaml").read_text()) if d]
    text = next(d for d in docs if d["metadata"]["name"] == "patchpilot-policy")["data"]["policy.yaml"]
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    groups = tmp_path / "groups.yml"
    groups.write_text("Monthly:\n  description: everything\n  job_template: Patch Linux\n")
    fleet(path, _inventory(tmp_path), groups)
    from core.inventory import check_catalog

    catalog = check_catalog()
    assert set(catalog.inventory.hosts) == {"srv1.corp.example", "srv2.corp.example"}


# ------------------------------------------------------------------------------------------- CA bundle


def _a_ca_pem() -> str:
    """One real CA certificate (from certifi's bundle): enough to load, no key or network needed."""
    text = Path(certifi.where()).read_text()
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return text[text.index("-----BEGIN CERTIFICATE-----"):end] + "\n"


def test_no_bundle_means_the_public_cas() -> None:
    assert Settings(awx_ca_bundle=None).awx_tls_verify() is True
    assert Settings(awx_ca_bundle="").awx_ca_bundle is None  # an empty variable (compose's ${X:-}) is unset
    assert Settings(awx_verify_tls=False, awx_ca_bundle="/nonexistent").awx_tls_verify() is False


def test_a_bundle_file_is_added_to_the_public_cas(tmp_path: Path) -> None:
    pem = tmp_path / "internal-ca.pem"
    pem.write_text(_a_ca_pem())
    context = Settings(awx_ca_bundle=str(pem)).awx_tls_verify()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    public = ssl.create_default_context(cafile=certifi.where()).cert_store_stats()["x509_ca"]
    assert context.cert_store_stats()["x509_ca"] >= public


def test_a_directory_reads_every_pem_and_crt(tmp_path: Path) -> None:
    """The OpenShift mount: the injected cluster bundle and an optional patchpilot-ca, in one directory."""
    (tmp_path / "cluster-ca-bundle.crt").write_text(_a_ca_pem())
    (tmp_path / "patchpilot-ca.crt").write_text(_a_ca_pem())
    (tmp_path / "README.md").write_text("not a certificate")
    (tmp_path / "..data").mkdir()  # kubelet's bookkeeping in a ConfigMap volume
    assert isinstance(Settings(awx_ca_bundle=str(tmp_path)).awx_tls_verify(), ssl.SSLContext)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert isinstance(Settings(awx_ca_bundle=str(empty)).awx_tls_verify(), ssl.SSLContext)


def test_a_broken_bundle_says_which_file(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="AWX_CA_BUNDLE.*ca.pem"):
        Settings(awx_ca_bundle=str(bad)).awx_tls_verify()
    with pytest.raises(ValueError, match="AWX_CA_BUNDLE.*missing.pem"):
        Settings(awx_ca_bundle=str(tmp_path / "missing.pem")).awx_tls_verify()


def test_the_awx_client_uses_the_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.awx_client import AWXClient

    pem = tmp_path / "ca.pem"
    pem.write_text(_a_ca_pem())
    seen = {}
    real = httpx.Client

    def client(*args, **kwargs):
        seen["verify"] = kwargs.get("verify")
        return real(*args, **kwargs)

    monkeypatch.setattr(httpx, "Client", client)
    settings = Settings(awx_url="https://awx.example.com/api/v2/", awx_token="t", awx_ca_bundle=str(pem))
    AWXClient.from_settings(settings).close()
    assert isinstance(seen["verify"], ssl.SSLContext)
    AWXClient.from_settings(Settings(awx_url="https://awx.example.com/api/v2/", awx_token="t")).close()
    assert seen["verify"] is True


def test_the_configmaps_settings_load_as_meant() -> None:
    """The ConfigMap's environment gives valid settings: an empty STAGE_MAP_FILE or AWX_INVENTORY means unset."""
    import yaml

    docs = [d for d in yaml.safe_load_all((REPO_ROOT / "openshift" / "configmap.yaml").read_text()) if d]
    data = next(d["data"] for d in docs if d["metadata"]["name"] == "patchpilot-config")
    settings = Settings(_env_file=None, **{k.lower(): v for k, v in data.items()
                                            if k in ("INVENTORY_SOURCE", "AWX_INVENTORY", "INVENTORY_SYNC_SECONDS",
                                                     "STAGE_MAP_FILE")})
    assert settings.inventory_source == "file" and settings.stage_map_file is None and settings.awx_inventory == ""
    assert Settings(_env_file=None, stage_map_file="  ").stage_map_file is None
