"""Conversations that amend a request: each message is read as an edit of the open draft.

Edits, in the words people use:
- add ("and www-03 too", "add the db servers"): the new selections join the expression;
- drop ("drop www-01", "but skip the staging db"): a selection said before is removed, anything else is excluded;
- swap ("swap api-02 for api-03"): a drop and an add;
- replace ("www-02 instead", "make that the staging ones"): the new selections take the place of the old ones; when
  they only name some kinds of term ("test" after "live www servers"), just those kinds change;
- change an attribute ("no reboot", "as a dry run", "with group 3 instead"): the targets stay;
- start over ("start over", or a complete new request with its own targets and patch group): nothing carries over.
A status or cancel question about "both" / "them" is about the open draft's hosts.
"""

from __future__ import annotations

import itertools

from agent.rules import Reading, RulesDraft, new_draft
from agent.target_scan import Scan
from core.intent import DRAFTING, Action, IntentDraft
from core.inventory import Catalog
from core.targets import Selection, TargetExpr, Term, evaluate
from core.validation import validate_draft
from core.vocabulary import Meaning, Vocabulary


def amend(previous: IntentDraft, reading: Reading, catalog: Catalog) -> RulesDraft | None:
    """The open draft changed by this message, or None when the message is not an edit of it."""
    if reading.scan.start_over:
        return _start_over(reading)
    if reading.action in (Action.STATUS, Action.CANCEL):
        return _job_question(previous, reading)
    if reading.action in (Action.LIST_JOBS, Action.UNSUPPORTED) or previous.action not in DRAFTING:
        return None
    if _carries_nothing(reading):
        return _copy_of(previous)  # only an injection or an approval request: the open draft stays as it was
    if not _changes(previous, reading) or _is_a_new_request(previous, reading, catalog):
        return None
    return _edited(previous, reading, catalog)


def _start_over(reading: Reading) -> RulesDraft | None:
    """'start over' alone asks what to do; with a request of its own, that request is read afresh (None)."""
    if reading.action is None and not reading.scan.has_targets and not reading.patch_group:
        return new_draft(reading, action=Action.CLARIFY,
                         note="Starting over. What should I patch, and with which patch group?")
    return None


def _job_question(previous: IntentDraft, reading: Reading) -> RulesDraft | None:
    """A status or cancel question about 'them' / 'both': about the open draft's hosts."""
    scan = reading.scan
    if reading.job_id is None and not scan.has_targets and scan.reference and not previous.targets.is_empty:
        return new_draft(reading, action=reading.action, targets=previous.targets)
    return None


def _changes(previous: IntentDraft, reading: Reading) -> bool:
    """Does the message change anything of the open draft (its targets, patch group, reboot, dry run, action)?"""
    scan = reading.scan
    edits_targets = bool(scan.include or scan.exclude or scan.whole_fleet)
    return bool(reading.patch_group or reading.reboot or reading.check_mode is not None or edits_targets
                or (reading.explicit_action and reading.action != previous.action) or scan.reference)


def _is_a_new_request(previous: IntentDraft, reading: Reading, catalog: Catalog) -> bool:
    """An action word with targets of its own and no edit word ('also', 'instead', 'except', 'those') is a new
    request, unless the open draft is still waiting for its targets and the message names no patch group."""
    scan = reading.scan
    marked = scan.additive or scan.replacing or scan.corrected or scan.reference or bool(scan.exclude)
    if not (reading.explicit_action and not marked and scan.has_targets):
        return False
    waiting = previous.action == Action.CLARIFY or validate_draft(previous, catalog).action == Action.CLARIFY
    return bool(reading.patch_group or not waiting)


def _edited(previous: IntentDraft, reading: Reading, catalog: Catalog) -> RulesDraft:
    """The open draft with this message's edits: what it says replaces, what it leaves out carries over."""
    scan = reading.scan
    action = reading.action if reading.explicit_action else previous.action
    if action == Action.CLARIFY:
        action = Action.PATCH
    targets = edit_targets(previous.targets, reading, catalog.vocabulary)
    meant = TargetExpr(include=[s for s in targets.include if s not in previous.targets.include]) \
        if scan.additive else targets
    if scan.singular and len(evaluate(meant, catalog.vocabulary).hosts) != 1:
        reading.doubts.append("'the ... one' does not single out one host")
    check_mode = previous.check_mode if reading.check_mode is None else reading.check_mode
    return new_draft(reading, action=action, targets=targets, patch_group=reading.patch_group or previous.patch_group,
                     reboot=reading.reboot or previous.reboot, check_mode=check_mode)


def edit_targets(previous: TargetExpr, reading: Reading, vocabulary: Vocabulary) -> TargetExpr:
    scan = reading.scan
    new = _short_forms_as_before(scan.expr(), evaluate(previous, vocabulary).hosts, vocabulary)
    include, exclude = list(previous.include), list(previous.exclude)
    for selection in new.exclude:
        if selection in include:
            include.remove(selection)  # "drop www-01": it was named, so it simply goes
        elif selection not in exclude:
            exclude.append(selection)
    if new.include:
        if scan.additive or new.exclude:
            added = _like_the_last(include, new.include, vocabulary)
            include += [s for s in added if s not in include]
        elif _narrows(include, new.include, scan, vocabulary):
            include = [Selection(terms=[*old.terms, *n.terms]) for old in include for n in new.include]
        else:
            include = _replace(include, new.include, vocabulary)
        exclude = [s for s in exclude if s not in new.include]  # named again: no longer excluded
    return TargetExpr(include=include, exclude=exclude)


def _short_forms_as_before(new: TargetExpr, before: set[str], vocabulary: Vocabulary) -> TargetExpr:
    """'only api-02' after 'fra1-prd-api-02 ...': a short form that fits exactly one host of the open request
    means that host."""
    def resolved(selection: Selection) -> Selection:
        if len(selection.terms) != 1 or selection.terms[0].kind != "name" or vocabulary.host(selection.terms[0].value):
            return selection
        fits = vocabulary.hosts_ending(selection.terms[0].value) & before
        return Selection(terms=[Term(value=next(iter(fits)))]) if len(fits) == 1 else selection
    return TargetExpr(include=[resolved(s) for s in new.include], exclude=[resolved(s) for s in new.exclude])


def _replace(old: list[Selection], new: list[Selection], vocabulary: Vocabulary) -> list[Selection]:
    """'make that the staging ones' after 'the prod web servers' changes only the environment."""
    new_kinds = {_kinds(s, vocabulary) for s in new}
    if old and len(new_kinds) == 1:
        kinds = next(iter(new_kinds))
        if all(kinds < _kinds(s, vocabulary) for s in old):
            out: list[Selection] = []
            for before, after in itertools.product(old, new):
                kept = [t for t in before.terms if _kind(t, vocabulary) not in kinds]
                selection = Selection(terms=[*kept, *after.terms])
                if selection not in out:
                    out.append(selection)
            return out
    return list(new)


def _kinds(selection: Selection, vocabulary: Vocabulary) -> frozenset[str]:
    return frozenset(_kind(t, vocabulary) for t in selection.terms)


def _like_the_last(old: list[Selection], new: list[Selection], vocabulary: Vocabulary) -> list[Selection]:
    """'plus the staging one' after 'the prod dbs': the staging db, not all of staging."""
    if not old or any("host" in _kinds(s, vocabulary) for s in new):
        return new
    last = old[-1]
    out = []
    for selection in new:
        kinds = _kinds(selection, vocabulary)
        if kinds < _kinds(last, vocabulary):
            kept = [t for t in last.terms if _kind(t, vocabulary) not in kinds]
            out.append(Selection(terms=[*kept, *selection.terms]))
        else:
            out.append(selection)
    return out


def _narrows(old: list[Selection], new: list[Selection], scan: Scan, vocabulary: Vocabulary) -> bool:
    """'only the debian ones' after 'live': a filter of another kind than anything said before narrows it.
    Without 'only', a filter of a new kind narrows too: that can only take hosts away, never add one."""
    if not old or scan.replacing:
        return False
    old_kinds = frozenset().union(*(_kinds(s, vocabulary) for s in old))
    new_kinds = frozenset().union(*(_kinds(s, vocabulary) for s in new))
    if "host" in new_kinds or old_kinds & new_kinds:
        return False
    # A short form is narrowed too ("www-01", then "the one in fra1"); a host named in full is replaced.
    return not any(t.kind == "name" and vocabulary.host(t.value) for s in old for t in s.terms)


def _kind(term: Term, vocabulary: Vocabulary) -> str:
    if term.kind == "attribute":
        return f"attribute:{term.key}"
    if term.kind != "name" or vocabulary.host(term.value):
        return "host"
    groups = vocabulary.groups(term.value)
    if len(groups) == 1:
        return vocabulary.dimension(Meaning("group", next(iter(groups))))
    return "host"


def _carries_nothing(reading: Reading) -> bool:
    asks_approval = (reading.note or "").startswith("Approval")
    scan = reading.scan
    return (reading.injection or asks_approval) and reading.action is None and reading.patch_group is None \
        and reading.reboot is None and reading.check_mode is None and reading.job_id is None \
        and not scan.include and not scan.exclude


def _copy_of(previous: IntentDraft) -> RulesDraft:
    draft = RulesDraft(**previous.model_dump())
    draft._unplaced = getattr(previous, "_unplaced", ())
    draft._doubts = getattr(previous, "_doubts", ())
    return draft
