"""Generate a realistic fleet: an Ansible YAML inventory of N hosts, a patch-groups file and a policy file.

    .venv/bin/python -m bench.fleetgen --hosts 10000 --out /tmp/fleet

Writes DIR/inventory.yml, DIR/patch-groups.yml and DIR/policy.yml (the formats of fixtures/*.yml). The same
--hosts and --seed give byte-identical files.

Naming: `site-env-role-NN` (`fra-prd-web-01`; 5 sites, 4 environments, 12 roles; NN goes on to 100, 101, ...
where a site/environment/role has more than 99 hosts) plus about 1.5 % legacy short names (`mail01`, `ldap02`).
Every host has `ansible_host` (an FQDN) and the host variables os_family, os_version, site and owner. Groups,
nested with `children` the way Ansible inventories usually are:
- environments `env_prd`, `env_stg`, `env_dev`, `env_tst`, each with one child per role (`prd_web`, `stg_db`, ...)
  that holds the hosts and their variables;
- roles (`web`, `app`, `db`, ...) whose children are those environment-role groups;
- sites (`fra`, `ams`, ...) listing their hosts;
- operating systems `os_redhat` (children `rhel8`, `rhel9`) and `os_debian` (children `debian12`, `ubuntu2204`);
- `legacy` for the short-named hosts.
Three hosts carry `patch_from_chat: false` (the prd bastions of fra and ams and the legacy Oracle box ora01), and
the policy never patches fra-prd-bastion-01 either. The patch groups are Group-1..4 with `aliases`; the policy
has an `environments:` block (env_prd is production, each environment with aliases such as prod, staging, dev,
test), a maintenance window and a change freeze for env_prd, and Group-4 may not reboot.

Anchor hosts exist at every size from --hosts 50 up: fra-prd-web-01..04, fra-prd-app-01..03, fra-prd-db-01..02,
fra-stg-app-01..02, ams-prd-web-01, ams-prd-app-01, dub-prd-k8s-01..02, the two bastions, mail01, ldap01 and ora01.
So one fixed list of chat messages (bench/parse_scale.py) names the same hosts whatever the fleet's size.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import yaml

SITES = {"fra": 0.30, "ams": 0.25, "dub": 0.20, "iad": 0.15, "sgp": 0.10}
ENVIRONMENTS = {"prd": 0.40, "stg": 0.20, "dev": 0.25, "tst": 0.15}
ROLES = {"web": 0.20, "app": 0.20, "db": 0.12, "k8s": 0.12, "cache": 0.06, "mq": 0.06, "proxy": 0.05, "mon": 0.05,
         "log": 0.05, "lb": 0.04, "ci": 0.04, "bastion": 0.01}
OWNERS = {"web": "team-web", "app": "team-apps", "db": "team-dba", "k8s": "team-platform", "cache": "team-apps",
          "mq": "team-platform", "proxy": "team-network", "mon": "team-sre", "log": "team-sre", "lb": "team-network",
          "ci": "team-devex", "bastion": "team-security"}
# (os group, os_family, os_version, weight); databases run RHEL only.
OPERATING_SYSTEMS = [("rhel9", "RedHat", "9.4", 0.45), ("rhel8", "RedHat", "8.10", 0.25),
                     ("ubuntu2204", "Debian", "22.04", 0.20), ("debian12", "Debian", "12.7", 0.10)]
OS_PARENTS = {"os_redhat": ("rhel8", "rhel9"), "os_debian": ("debian12", "ubuntu2204")}
LEGACY_STEMS = ["mail", "ldap", "ora", "nas", "ftp", "wiki", "jira", "svn", "print", "ntp", "fax", "sap"]
LEGACY_SHARE = 0.015
# Present at every size, so that fixed messages name existing hosts: (site, env, role) -> at least this many.
ANCHORS = {("fra", "prd", "web"): 4, ("fra", "prd", "app"): 3, ("fra", "prd", "db"): 2, ("fra", "stg", "app"): 2,
           ("ams", "prd", "web"): 1, ("ams", "prd", "app"): 1, ("dub", "prd", "k8s"): 2,
           ("fra", "prd", "bastion"): 1, ("ams", "prd", "bastion"): 1}
NOT_FROM_CHAT = ("fra-prd-bastion-01", "ams-prd-bastion-01", "ora01")
MIN_HOSTS = 50  # the anchors (17), three legacy hosts, and some room for the weighted rest

PATCH_GROUPS = {
    "Group-1": {"description": "Security updates only (critical and important advisories)",
                "job_template": "Patch Linux",
                "extra_vars": {"update_scope": "security", "severities": ["Critical", "Important"]},
                "aliases": ["security only", "security updates only", "only security", "just security", "sec only",
                            "critical and important"]},
    "Group-2": {"description": "All security updates plus bug-fix advisories", "job_template": "Patch Linux",
                "extra_vars": {"update_scope": "security_bugfix"},
                "aliases": ["security and bugfix", "security and bug fixes", "security and bugfix updates",
                            "security plus bug fixes", "bugfix", "bug fixes", "monthly"]},
    "Group-3": {"description": "Full update to the latest packages, kernel included", "job_template": "Patch Linux",
                "extra_vars": {"update_scope": "full"},
                "aliases": ["full", "full update", "full upgrade", "including kernel", "kernel updates",
                            "all updates", "latest packages", "update everything"]},
    "Group-4": {"description": "Database hosts: security only, services stopped and started around the run",
                "job_template": "Patch Linux DB", "extra_vars": {"update_scope": "security", "stop_services": True},
                "aliases": ["db patching", "database patching"]},
}

# Which inventory groups are environments, what people call them, and which is production (four-eyes).
ENVIRONMENTS_BLOCK = {"env_prd": {"production": True, "aliases": ["prod", "production", "prd", "live"]},
                      "env_stg": {"production": False, "aliases": ["staging", "stage", "stg", "uat"]},
                      "env_dev": {"production": False, "aliases": ["dev", "development"]},
                      "env_tst": {"production": False, "aliases": ["test", "tst", "qa"]}}


class _Flow(dict):
    """Host variables: written on one line, `web-01: {os_family: RedHat, ...}`, as in fixtures/."""


class _FlowList(list):
    """A short list written on one line."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data,
                                                                             flow_style=True))
_Dumper.add_representer(_FlowList, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data,
                                                                                 flow_style=True))
# `web-01:` rather than `web-01: null` for a host listed without variables, as Ansible inventories are written.
_Dumper.add_representer(type(None), lambda dumper, _: dumper.represent_scalar("tag:yaml.org,2002:null", ""))


def _counts(total: int, weights: dict[tuple[str, str, str], float]) -> dict[tuple[str, str, str], int]:
    """Split `total` over the keys by weight (largest remainder), every anchor at least its minimum."""
    counts = {key: max(ANCHORS.get(key, 0), int(total * w)) for key, w in weights.items()}
    by_remainder = sorted(weights, key=lambda key: (-(total * weights[key] - int(total * weights[key])), key))
    i = 0
    while sum(counts.values()) < total:
        counts[by_remainder[i % len(by_remainder)]] += 1
        i += 1
    while sum(counts.values()) > total:  # the anchors' minimums pushed it over: take from the largest
        key = max(counts, key=lambda k: (counts[k] - ANCHORS.get(k, 0), k))
        counts[key] -= 1
    return counts


def _os_for(role: str, rng: random.Random) -> tuple[str, str, str]:
    choices = [o for o in OPERATING_SYSTEMS if role != "db" or o[1] == "RedHat"]
    group, family, version, _ = rng.choices(choices, weights=[o[3] for o in choices])[0]
    return group, family, version


def generate(hosts: int = 10_000, seed: int = 1) -> tuple[dict, dict, dict]:
    """-> (inventory, patch groups, policy) as YAML-ready dicts."""
    if hosts < MIN_HOSTS:
        raise ValueError(f"--hosts must be at least {MIN_HOSTS} (the anchor hosts alone take {sum(ANCHORS.values())})")
    rng = random.Random(seed)
    legacy_total = max(3, round(hosts * LEGACY_SHARE))
    weights = {(s, e, r): ws * we * wr for s, ws in SITES.items() for e, we in ENVIRONMENTS.items()
               for r, wr in ROLES.items()}
    counts = _counts(hosts - legacy_total, weights)

    env_role: dict[str, dict[str, dict[str, dict]]] = {e: {r: {} for r in ROLES} for e in ENVIRONMENTS}
    by_site: dict[str, list[str]] = {s: [] for s in SITES}
    by_os: dict[str, list[str]] = {o[0]: [] for o in OPERATING_SYSTEMS}
    for (site, env, role), count in counts.items():
        for n in range(1, count + 1):
            name = f"{site}-{env}-{role}-{n:02d}"  # -01 .. -99, then -100: the anchors keep their names at any size
            os_group, family, version = _os_for(role, rng)
            hvars = {"ansible_host": f"{name}.{site}.corp.example.com", "os_family": family, "os_version": version,
                     "site": site, "owner": OWNERS[role]}
            if name in NOT_FROM_CHAT:
                hvars["patch_from_chat"] = False
            env_role[env][role][name] = _Flow(hvars)
            by_site[site].append(name)
            by_os[os_group].append(name)

    legacy: dict[str, dict] = {}
    for i in range(legacy_total):
        stem, number = LEGACY_STEMS[i % len(LEGACY_STEMS)], i // len(LEGACY_STEMS) + 1
        name = f"{stem}{number:02d}"
        site = "fra" if i < 3 else rng.choices(list(SITES), weights=list(SITES.values()))[0]
        env = "prd" if i < 3 else rng.choices(list(ENVIRONMENTS), weights=list(ENVIRONMENTS.values()))[0]
        os_group, family, version = ("rhel8", "RedHat", "8.10") if i < 3 else _os_for("legacy", rng)
        hvars = {"ansible_host": f"{name}.{site}.legacy.example.com", "os_family": family, "os_version": version,
                 "site": site, "owner": "team-it"}
        if name in NOT_FROM_CHAT:
            hvars["patch_from_chat"] = False
        legacy[name] = {"env": env, "vars": _Flow(hvars)}
        by_site[site].append(name)
        by_os[os_group].append(name)

    children: dict[str, dict] = {}
    for env in ENVIRONMENTS:
        env_children = {f"{env}_{role}": {"hosts": members} for role, members in env_role[env].items() if members}
        legacy_here = {name: body["vars"] for name, body in legacy.items() if body["env"] == env}
        body: dict = {"children": env_children}
        if legacy_here:
            body["hosts"] = legacy_here
        children[f"env_{env}"] = body
    for role in ROLES:
        children[role] = {"children": {f"{env}_{role}": None for env in ENVIRONMENTS if env_role[env][role]}}
    children["legacy"] = {"hosts": dict.fromkeys(legacy)}
    for site, members in by_site.items():
        children[site] = {"hosts": dict.fromkeys(members)}
    for parent, kids in OS_PARENTS.items():
        children[parent] = {"children": {kid: {"hosts": dict.fromkeys(by_os[kid])} for kid in kids if by_os[kid]}}
    inventory = {"all": {"vars": {"ansible_user": "patcher", "ansible_python_interpreter": "auto_silent"},
                         "children": children}}

    policy = {
        "version": 1,
        "never_patch_hosts": ["fra-prd-bastion-01"],
        "max_hosts_per_request": 50,
        "environments": {name: _Flow(body) for name, body in ENVIRONMENTS_BLOCK.items()},
        "allow_self_approval_non_production": True,
        "maintenance_windows": [
            _Flow({"name": "prd weekend nights", "days": ["sat", "sun"], "start": "01:00", "end": "05:00",
                   "timezone": "Europe/Berlin", "environments": ["env_prd"]}),
        ],
        "change_freezes": [
            _Flow({"name": "year-end", "start": "2026-12-20T00:00:00Z", "end": "2027-01-04T00:00:00Z",
                   "environments": ["env_prd"]}),
        ],
        "reboot_allowed": {"Group-1": True, "Group-2": True, "Group-3": True, "Group-4": False},
    }
    patch_groups = {name: {**body, "extra_vars": _Flow(body["extra_vars"]), "aliases": _FlowList(body["aliases"])}
                    for name, body in PATCH_GROUPS.items()}
    return inventory, patch_groups, policy


def _dump(data: dict) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=160)


def write(out: Path, hosts: int = 10_000, seed: int = 1) -> dict[str, Path]:
    """Write the three files into `out`; -> {"inventory": path, "patch_groups": path, "policy": path}."""
    inventory, patch_groups, policy = generate(hosts, seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"inventory": out / "inventory.yml", "patch_groups": out / "patch-groups.yml", "policy": out / "policy.yml"}
    header = f"# Generated by `python -m bench.fleetgen --hosts {hosts} --seed {seed}`; do not edit.\n"
    paths["inventory"].write_text(header + "# Ansible YAML inventory: environments, roles, sites and OS groups.\n"
                                  + _dump(inventory))
    paths["patch_groups"].write_text(header + _dump(patch_groups))
    paths["policy"].write_text(header + _dump(policy))
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleetgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=10_000, help="number of hosts (default 10000)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the three files")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        paths = write(args.out, args.hosts, args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    for path in paths.values():
        print(path)


if __name__ == "__main__":
    main()
