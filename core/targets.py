"""Targets as a set expression: which hosts a request is about.

A `TargetExpr` is a union of selections minus a union of selections; a selection is the hosts that match every
one of its terms (an intersection). "prod web servers and pg-01, except www-02" is
include [{prod, web}, {pg-01}], exclude [{www-02}].

The expression is what a parser (the rules parser or the model) proposes: names as written, never trusted.
`evaluate` resolves it against the fleet's vocabulary, fail-closed: a name that is unknown or ambiguous is
reported, never guessed, and an exclusion that does not resolve stops the request (skipping it would patch a host
the user meant to leave out).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.vocabulary import Vocabulary

TermKind = Literal["name", "attribute", "glob", "all"]
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
# What a name from a parser may look like. Anything else ('!all', 'a:&b', '~regex', '@file', 'web*,db*', '[1-4]')
# is Ansible pattern syntax and is reported as unknown instead of being interpreted.
SAFE_NAME_INPUT = re.compile(r"^[A-Za-z0-9._ -]+$")
SAFE_GLOB_INPUT = re.compile(r"^[A-Za-z0-9._*?-]+$")


class Term(BaseModel):
    """One condition on hosts. `name`: a host or an inventory group (or one of their aliases), as written.
    `attribute`: a host variable equal to a value (`key`=`value`). `glob`: a shell-style pattern the user typed.
    `all`: the whole fleet."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: TermKind = "name"
    value: str = Field(default="", max_length=253)
    key: str | None = Field(default=None, max_length=100, description="attribute only: the host variable")

    def label(self) -> str:
        if self.kind == "all":
            return "the whole fleet"
        return self.value


class Selection(BaseModel):
    """The hosts that match every term."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    terms: list[Term] = Field(min_length=1, max_length=10)

    def label(self) -> str:
        return " ∩ ".join(t.label() for t in self.terms)


class TargetExpr(BaseModel):
    """(union of `include`) minus (union of `exclude`)."""

    model_config = ConfigDict(extra="forbid")
    include: list[Selection] = Field(default_factory=list, max_length=200)
    exclude: list[Selection] = Field(default_factory=list, max_length=200)

    @property
    def is_empty(self) -> bool:
        return not self.include and not self.exclude

    def describe(self) -> str:
        """In words: 'prod ∩ Debian + pg-01, except lb-01, lb-02'."""
        text = " + ".join(s.label() for s in self.include) or "nothing"
        if self.exclude:
            text += ", except " + ", ".join(s.label() for s in self.exclude)
        return text

    def named_values(self) -> set[str]:
        return {t.value for s in (*self.include, *self.exclude) for t in s.terms}


def name(value: str) -> Selection:
    return Selection(terms=[Term(kind="name", value=value)])


def from_fields(hosts: Sequence[str] = (), groups: Sequence[str] = (), within: Sequence[str] = (),
                exclude: Sequence[str] = ()) -> TargetExpr:
    """The flat form (hosts UNION groups, group and glob matches narrowed to `within`, minus `exclude`)."""
    scope = [Term(value=w) for w in within]
    include: list[Selection] = []
    for raw in hosts:
        kind = "glob" if _is_glob(raw) else "name"
        include.append(Selection(terms=[Term(kind=kind, value=raw), *(scope if kind == "glob" else [])]))
    for raw in groups:
        include.append(Selection(terms=[Term(value=raw), *scope]))
    if not hosts and not groups and scope:
        include.append(Selection(terms=scope))
    excluded = [Selection(terms=[Term(kind="glob" if _is_glob(raw) else "name", value=raw)]) for raw in exclude]
    return TargetExpr(include=include, exclude=excluded)


def _is_glob(raw: str) -> bool:
    return bool(re.search(r"[*?\[\]]", raw))


def clean_name(raw: str) -> str:
    """Fold width and drop invisible characters. Homoglyphs (Cyrillic 'е') are NOT folded: they match nothing."""
    return unicodedata.normalize("NFKC", raw).translate(_ZERO_WIDTH).strip()


# --- evaluation -------------------------------------------------------------------------------------------------

@dataclass
class Resolution:
    """What an expression resolves to, and everything that stops it from being used as it is."""

    hosts: set[str] = field(default_factory=set)
    named: set[str] = field(default_factory=set)  # hosts the user named one by one
    unknown: list[str] = field(default_factory=list)  # names that are nothing in the fleet
    suggestions: dict[str, list[str]] = field(default_factory=dict)  # unknown or ambiguous name -> candidates
    ambiguous: list[str] = field(default_factory=list)  # names that fit several hosts or groups
    empty: list[str] = field(default_factory=list)  # selections that match no host
    too_broad: bool = False  # the whole fleet, or a glob that matches everything
    refused_only: list[str] = field(default_factory=list)  # selections whose every host policy keeps out

    @property
    def problems(self) -> bool:
        return bool(self.unknown or self.ambiguous or self.empty or self.too_broad)

    def _unknown(self, raw: str, vocabulary: Vocabulary) -> None:
        if raw not in self.unknown:
            self.unknown.append(raw)
        hint = vocabulary.suggest(raw) if SAFE_NAME_INPUT.match(raw) and raw.isascii() else []
        if hint:
            self.suggestions[raw] = hint


def evaluate(expr: TargetExpr, vocabulary: Vocabulary, refused: AbstractSet[str] = frozenset()) -> Resolution:
    out = Resolution()
    for selection in expr.include:
        hosts, single = _select(selection, vocabulary, out, complement=bool(expr.exclude))
        if hosts is None:
            continue
        if not hosts:
            out.empty.append(selection.label())
            continue
        if hosts <= refused:
            out.refused_only.append(selection.label())
        out.hosts |= hosts
        if single:
            out.named |= hosts
    for selection in expr.exclude:
        hosts, _ = _select(selection, vocabulary, out, complement=False, among=out.hosts)
        if hosts:
            out.hosts -= hosts
            out.named -= hosts
    return out


def _select(selection: Selection, vocabulary: Vocabulary, out: Resolution, complement: bool,
            among: set[str] | None = None) -> tuple[set[str] | None, bool]:
    """The hosts of one selection (None: it could not be resolved, already reported), and whether it names one
    host by name. The whole fleet alone is too broad, unless something is excluded from it ("everything that is
    not prod": the policy's host limit still applies). `among`: for an exclusion, the hosts included so far; a
    short form there means the one included host it fits ("drop k8s-02")."""
    every = vocabulary.all_hosts
    scope: set[str] = set(every)
    names: list[tuple[str, AbstractSet[str], bool]] = []  # (as written, candidates, named in full)
    for term in selection.terms:
        raw = clean_name(term.value)
        if term.kind == "all" or vocabulary.is_whole_fleet(raw):
            if len(selection.terms) == 1 and not complement:
                out.too_broad = True
                return None, False
            continue  # "all prod servers": 'all' narrows nothing
        if term.kind == "attribute":
            scope &= vocabulary.hosts_with(term.key or "", raw)
        elif term.kind == "glob":
            if not SAFE_GLOB_INPUT.match(raw):
                out._unknown(raw, vocabulary)
                return None, False
            matched = vocabulary.glob(raw)
            if matched == every or not re.search(r"[a-z0-9]", raw.lower()):
                out.too_broad = True
                return None, False
            if not matched:
                out._unknown(raw, vocabulary)
                return None, False
            scope &= matched
        else:
            if not raw or not SAFE_NAME_INPUT.match(raw):
                out._unknown(raw, vocabulary)
                return None, False
            exact = vocabulary.host(raw)
            if exact:
                names.append((raw, {exact}, True))
                continue
            groups = vocabulary.groups(raw)
            if len(groups) == 1:
                scope &= vocabulary.group_hosts(next(iter(groups)))
                continue
            if len(groups) > 1:
                _ambiguous(out, raw, sorted(groups))
                return None, False
            candidates = vocabulary.hosts_ending(raw)
            if candidates:
                names.append((raw, candidates, False))
            else:
                out._unknown(raw, vocabulary)
                return None, False
    if len(names) > 1:
        # Two host names in one intersection cannot both be meant: a parser error, asked about.
        _ambiguous(out, " ∩ ".join(n for n, _, _ in names), sorted(set().union(*(c for _, c, _ in names))))
        return None, False
    if names:
        said, meant, in_full = names[0]
        chosen = set(meant) & scope
        if not in_full and among is not None:
            chosen &= among
            if not chosen:
                return set(), True  # not among the included hosts: nothing to take away
        if not in_full and len(chosen) > 1:
            _ambiguous(out, said, sorted(chosen))
            return None, False
        if not in_full and not chosen:
            _ambiguous(out, said, sorted(meant))
            return None, False
        return chosen, True
    return scope, False


def _ambiguous(out: Resolution, raw: str, candidates: list[str]) -> None:
    if raw not in out.ambiguous:
        out.ambiguous.append(raw)
    out.suggestions[raw] = candidates[:8]
