"""A small fleet built in the test itself, unlike the demo fleet: other names, other environments, FQDNs, a
site-env-role-number naming scheme next to legacy names, and descriptive patch groups."""

from __future__ import annotations

from core.inventory import Catalog, Inventory, PatchGroup
from core.policy import Policy


def _hosts(prefix: str, numbers: range, **host_vars) -> dict:
    return {f"{prefix}-{n:02d}": {"ansible_host": f"{prefix}-{n:02d}.corp.example.net", **host_vars} for n in numbers}


def small_fleet(**policy) -> Catalog:
    data = {"all": {"children": {
        "env_live": {"children": {
            "ber_live": {"hosts": {**_hosts("ber-lv-www", range(1, 4), os_family="Debian", owner="team-shop"),
                                   **_hosts("ber-lv-sql", range(1, 3), os_family="RedHat", owner="team-dba")}},
            "osl_live": {"hosts": {**_hosts("osl-lv-www", range(1, 3), os_family="RedHat", owner="team-shop"),
                                   "hydra": {"ansible_host": "hydra.legacy.example.org", "os_family": "RedHat",
                                             "owner": "team-legacy"}}},
        }},
        "env_qa": {"hosts": {**_hosts("ber-qa-www", range(1, 3), os_family="Debian", owner="team-shop"),
                             **_hosts("ber-qa-sql", range(1, 2), os_family="RedHat", owner="team-dba")}},
        "site_ber": {"children": {"ber_live": {}, "env_qa": {}}},
        "site_osl": {"children": {"osl_live": {}}},
        "web_tier": {"hosts": {h: {} for h in ["ber-lv-www-01", "ber-lv-www-02", "ber-lv-www-03", "osl-lv-www-01",
                                               "osl-lv-www-02", "ber-qa-www-01", "ber-qa-www-02"]}},
        "sql_tier": {"hosts": {h: {} for h in ["ber-lv-sql-01", "ber-lv-sql-02", "ber-qa-sql-01", "hydra"]}},
        "gateways": {"hosts": {"ber-lv-gw-01": {"os_family": "Debian", "patch_from_chat": False}}},
    }}}
    groups = {
        "sec-urgent": PatchGroup("sec-urgent", "Urgent security advisories", "Patch", {}, ("urgent security",)),
        "quarterly": PatchGroup("quarterly", "Everything, kernel included", "Patch", {}, ("full run",)),
    }
    settings = {"environments": {"env_live": {"production": True, "aliases": ["prod", "production"]},
                                 "env_qa": {"aliases": ["staging", "test"]}},
                "max_hosts_per_request": 8, "filter_variables": ["os_family", "owner"], **policy}
    return Catalog(inventory=Inventory.from_dict(data), patch_groups=groups, policy=Policy(**settings))
