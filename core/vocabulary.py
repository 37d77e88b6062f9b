"""Everything a fleet's own data lets people call things, derived from the catalog; no name is written in code.

- hosts: the inventory name (case and separators ignored when that stays unique), the FQDN in `ansible_host`,
  the first label of an FQDN, and short forms: the tail of a structured name ('www-01' for 'fra1-prd-www-01'),
  which resolve only when one host ends that way in the scope the message gives;
- groups: the name with its words split on '_', '-', '.', plural and singular, joined ('web_frontend' ->
  'web frontend', 'web frontends', 'webfrontend'), the aliases the policy gives environments, the language's
  synonyms ('database' for 'db'), and any part of a group name that no other group shares ('fra1' for
  'site_fra1');
- host variables listed in the policy's `filter_variables` ('Debian' -> os_family=Debian);
- patch groups: their names, their `aliases:`, and '<group word> N' for numbered names ('grp 2' -> 'group 2').

A phrase that fits several things of the same rank is ambiguous and the caller asks; it is never guessed.
"""

from __future__ import annotations

import bisect
import fnmatch
import itertools
import re
import unicodedata
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

from rapidfuzz import fuzz, process

from core.language import Language, load_language

if TYPE_CHECKING:
    from core.inventory import Catalog, Inventory
    from core.policy import Policy

MAX_PHRASE_WORDS = 4
_SPLIT = re.compile(r"[-_.\s/]+")
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)


@lru_cache(maxsize=65536)
def fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).strip().lower()


@lru_cache(maxsize=65536)
def compact(text: str) -> str:
    """Separator-free key: 'Web_01' and 'www-01' -> 'web01'."""
    return _SPLIT.sub("", fold(text))


@lru_cache(maxsize=65536)
def phrase(text: str) -> str:
    """Words joined by one space: 'web_frontend' -> 'web frontend'."""
    return " ".join(w for w in _SPLIT.split(fold(text)) if w)


def inflections(word: str) -> set[str]:
    forms = {word}
    if len(word) > 1 and not word[-1].isdigit():
        forms.add(word + "s")
    if len(word) > 2 and not word[-1].isdigit():
        forms.add(word + "es")
        if word.endswith("es") and len(word) > 4:
            forms.add(word[:-2])
        if word.endswith("s") and len(word) > 3:
            forms.add(word[:-1])
    return forms


@dataclass(frozen=True)
class Meaning:
    kind: str  # host | group | attribute | patch_group
    value: str
    key: str | None = None  # attribute: the host variable


class _Ranked:
    """phrase -> meanings, where a phrase keeps only the meanings of the best rank it was given."""

    def __init__(self) -> None:
        self.rank: dict[str, int] = {}
        self.meanings: dict[str, set[Meaning]] = defaultdict(set)

    def add(self, text: str, meaning: Meaning, rank: int) -> None:
        if not text:
            return
        current = self.rank.get(text)
        if current is None or rank < current:
            self.rank[text] = rank
            self.meanings[text] = {meaning}
        elif rank == current:
            self.meanings[text].add(meaning)


@dataclass
class Vocabulary:
    all_hosts: frozenset[str]
    host_keys: dict[str, str]  # compact name / FQDN / first label -> host (unique ones only)
    host_tails: dict[str, frozenset[str]]  # compact tail of a structured name -> hosts
    phrases: dict[str, frozenset[Meaning]]  # group, attribute and patch-group phrases
    phrase_rank: dict[str, int]  # 0 a name, 1 an alias, 2 a synonym, 3 a part of a name, 4 a host variable value,
    # 5 a word of host names ('pg' for the hosts named '*-pg-*')
    group_members: dict[str, frozenset[str]]
    environments: dict[str, bool]  # environment group -> production?
    dimensions: dict[str, str]  # group -> environment | role | <prefix>
    whole_fleet: frozenset[str]
    attribute_values: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    patch_group_starts: frozenset[str] = frozenset()  # first words of patch-group phrases (a fast pre-check)
    described: dict[str, frozenset[str]] = field(default_factory=dict)  # word of a description -> patch groups

    # --- hosts -----------------------------------------------------------------------------------------------
    def host(self, raw: str) -> str | None:
        """The one host this name means exactly (full name, FQDN, first label), else None."""
        return self.host_keys.get(compact(raw)) or None

    def hosts_ending(self, raw: str) -> frozenset[str]:
        """Hosts whose structured name ends with this short form (the caller narrows them by scope)."""
        return self.host_tails.get(compact(raw), frozenset())

    # --- groups and attributes ---------------------------------------------------------------------------------
    def lookup(self, text: str) -> frozenset[Meaning]:
        return self.phrases.get(phrase(text), frozenset())

    def is_derived(self, text: str) -> bool:
        """True for phrases only derived from parts of names or from host variables (weaker than a word of the
        language: 'new' in 'web_new' never hides the word 'new')."""
        return self.phrase_rank.get(phrase(text), 0) >= 3

    def groups(self, raw: str) -> set[str]:
        if fold(raw) in self.group_members:
            return {fold(raw)}
        return {m.value for m in self.lookup(raw) if m.kind == "group"}

    def group_hosts(self, group: str) -> frozenset[str]:
        return self.group_members.get(group, frozenset())

    def hosts_with(self, key: str, value: str) -> frozenset[str]:
        return self.attribute_values.get((key, fold(value)), frozenset())

    def is_whole_fleet(self, raw: str) -> bool:
        return phrase(raw) in self.whole_fleet

    def environment_of(self, host: str) -> str | None:
        for env in self.environments:
            if host in self.group_members.get(env, ()):
                return env
        return None

    def dimension(self, meaning: Meaning) -> str:
        if meaning.kind == "attribute":
            return f"attribute:{meaning.key}"
        if meaning.kind == "group":
            return self.dimensions.get(meaning.value, "role")
        return meaning.kind

    def suggest(self, raw: str, limit: int = 3) -> list[str]:
        """'Did you mean' names: first among the names that start like it (a typo rarely hits the first letters;
        on a large fleet that is a small slice), else among all."""
        query = fold(raw)
        names = self.sorted_lower
        start = bisect.bisect_left(names, query[:2])
        end = bisect.bisect_left(names, query[:2] + "\uffff")
        for choices in (names[start:end], names):
            matches = process.extract(query, choices, scorer=fuzz.ratio, limit=limit, score_cutoff=60, processor=None)
            if matches:
                return [self.by_lower[m[0]] for m in matches]
        return []

    def glob(self, pattern: str) -> set[str]:
        """Hosts whose name matches a shell-style pattern, case ignored."""
        pattern = fold(pattern)
        match = re.compile(fnmatch.translate(pattern)).match
        prefix = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        names = self.sorted_lower
        start = bisect.bisect_left(names, prefix)  # only names that start with the literal prefix can match
        found = set()
        for name in itertools.islice(names, start, None):
            if not name.startswith(prefix):
                break
            if match(name):
                found.add(self.by_lower[name])
        return found

    @cached_property
    def by_lower(self) -> dict[str, str]:
        return {h.lower(): h for h in self.all_hosts}

    @cached_property
    def sorted_lower(self) -> list[str]:
        return sorted(self.by_lower)

    # --- building ------------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, catalog: Catalog, language: Language | None = None) -> Vocabulary:
        """Every phrase people may use for the fleet's hosts, groups, host-variable values and patch groups, each
        ranked: a name beats an alias, an alias a synonym, and so on (see `phrase_rank`)."""
        language = language or load_language()
        inventory, policy = catalog.inventory, catalog.policy
        exact, tails = _host_keys(inventory)
        groups: dict[str, frozenset[str]] = {g: m for g, m in inventory.groups.items()
                                             if g not in ("all", "ungrouped")}
        environments = _environments(groups, policy, language)
        ranked = _Ranked()
        _add_group_phrases(ranked, groups, policy, language.synonyms)
        values = _attribute_values(inventory, policy)
        _add_attribute_phrases(ranked, values, policy, language.synonyms)
        _add_host_name_words(ranked, groups, inventory, language.synonyms)
        described = _add_patch_group_phrases(ranked, catalog, language)
        for text, meanings in ranked.meanings.items():  # 'redhat' for os_redhat and its children os_rhel8, os_rhel9
            found = {m.value for m in meanings if m.kind == "group"}
            if len(found) > 1 and len(found) == len(meanings):
                ranked.meanings[text] = {Meaning("group", g) for g in _outermost(found, groups)}
        return cls(
            all_hosts=frozenset(inventory.hosts), host_keys=exact,
            host_tails={k: frozenset(v) for k, v in tails.items()},
            phrases={k: frozenset(v) for k, v in ranked.meanings.items()}, phrase_rank=dict(ranked.rank),
            group_members={g: frozenset(m) for g, m in groups.items()}, environments=environments,
            dimensions=_dimensions(groups, environments), whole_fleet=language.words["whole_fleet"],
            attribute_values={k: frozenset(v) for k, v in values.items()},
            patch_group_starts=frozenset(text.split()[0] for text, meanings in ranked.meanings.items()
                                         if any(m.kind == "patch_group" for m in meanings)),
            described={k: frozenset(v) for k, v in described.items()},
        )


def _host_keys(inventory: Inventory) -> tuple[dict[str, str], dict[str, set[str]]]:
    """(compact name, FQDN or first label -> the one host it names; compact tail of a structured name -> the
    hosts it may stand for). A key typed for two hosts ('web01') is a short form, resolved by scope."""
    keys: dict[str, set[str]] = defaultdict(set)
    tails: dict[str, set[str]] = defaultdict(set)
    for name, host in inventory.hosts.items():
        keys[compact(name)].add(name)
        fqdn = str(host.vars.get("ansible_host") or "")
        for full in {name, fqdn} - {""}:
            if not re.fullmatch(r"[\d.]+|[\da-f:]+", full):  # an IP address is not a name people type
                keys[compact(full)].add(name)
                if "." in full:
                    keys[compact(full.split(".")[0])].add(name)
        parts = [p for p in re.split(r"[-_]+", fold(name.split(".")[0])) if p]
        for start in range(1, len(parts)):
            tail = parts[start:]
            if any(re.search(r"[a-z]", p) for p in tail) and any(re.search(r"\d", p) for p in tail):
                tails["".join(tail)].add(name)
    exact = {k: next(iter(v)) for k, v in keys.items() if len(v) == 1}
    for key, names in keys.items():
        if len(names) > 1:
            tails[key] |= names
    return exact, tails


def _add_group_phrases(ranked: _Ranked, groups: Mapping[str, frozenset[str]], policy: Policy,
                       synonyms: tuple[frozenset[str], ...]) -> None:
    """Group names (rank 0), the policy's environment aliases (1), synonyms of group names (2), and a part of a
    group name no other group has (3)."""
    for group in groups:
        for text in _forms(phrase(group)):
            ranked.add(text, Meaning("group", group), 0)
    for env, spec in policy.environments.items():
        for alias in spec.aliases:
            for text in _forms(phrase(alias)):
                ranked.add(text, Meaning("group", env), 1)
    for group in groups:
        for text in _synonym_forms(phrase(group), synonyms):
            ranked.add(text, Meaning("group", group), 2)
    for sub, owners in _unique_parts(groups).items():
        for group in _outermost(owners, groups):
            for text in _forms(sub) | _synonym_forms(sub, synonyms):
                ranked.add(text, Meaning("group", group), 3)


def _attribute_values(inventory: Inventory, policy: Policy) -> dict[tuple[str, str], set[str]]:
    """(filter variable, folded value) -> the hosts that have it."""
    values: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name, host in inventory.hosts.items():
        for key in policy.filter_variables:
            value = host.vars.get(key)
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                values[(key, fold(str(value)))].add(name)
    return values


def _add_attribute_phrases(ranked: _Ranked, values: Mapping[tuple[str, str], set[str]], policy: Policy,
                           synonyms: tuple[frozenset[str], ...]) -> None:
    """A host-variable value (rank 4), and a part of it no other value of the variable has."""
    for key in policy.filter_variables:
        own: dict[str, set[str]] = {value: set() for (k, value) in values if k == key}
        for value in own:  # 'netsec' for 'team-netsec' when no other value of the variable has it
            own[value] = set(_unique_parts({value: None}))
        for (k, value) in values:
            if k != key or re.fullmatch(r"[\d.]+", value) or len(value) < 2:
                continue  # '12' alone is not a filter anyone types without the variable's name
            meaning = Meaning("attribute", value, key)
            others = set().union(*(parts for v, parts in own.items() if v != value))
            texts = {phrase(value)} | {p for p in own[value] if p not in others}
            for text in set().union(*(_forms(t) | _synonym_forms(t, synonyms) for t in texts)):
                ranked.add(text, meaning, 4)


def _add_host_name_words(ranked: _Ranked, groups: dict[str, frozenset[str]], inventory: Inventory,
                         synonyms: tuple[frozenset[str], ...]) -> None:
    """Words of structured host names (three parts or more) that no group carries ('pg' in 'fra1-prd-pg-01'):
    a group of the hosts named so (rank 5), added to `groups`."""
    named_like: dict[str, set[str]] = defaultdict(set)
    for name in inventory.hosts:
        parts = [p for p in re.split(r"[-_]+", fold(name.split(".")[0])) if p]
        if len(parts) > 2:
            for part in parts:
                if re.search(r"[a-z]", part) and len(part) > 1:
                    named_like[part].add(name)
    for part, members in named_like.items():
        if part not in groups and part not in ranked.rank:
            groups[part] = frozenset(members)
            for text in _forms(part) | _synonym_forms(part, synonyms):
                ranked.add(text, Meaning("group", part), 5)


def _add_patch_group_phrases(ranked: _Ranked, catalog: Catalog, language: Language) -> dict[str, set[str]]:
    """Patch-group names as people say them (rank 0) and their aliases (1). Returns word of a description or
    alias -> the patch groups it describes."""
    described: dict[str, set[str]] = defaultdict(set)
    for pg_name, pg in catalog.patch_groups.items():
        for word in re.findall(r"[a-z]+", " ".join((pg.description, *pg.aliases)).lower()):
            described[word].add(pg_name)
        meaning = Meaning("patch_group", pg_name)
        for text in _patch_group_forms(pg_name, language):
            ranked.add(text, meaning, 0)
        for alias in pg.aliases:
            for text in {phrase(alias)} | _synonym_forms(phrase(alias), language.synonyms):
                ranked.add(text, meaning, 1)
    return described


def _forms(text: str) -> set[str]:
    """A phrase with its last word inflected, and joined without spaces."""
    words = text.split()
    if not words:
        return set()
    forms = {" ".join([*words[:-1], last]) for last in inflections(words[-1])}
    return forms | {f.replace(" ", "") for f in forms}


def _synonym_forms(text: str, synonyms: tuple[frozenset[str], ...]) -> set[str]:
    """Replace one word (or the whole phrase) by each of its synonyms: 'db' -> 'database', 'databases'."""
    words = text.split()
    out: set[str] = set()
    for group in synonyms:
        if text in group:
            for other in group:
                out |= _forms(other)
        for i, word in enumerate(words):
            if word in group and len(words) > 1:
                for other in group:
                    out |= _forms(" ".join([*words[:i], other, *words[i + 1:]]))
    return out


def _unique_parts(groups: Mapping[str, object]) -> dict[str, set[str]]:
    """Contiguous parts of multi-word group names -> the groups that have them (one owner: an alias)."""
    owners: dict[str, set[str]] = defaultdict(set)
    for group in groups:
        words = phrase(group).split()
        for size in range(1, len(words)):
            for start in range(0, len(words) - size + 1):
                part = " ".join(words[start:start + size])
                if re.search(r"[a-z]", part) and len(part) > 1:
                    owners[part].add(group)
        for word in words:  # 'ubuntu22' -> 'ubuntu'
            stem = re.sub(r"\d+$", "", word)
            if stem != word and len(stem) > 2:
                owners[stem].add(group)
    return owners


def _outermost(owners: set[str], groups: Mapping[str, frozenset[str]]) -> set[str]:
    """Of several groups that share a part of their names ('fra1' in 'site_fra1' and 'fra1_production'), the one
    that holds all the others' hosts; none: they stay ambiguous."""
    if len(owners) < 2:
        return owners
    for group in sorted(owners, key=lambda g: (len(g), g)):  # of equals, the plainest name ('site_fra1')
        if all(groups[other] <= groups[group] for other in owners):
            return {group}
    return owners


def _patch_group_forms(name: str, language: Language) -> set[str]:
    forms = _forms(phrase(name))
    match = re.fullmatch(r"(.*?)[\s_-]*(\d+)", name.lower())
    if match and phrase(match.group(1)) in language.words["patch_group_words"]:
        number = str(int(match.group(2)))
        for word in language.words["patch_group_words"]:
            forms |= {f"{word} {number}", f"{word}{number}"}
        for spelled, digit in language.numbers.items():
            if digit == number:
                forms |= {f"{word} {spelled}" for word in language.words["patch_group_words"]}
    return forms


def _environments(groups: Mapping[str, object], policy: Policy, language: Language) -> dict[str, bool]:
    """The policy's `environments`, else the groups whose name is an environment word of some language."""
    if policy.environments:
        return {env: spec.production for env, spec in policy.environments.items() if env in groups}
    words = language.words["environment_words"]
    found = {g: g in policy.production_environments for g in groups if phrase(g) in words
             or (len(phrase(g).split()) == 2 and phrase(g).split()[1] in words)}
    return found


def _dimensions(groups: Mapping[str, object], environments: dict[str, bool]) -> dict[str, str]:
    """Environment groups, prefix families ('site_fra1', 'site_ams2' -> 'site') and roles (everything else)."""
    prefixes: dict[str, int] = defaultdict(int)
    for group in groups:
        words = phrase(group).split()
        if len(words) > 1:
            prefixes[words[0]] += 1
    out = {}
    for group in groups:
        words = phrase(group).split()
        if group in environments:
            out[group] = "environment"
        elif len(words) > 1 and prefixes[words[0]] > 1 and words[0] not in groups:
            out[group] = words[0]
        else:
            out[group] = "role"
    return out
