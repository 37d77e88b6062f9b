"""The deterministic intent parser: chat text -> `IntentDraft`, with no model and no network.

Everything it knows about the fleet comes from the catalog's vocabulary (`core.vocabulary`), every word of
language from `core/lang/*.yml`. It reads one message into a `Reading` (action, patch group, reboot, dry run,
job number, and the targets as a set expression from `agent.target_scan`), then either makes a new draft of it or
applies it as an edit of the conversation's open draft (`agent.amend`).

It says whether it is sure through `is_confident`: only when every word is explained by the grammar or is known
filler, and nothing was ambiguous. A reading that is not confident never becomes a proposal on its own: the
caller asks the model, or, with no model, asks the user (`unconfirmed`).

Safety rules it keeps:
- Names are never guessed. A word in a host position that is not an inventory name goes into the draft as written,
  so the validator reports it as unknown. Keyword typos ("ptach") are corrected; fleet names never are.
- Pattern-looking input ("web*,db*", "~regex", "@file", "a:&b") is passed through as one name for the validator
  to refuse; a glob is kept only where the user typed one.
- Prompt-injection phrases are cut out before parsing and change nothing; in particular they never add targets.
- Destructive or out-of-scope commands make the whole message `unsupported`, even next to a patch request.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from pydantic import PrivateAttr
from rapidfuzz.distance import DamerauLevenshtein

from agent.target_scan import PATCH_GROUP_MARK, Scan, scan_targets
from core.intent import DRAFTING, JOBS_SHOWN_READ_ORDER, Action, IntentDraft, IntentResult, JobsShown, RebootPolicy
from core.inventory import Catalog
from core.language import Language, load_language
from core.targets import TargetExpr, evaluate
from core.validation import validate_draft
from core.vocabulary import MAX_PHRASE_WORDS, Vocabulary, phrase

MAX_TEXT_CHARS = 2000
MAX_RANGE = 50
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": " - "})
_LEADING_MARKS, _TRAILING_MARKS = re.compile(r"^\W*"), re.compile(r"\W*$")
_RANGE = re.compile(
    r"\b([a-z][a-z0-9-]*?)(\d+)\s*(?:to|through|thru|till|until|\.\.\.?|-|–|bis|à|a|hasta|au)\s*(?:\1)?(\d+)\b")


class RulesDraft(IntentDraft):
    """An `IntentDraft` that also remembers what the rules parser could not place (read by `is_confident`)."""

    _unplaced: tuple[str, ...] = PrivateAttr(default=())
    _doubts: tuple[str, ...] = PrivateAttr(default=())
    # Hosts the user left out: excluded, or only mentioned in passing. No answer from anyone may propose them.
    _kept_out: tuple[str, ...] = PrivateAttr(default=())


@dataclass
class Reading:
    """Everything the parser read from one message, before it is combined with the open draft."""

    action: Action | None = None  # None: no action word (a fragment such as "group 2" or "no reboot")
    scan: Scan = field(default_factory=Scan)
    patch_group: str | None = None
    reboot: RebootPolicy | None = None
    check_mode: bool | None = None  # None: not mentioned
    job_id: int | None = None
    explicit_action: bool = False  # an action word was written (not only implied by a patch group)
    injection: bool = False
    doubts: list[str] = field(default_factory=list)
    note: str | None = None
    recognised: bool = False  # small talk or a destructive command was recognised as such
    aside_names: bool = False  # a side remark that was cut out named hosts
    mentioned: set[str] = field(default_factory=set)  # hosts named only in passing (side remarks, mentions)
    jobs: JobsShown | None = None  # list_jobs: which requests, when the user says which

    @property
    def unplaced(self) -> list[str]:
        return self.scan.unplaced

    @property
    def all_doubts(self) -> list[str]:
        return [*self.doubts, *self.scan.doubts]


# --- public API ---------------------------------------------------------------------------------------------------

def parse(text: str, catalog: Catalog, previous: IntentDraft | None = None) -> IntentDraft:
    """Read one chat message. `previous` is the conversation's open draft; a follow-up amends it."""
    from agent.amend import amend

    reading = read(text, catalog)
    draft = amend(previous, reading, catalog) if previous is not None else None
    if draft is None:
        draft = draft_from(reading)
    excluded = evaluate(TargetExpr(include=draft.targets.exclude), catalog.vocabulary).hosts
    draft._kept_out = tuple(sorted(reading.mentioned | excluded))
    return draft


def kept_out(draft: IntentDraft) -> set[str]:
    """The hosts this turn's user left out (excluded or only mentioned): see `RulesDraft._kept_out`."""
    return set(getattr(draft, "_kept_out", ()))


def interpret(text: str, catalog: Catalog, previous: IntentDraft | None = None) -> tuple[IntentDraft, IntentResult]:
    draft = parse(text, catalog, previous)
    return draft, validate_draft(draft, catalog)


def is_confident(draft: IntentDraft, result: IntentResult) -> bool:
    """True when the rules parser placed every word and nothing was ambiguous. Drafts from elsewhere: False."""
    if not isinstance(draft, RulesDraft):
        return False
    if draft._unplaced or draft._doubts:
        return False
    return result.action == draft.action or result.action == Action.CLARIFY


def rules_only_answer(draft: IntentDraft, result: IntentResult) -> IntentResult:
    """What the rules parser may answer alone (no model, or the model failed): a reading it is not sure of never
    becomes a proposal; the user is told what was understood and asked to confirm it."""
    from agent.service import unconfirmed

    return result if is_confident(draft, result) else unconfirmed(result)


def open_draft_after(previous: IntentDraft | None, draft: IntentDraft, result: IntentResult) -> IntentDraft | None:
    """The conversation's open draft after a turn: a proposal or a question replaces it; a status question, a
    job list or small talk leaves it as it was."""
    return draft if result.action in DRAFTING else previous


# --- reading one message --------------------------------------------------------------------------------------------

def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text[:MAX_TEXT_CHARS]).translate(_ZERO_WIDTH).translate(_QUOTES)
    text = re.sub(r"(?<!\S)w/o(?!\S)", "without", re.sub(r"(?<!\S)w/(?!\S)", "with", " ".join(text.lower().split())))
    return text


def _cut(language: Language, kind: str, text: str) -> tuple[str, list[re.Match[str]]]:
    """Remove every match of the language's `kind` patterns, leaving a clause break '|'."""
    found: list[re.Match[str]] = []

    def cut(match: re.Match[str]) -> str:
        found.append(match)
        return _keep_marks(match)
    for pattern in language.patterns.get(kind, ()):
        text = pattern.sub(cut, text)
    return text, found


def _keep_marks(match: re.Match[str]) -> str:
    """A cut phrase leaves a clause break, and any patch group found inside it ("what would group 1 do")."""
    marks = [w for w in match.group(0).split() if w.startswith(PATCH_GROUP_MARK)]
    return " | " + " ".join(marks) + (" | " if marks else "")


def read(text: str, catalog: Catalog) -> Reading:
    language = load_language()
    vocabulary = catalog.vocabulary
    reading = Reading()
    text = normalise(text)

    if language.search("approval_only", re.sub(r"[\s|.,;!?]+", " ", text).strip()):
        reading.recognised = True
        reading.note = "Approval is only given with the Approve button."
        return reading
    text, found = _cut(language, "injection", text)
    reading.injection = bool(found)
    if language.search("destructive", text):
        reading.action, reading.recognised = Action.UNSUPPORTED, True
        reading.note = "That is not a patching request; I can only patch, pre-check, report on or cancel patch jobs."
        return reading
    stripped = re.sub(r"[\s|.,;!?]+", " ", text).strip()
    if language.search("approval_only", stripped):
        reading.recognised = True
        reading.note = "Approval is only given with the Approve button."
        return reading
    if not stripped or language.search("small_talk", stripped):
        reading.recognised = True
        if not reading.injection:
            reading.action = Action.UNSUPPORTED
            reading.note = "I can patch servers, run pre-checks, report on jobs and cancel them."
        return reading

    text = _fix_typos(text, catalog, language)
    if language.search("schedule", text):
        reading.doubts.append("schedule")  # no scheduling: a proposal runs when approved
    if language.search("ordinal_reference", text):
        reading.doubts.append("a position ('the first one') is not followed")
    for pattern, replacement in language.rewrites:
        text = pattern.sub(replacement, text)
    text, mentions = _cut(language, "mention", text)  # "same as last week on kv-01": not a target
    for match in mentions:
        reading.mentioned |= _hosts_named([w.strip(".,;:!?()\"'") for w in match.group(0).split()], vocabulary)

    text = _mark_patch_groups(text, catalog, language)
    text = _read_job_number(text, reading, language)
    text = _read_reboot(text, reading, language)
    text, found = _cut(language, "not_dry_run", text)
    if found:
        reading.check_mode = False
    text, found = _cut(language, "dry_run", text)
    if found:
        reading.check_mode = True

    text = _cut_asides(text, reading, catalog, language)
    text = _cut_mentions(text, reading, catalog, language)
    reading.action = _action(text, reading, language)
    if reading.action == Action.PRECHECK:
        text, _ = _cut(language, "precheck", text)
    elif reading.action == Action.LIST_JOBS:
        reading.jobs = _jobs_shown(text, language)
        text, _ = _cut(language, "list_jobs", text)
    elif reading.action == Action.PATCH and reading.reboot is None and language.search("reboot_word", text):
        reading.reboot = RebootPolicy.ALWAYS  # "patch www-01 with group 1, reboot"
    text, _ = _cut(language, "reboot_word", text)
    text = _RANGE.sub(lambda m: _expand_range(m) or m.group(0), text)

    reading.scan = scan_targets(text, vocabulary, language, list(catalog.patch_groups))
    if reading.aside_names and not reading.scan.include:
        reading.doubts.append("only a side remark names hosts")
    _read_patch_group(reading, catalog, language)
    if reading.action in (Action.STATUS, Action.CANCEL) and reading.job_id is None and not reading.scan.has_targets:
        _bare_job_number(text, reading)
    if reading.action == Action.UNSUPPORTED and reading.scan.has_targets and not reading.scan.unplaced:
        reading.recognised = True  # "reboot www-01": understood, and out of scope
    return reading


def _fix_typos(text: str, catalog: Catalog, language: Language) -> str:
    """Correct misspelt keywords ('ptach' -> 'patch'). Fleet names and words with digits are left alone."""
    vocabulary = catalog.vocabulary
    known = language.all_words

    def fix(match: re.Match[str]) -> str:
        word = match.group(0)
        if len(word) < 4 or word in known or vocabulary.lookup(word) or vocabulary.host(word):
            return word
        budget = 1 if len(word) < 8 else 2
        for target in language.words["typo_targets"]:
            if word != target and abs(len(word) - len(target)) <= budget and \
                    DamerauLevenshtein.distance(word, target) <= budget:
                return target
        return word
    return re.sub(r"(?<![\w-])[a-zäöüßéèêàçñáíóú]+(?![\w-])", fix, text)


def _mark_patch_groups(text: str, catalog: Catalog, language: Language) -> str:
    """Replace every patch-group phrase by a marker token (`PATCH_GROUP_MARK`), first: "group #2" is not job 2,
    and "full update on kv-01" is not a status question. A numbered name that is no patch group ("group 0")
    is marked as named-but-unknown, so the user is asked for the patch group."""
    words = "|".join(re.escape(w) for w in sorted(language.words["patch_group_words"], key=len, reverse=True))
    text = re.sub(rf"\b({words})\s*#\s*(\d)", r"\1 \2", text)
    tokens = text.split()
    out: list[str] = []
    i = 0
    starts = catalog.vocabulary.patch_group_starts
    while i < len(tokens):
        if phrase(tokens[i].strip(".,;:!?\"'()")).split(" ")[0] not in starts:
            out.append(tokens[i])
            i += 1
            continue
        for size in range(min(MAX_PHRASE_WORDS, len(tokens) - i), 0, -1):
            piece = tokens[i:i + size]
            lead, tail = _found(_LEADING_MARKS, piece[0]), _found(_TRAILING_MARKS, piece[-1])
            words_only = " ".join(piece).strip(".,;:!?\"'()")
            found = {m.value for m in catalog.vocabulary.lookup(words_only) if m.kind == "patch_group"}
            others = [m for m in catalog.vocabulary.lookup(words_only) if m.kind != "patch_group"]
            if found and not others:
                names = list(catalog.patch_groups)
                out.append(f"{lead} {' '.join(f'{PATCH_GROUP_MARK}{names.index(p)}' for p in sorted(found))} {tail}")
                i += size
                break
        else:
            out.append(tokens[i])
            i += 1
    text = " ".join(out)

    def unknown(match: re.Match[str]) -> str:
        named = match.group(0)
        if catalog.vocabulary.host(named) or catalog.vocabulary.hosts_ending(named):
            return named  # 'pg-03' is a host here
        return f" {PATCH_GROUP_MARK}?{named.replace(' ', '_')} "
    return re.sub(rf"(?<![\w:?-])(?:{words})[\s-]*\d{{1,3}}\b(?![\w-])", unknown, text)


def _cut_asides(text: str, reading: Reading, catalog: Catalog, language: Language) -> str:
    """Side remarks are not requests ("its the master", "(queue is full)"): what they name is no target. When only
    a side remark names hosts, the reading is unsure."""
    text, _ = _cut(language, "aside_marked", text)
    vocabulary = catalog.vocabulary
    for pattern in language.patterns["aside"]:
        for match in pattern.finditer(text):
            words = [w.strip(".,;:!?()\"'") for w in match.group(0).split()]
            named = _hosts_named(words, vocabulary)
            reading.mentioned |= named
            if named or any(vocabulary.lookup(w) for w in words if w):
                reading.aside_names = True
        text = pattern.sub(_keep_marks, text)
    return text


def _found(pattern: re.Pattern[str], text: str) -> str:
    """What a pattern that may match nothing (and so always matches) finds in `text`."""
    match = pattern.search(text)
    return match.group(0) if match else ""


def _hosts_named(words: list[str], vocabulary: Vocabulary) -> set[str]:
    """Every host a word may name (a short form: every host it may stand for)."""
    named: set[str] = set()
    for word in words:
        if word:
            host = vocabulary.host(word)
            named |= {host} if host else set(vocabulary.hosts_ending(word))
    return named


def _cut_mentions(text: str, reading: Reading, catalog: Catalog, language: Language) -> str:
    """A clause that tells of hosts ("www-03 had issues last time") beside one that asks for something is a
    passing mention: what it names is no target. Its patch group, if any, still counts ("the same group")."""
    pieces = language.clause_end.split(text)
    clauses = [(i, piece) for i, piece in enumerate(pieces) if i % 2 == 0 and piece.strip()]
    words = language.words
    vocabulary = catalog.vocabulary

    def asks(clause: str) -> bool:
        tokens = clause.split()
        return any(t.startswith(PATCH_GROUP_MARK) or t in words["includers"] or t in words["excluders"]
                   for t in tokens) or bool(language.search("patch_verb", clause))

    def mention(clause: str) -> bool:
        tokens = [t.strip(".,;:!?()\"'") for t in clause.split()]
        names = any(vocabulary.host(t) or vocabulary.hosts_ending(t) or vocabulary.lookup(t) for t in tokens if t)
        told = any(t in words["narrative"] for t in tokens)
        past = any(t in words["narrative_past"] for t in tokens)
        return names and told and (past or not asks(clause))

    dropped = {i for i, clause in clauses if mention(clause)}
    if not dropped or not any(asks(clause) for i, clause in clauses if i not in dropped):
        return text
    for i in dropped:
        reading.mentioned |= _hosts_named([t.strip(".,;:!?()\"'") for t in pieces[i].split()], vocabulary)
        marks = [w for w in pieces[i].split() if w.startswith(PATCH_GROUP_MARK)]
        pieces[i] = " | " + " ".join(marks) + " | "
    return "".join(pieces)


def _read_job_number(text: str, reading: Reading, language: Language) -> str:
    for pattern in language.patterns["job_number"]:
        for match in pattern.finditer(text):
            number = int(match.group(1))
            if 1 <= number <= 2**31 - 1:
                reading.job_id = number
        text = pattern.sub(" job ", text)  # the word stays for the action patterns ("is job finished")
    return text


def _bare_job_number(text: str, reading: Reading) -> None:
    """'how's 42 doing', 'cancel 1234': a lone number in a status or cancel question is a job number."""
    numbers = re.findall(r"(?<![\w.-])(\d{1,9})(?![\w.-])", text)
    if len(numbers) == 1 and int(numbers[0]) >= 1:
        reading.job_id = int(numbers[0])
        if numbers[0] in reading.scan.unplaced:
            reading.scan.unplaced.remove(numbers[0])


def _read_patch_group(reading: Reading, catalog: Catalog, language: Language) -> None:
    names = reading.scan.patch_groups
    if len(names) > 1:
        reading.doubts.append("several patch groups")
        reading.patch_group = " or ".join(names)  # the validator resolves none of it: patch group missing
        return
    if names:
        reading.patch_group = names[0]
    # A word that describes several patch groups ("security updates" fits two): ask which one.
    described = catalog.vocabulary.described
    for word in list(reading.scan.unplaced):
        owners = described.get(word, frozenset())
        if owners and word not in language.words["filler"]:
            reading.scan.unplaced.remove(word)
            if len(owners) > 1 and not names:
                reading.doubts.append(f"'{word}' fits several patch groups")
                reading.patch_group = f"{word} updates"  # resolves to no group: the operator is asked to pick one


def _read_reboot(text: str, reading: Reading, language: Language) -> str:
    for policy in RebootPolicy:  # the language's kinds are reboot_never, reboot_if_needed, reboot_always
        text, found = _cut(language, f"reboot_{policy.value}", text)
        if found and reading.reboot is None:
            reading.reboot = policy
    return text


def _action(text: str, reading: Reading, language: Language) -> Action | None:
    verb = bool(language.search("patch_verb", text))
    action: Action | None = None
    if language.search("cancel", text) and (reading.job_id is not None or language.search("cancel_object", text)
                                            or verb or len(text.split()) <= 3):
        action = Action.CANCEL
    elif language.search("list_jobs", text) and reading.job_id is None:
        action = Action.LIST_JOBS
    elif language.search("status", text) and reading.check_mode is None and not language.search("precheck", text):
        action = Action.STATUS
    elif reading.job_id is not None and not verb and PATCH_GROUP_MARK not in text:
        action = Action.STATUS  # "job 42?"
    elif language.search("precheck", text) or language.search("precheck_question", text):
        action = Action.PRECHECK
    elif verb:
        action = Action.PATCH
    if action is not None:
        reading.explicit_action = True
        return action
    if reading.check_mode is True or PATCH_GROUP_MARK in text:
        return Action.PATCH  # "dry run www-01", "www-01 with group 2": a patch request without the verb
    if language.search("reboot_word", text):
        reading.recognised = True  # "reboot all servers now": understood, and not a patch request
    if language.search("reboot_word", text) or language.search("other_operation", text):
        reading.note = "I can only patch servers with a patch group; other operations are out of scope."
        return Action.UNSUPPORTED
    return None


def _jobs_shown(text: str, language: Language) -> JobsShown | None:
    """'show running jobs' -> active; 'what failed' -> failed; 'finished runs' -> finished."""
    words = set(re.findall(r"[\w']+", text))
    for shown in JOBS_SHOWN_READ_ORDER:
        if words & language.words[f"jobs_{shown}"]:
            return shown
    return None


def _expand_range(match: re.Match[str]) -> str | None:
    prefix, first, last = match.group(1), match.group(2), match.group(3)
    start, end = int(first), int(last)
    if not (start < end <= start + MAX_RANGE):
        return None
    width = len(first)
    return " , ".join(f"{prefix}{n:0{width}d}" for n in range(start, end + 1))


# --- building a draft -------------------------------------------------------------------------------------------------

def new_draft(reading: Reading, **fields: Any) -> RulesDraft:
    draft = RulesDraft(**fields)
    draft._unplaced = tuple(reading.unplaced)
    draft._doubts = tuple(reading.all_doubts)
    return draft


def draft_from(reading: Reading) -> RulesDraft:
    action = reading.action
    scan = reading.scan
    if action is None:
        if reading.patch_group:
            action = Action.PATCH  # "www-01 with group 2": a patch request without the verb
        elif scan.has_targets or reading.reboot:
            action = Action.PATCH
            reading.doubts.append("no action word")
        else:
            if not reading.recognised:
                reading.doubts.append("nothing recognised")
            return new_draft(reading, action=Action.UNSUPPORTED,
                             note=reading.note or "I did not understand that request.")
    if action == Action.UNSUPPORTED:
        if not reading.recognised:
            reading.doubts.append("out of scope, not recognised")
        return new_draft(reading, action=Action.UNSUPPORTED, note=reading.note)
    if action == Action.LIST_JOBS:
        return new_draft(reading, action=Action.LIST_JOBS, jobs=reading.jobs)
    if action in (Action.STATUS, Action.CANCEL):
        return new_draft(reading, action=action, job_id=reading.job_id, targets=scan.expr())
    return new_draft(reading, action=action, patch_group=reading.patch_group, reboot=reading.reboot,
                     check_mode=bool(reading.check_mode), targets=scan.expr())
