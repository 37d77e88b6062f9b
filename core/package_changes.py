"""Which packages a run changed on a host or, in a dry run, would change: read from the results of the package
manager tasks of whatever playbook the job template runs (no task names assumed, only the module's result shape).

- apt: check mode prints apt-get's simulation ("Inst libssl3 [3.0.15-1] (3.0.17-1 Debian-Security:12/... [amd64])",
  as in the recorded stream awx_double/streams/success.json); a real run prints dpkg's "Unpacking libssl3:amd64
  (3.0.17-1) over (3.0.15-1) ..." and "Setting up ..." lines.
- dnf / dnf5 / yum (ansible-core's modules): `results` holds "Installed: <nevra>" and "Removed: <nevra>" lines, in
  check mode too; an upgrade is the new package installed and the old one removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_PACKAGES_PER_HOST = 500

_APT = frozenset({"apt"})
_RPM = frozenset({"dnf", "dnf5", "yum"})
_APT_SIMULATED = re.compile(r"^Inst (?P<name>\S+) (?:\[(?P<old>[^\]]+)\] )?\((?P<new>\S+)")
_DPKG_UNPACKING = re.compile(r"^Unpacking (?P<name>\S+) \((?P<new>[^)]+)\)(?: over \((?P<old>[^)]+)\))?")
_RPM_LINE = re.compile(r"^(?P<verb>Installed|Removed): (?P<nevra>\S+)$")
_NEVRA = re.compile(r"^(?P<name>.+)-(?:\d+:)?(?P<version>[^-]+-[^-]+)\.(?P<arch>[^.]+)$")


@dataclass(frozen=True)
class PackageChange:
    name: str
    old: str | None  # None: newly installed
    new: str | None  # None: removed

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "old": self.old, "new": self.new}


def module_name(resolved_action: str | None) -> str:
    """'ansible.builtin.apt' -> 'apt'; 'ansible.legacy.dnf' -> 'dnf'."""
    return (resolved_action or "").rsplit(".", 1)[-1]


def package_changes(resolved_action: str | None, result: Mapping[str, Any]) -> list[PackageChange]:
    """The package changes in one task result; [] for any other module or a result without them."""
    module = module_name(resolved_action)
    if module in _APT:
        return _apt_changes(_lines(result.get("stdout_lines"), result.get("stdout")))
    if module in _RPM:
        results = result.get("results")
        return _rpm_changes(r for r in results if isinstance(r, str)) if isinstance(results, list) else []
    return []


def merge(known: Iterable[Mapping[str, Any]], new: Iterable[PackageChange]) -> list[dict[str, str | None]]:
    """A host's list so far plus one task's changes: one entry per package (the later task wins), capped."""
    merged = {str(p["name"]): dict(p) for p in known if isinstance(p, Mapping) and p.get("name")}
    for change in new:
        merged[change.name] = change.as_dict()
    return list(merged.values())[:MAX_PACKAGES_PER_HOST]


def _lines(lines: Any, text: Any) -> list[str]:
    if isinstance(lines, list):
        return [line for line in lines if isinstance(line, str)]
    return text.splitlines() if isinstance(text, str) else []


def _apt_changes(lines: list[str]) -> list[PackageChange]:
    changes: dict[str, PackageChange] = {}
    for line in lines:
        match = _APT_SIMULATED.match(line) or _DPKG_UNPACKING.match(line)
        if match:
            name = match["name"].split(":", 1)[0]  # dpkg names carry the architecture: libssl3:amd64
            changes[name] = PackageChange(name, match["old"], match["new"])
    return list(changes.values())


def _rpm_changes(lines: Iterable[str]) -> list[PackageChange]:
    installed: dict[str, str] = {}
    removed: dict[str, str] = {}
    for line in lines:
        match = _RPM_LINE.match(line.strip())
        nevra = _NEVRA.match(match["nevra"]) if match else None
        if match and nevra:
            (installed if match["verb"] == "Installed" else removed)[nevra["name"]] = nevra["version"]
    names = list(dict.fromkeys([*installed, *removed]))
    return [PackageChange(name, removed.get(name), installed.get(name)) for name in names]
