"""Language data: the words people use around a fleet's names, one YAML file per language in `core/lang/`.

Nothing about a particular fleet is here: these are words of a language (verbs, negations, "server", "except",
"database" ~ "db"). Every file has the same keys (see `core/lang/en.yml`, which documents them); the parser and
the vocabulary use all languages at once, so a message may mix them. Adding a language is adding a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import yaml

LANG_DIR = Path(__file__).resolve().parent / "lang"
WORD_KEYS = (
    "filler", "host_nouns", "quantifiers", "whole_fleet", "excluders", "includers", "additive", "replacing",
    "corrections", "connectors", "scope_prepositions", "rest", "references", "environment_words", "patch_group_words",
    "start_over", "typo_targets", "negators", "narrative", "narrative_past", "narrowers", "contrast", "refusals",
    "singular_nouns", "plural_nouns", "clause_turns", "loose_prepositions", "jobs_active", "jobs_failed",
    "jobs_finished",
)
PATTERN_KEYS = (
    "injection", "approval_only", "destructive", "small_talk", "patch_verb", "other_operation", "reboot_never",
    "reboot_if_needed", "reboot_always", "reboot_word", "dry_run", "not_dry_run", "precheck", "precheck_question",
    "status", "cancel", "cancel_object", "list_jobs", "schedule", "mention", "aside", "aside_marked", "job_number",
    "ordinal_reference",
    "phrases",
)


@dataclass(frozen=True)
class Language:
    """All languages merged: word sets, synonym sets, number words and compiled phrase patterns."""

    codes: tuple[str, ...]
    words: dict[str, frozenset[str]]
    synonyms: tuple[frozenset[str], ...]
    numbers: dict[str, str]
    patterns: dict[str, tuple[re.Pattern[str], ...]]
    rewrites: tuple[tuple[re.Pattern[str], str], ...] = field(default=())

    @cached_property
    def clause_end(self) -> re.Pattern[str]:
        """Where one clause of a message ends: punctuation (not the dot of a host name, not the colon of a
        patch-group marker), or a word that turns to another thought ("anyway", "so", "but")."""
        longest_first = sorted(self.words["clause_turns"], key=len, reverse=True)
        turns = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in longest_first)
        return re.compile(rf"(\s*(?:[|;!?]|\.(?=\s|$)|(?<!pgref):|,|\b(?:{turns})\b)\s*)")

    @property
    def all_words(self) -> frozenset[str]:
        return self.words["_all"]

    def has(self, kind: str, word: str) -> bool:
        return word in self.words.get(kind, ())

    def search(self, kind: str, text: str) -> re.Match[str] | None:
        for pattern in self.patterns.get(kind, ()):
            if match := pattern.search(text):
                return match
        return None


def _merged(rewrites: list[tuple[re.Pattern[str], str]]) -> tuple[tuple[re.Pattern[str], str], ...]:
    """Rewrites with the same plain replacement (" except ", " also ") as one alternation, in the order each
    replacement first appears: one pass over the text for each instead of one for every pattern of every language.
    A rewrite whose replacement refers to a group of its own match stays alone, in its place."""
    merged: dict[str, list[str]] = {}
    # In order: a rewrite that stays alone, or the replacement whose merged alternation goes in its place.
    order: list[tuple[re.Pattern[str], str] | str] = []
    for pattern, replacement in rewrites:
        if "\\" in replacement or pattern.groups:
            order.append((pattern, replacement))
            continue
        if replacement not in merged:
            merged[replacement] = []
            order.append(replacement)
        merged[replacement].append(pattern.pattern)
    out: list[tuple[re.Pattern[str], str]] = []
    for item in order:
        if isinstance(item, str):
            out.append((re.compile("|".join(f"(?:{p})" for p in merged[item])), item))
        else:
            out.append(item)
    return tuple(out)


@lru_cache(maxsize=1)
def load_language(directory: Path = LANG_DIR) -> Language:
    words: dict[str, set[str]] = {k: set() for k in WORD_KEYS}
    synonyms: list[frozenset[str]] = []
    numbers: dict[str, str] = {}
    patterns: dict[str, list[re.Pattern[str]]] = {k: [] for k in PATTERN_KEYS}
    rewrites: list[tuple[re.Pattern[str], str]] = []
    codes = []
    for path in sorted(directory.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        codes.append(str(data.get("language", path.stem)))
        for key in WORD_KEYS:
            for word in data.get(key) or ():
                if not isinstance(word, str):  # YAML reads a bare on/off/yes/no as a boolean: quote them
                    raise ValueError(f"{path.name}: {key} has {word!r}, not a word; put it in quotes")
                words[key].add(word.lower())
        synonyms.extend(frozenset(str(w).lower() for w in group) for group in data.get("synonyms") or ())
        numbers.update({str(k).lower(): str(v) for k, v in (data.get("numbers") or {}).items()})
        for key in PATTERN_KEYS:
            for source in data.get(key) or ():
                if key == "phrases":  # {pattern: replacement}: rewrites applied before the token scan
                    for pattern, replacement in source.items():
                        rewrites.append((re.compile(pattern), f" {replacement} "))
                else:
                    patterns[key].append(re.compile(source))
    words["_all"] = set().union(*words.values())
    return Language(
        codes=tuple(codes), words={k: frozenset(v) for k, v in words.items()}, synonyms=tuple(synonyms),
        numbers=numbers, patterns={k: tuple(v) for k, v in patterns.items()}, rewrites=_merged(rewrites),
    )
