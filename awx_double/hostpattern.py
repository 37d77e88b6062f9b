"""Resolve an Ansible `limit` host pattern against the demo inventory, the way ansible-playbook would.

The double must run a job on exactly the hosts the real controller would pick, including the dangerous cases
(an empty or dropped limit means the whole inventory), so that the worker's safety checks are exercised.
Supported: `all`, `*`, host and group names, globs (`web*`), `~regex`, separators `,` and `:`, `&` (intersection),
`!` (exclusion). Slices (`g[0:2]`) and `@file` match nothing.
"""

from __future__ import annotations

import fnmatch
import re

from core.inventory import Inventory


def _split(pattern: str) -> list[str]:
    # Ansible splits on ',' always and on ':' unless the pattern looks like an IPv6 address or a regex.
    terms: list[str] = []
    for chunk in pattern.split(","):
        chunk = chunk.strip()
        if chunk.startswith("~"):
            terms.append(chunk)
        else:
            terms.extend(part.strip() for part in chunk.split(":"))
    return [term for term in terms if term]


def _match_term(term: str, inventory: Inventory) -> set[str]:
    everything = set(inventory.hosts)
    if term in ("all", "*"):
        return everything
    if term.startswith("@") or re.search(r"\[\d*:?-?\d*\]$", term):
        return set()
    if term.startswith("~"):
        try:
            regex = re.compile(term[1:])
        except re.error:
            return set()
        names = {h for h in everything if regex.search(h)}
        return names | {h for g, members in inventory.groups.items() if regex.search(g) for h in members}
    if term in inventory.hosts:
        return {term}
    if term in inventory.groups:
        return set(inventory.groups[term])
    names = set(fnmatch.filter(everything, term))
    for group in fnmatch.filter(inventory.groups, term):
        names |= inventory.groups[group]
    return names


def resolve_limit(limit: str, inventory: Inventory) -> list[str]:
    """Sorted host names selected by `limit`; an empty limit selects the whole inventory."""
    if not limit.strip():
        return sorted(inventory.hosts)
    selected: set[str] = set()
    intersections: list[set[str]] = []
    exclusions: set[str] = set()
    for term in _split(limit):
        if term.startswith("!"):
            exclusions |= _match_term(term[1:], inventory)
        elif term.startswith("&"):
            intersections.append(_match_term(term[1:], inventory))
        else:
            selected |= _match_term(term, inventory)
    for other in intersections:
        selected &= other
    return sorted(selected - exclusions)
