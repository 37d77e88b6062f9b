"""The token scan: the words of a message that name targets -> a set expression (`core.targets`).

Names come from the fleet's vocabulary (`core.vocabulary`), every other word from the language files
(`core/lang`). The grammar, in short:
- adjacent terms of different kinds intersect ("prod web servers", "the Debian ones in staging", "www-01 in fra1");
- terms of the same kind joined by "and" / "," are a union ("web and db servers in prod" = (web + db) in prod);
- after "and", a term that only repeats some kinds of the one before inherits the rest ("web servers in prod and
  staging" = web in prod + web in staging);
- an excluder ("except", "not", "skip", "leave", "outside") sends what follows to the exclusion until an includer
  ("do", "just", "patch") or the end of the sentence; "but" excludes when a name follows it;
- a correction ("sorry", "i mean", "no wait") takes back the last name; "swap A for B" is "except A, also B".
A word that none of this explains is kept in `unplaced`: the reading is then not confident.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from itertools import pairwise

from core.language import Language
from core.targets import Selection, TargetExpr, Term
from core.vocabulary import MAX_PHRASE_WORDS, Meaning, Vocabulary

BREAK = "|"
PATCH_GROUP_MARK = "pgref:"  # set by the reading step (agent.rules) where it found a patch group
_PATTERN_SYNTAX = re.compile(r"[:&!~@\[\]{}|^$\\/=<>%+]")
_HOST_LIKE = re.compile(r"^[\w*?][\w.*?-]*$")
_NOT_A_HOST = re.compile(
    r"^(?:\d+(?:st|nd|rd|th|am|pm|h|hrs?|m|mins?|s|secs?|d|days?|x|%)|v\d+(?:\.\d+)*|el\d+|rhel\d*|cve-[\d-]+|"
    r"rhsa-[\d:-]+|x86[_-]64|i\d86|ipv\d|\d+)$"
)
_CHUNK_STRIP = ".,;:!?\"'()`"
# The language's words that name nothing in a target ("in", "all", "group", "servers", "please").
_NOISE_KINDS = ("scope_prepositions", "quantifiers", "patch_group_words", "host_nouns", "filler")


@dataclass
class Segment:
    """Terms by kind: a union within a kind, an intersection across kinds."""

    values: dict[str, list[Term]] = field(default_factory=dict)
    joined: bool = False  # came after "and" / ","

    def add(self, dimension: str, term: Term) -> None:
        bucket = self.values.setdefault(dimension, [])
        if term not in bucket:
            bucket.append(term)

    def selections(self) -> list[Selection]:
        kinds = list(self.values.values())
        return [Selection(terms=list(combo)) for combo in itertools.product(*kinds)]


@dataclass
class Scan:
    include: list[Segment] = field(default_factory=list)
    exclude: list[Segment] = field(default_factory=list)
    whole_fleet: bool = False
    patch_groups: list[str] = field(default_factory=list)
    additive: bool = False
    replacing: bool = False
    corrected: bool = False
    reference: bool = False
    narrowing: bool = False  # "only" / "just": keep what was said, limited to this
    singular: bool = False  # "the test one": a single host is meant
    seen_term: bool = False
    start_over: bool = False
    unplaced: list[str] = field(default_factory=list)
    doubts: list[str] = field(default_factory=list)

    @property
    def has_targets(self) -> bool:
        return bool(self.include or self.whole_fleet)

    def expr(self) -> TargetExpr:
        include = [s for seg in self.include for s in seg.selections()]
        if self.whole_fleet and not include:
            include = [Selection(terms=[Term(kind="all")])]
        return TargetExpr(include=include, exclude=[s for seg in self.exclude for s in seg.selections()])


# --- tokens ---------------------------------------------------------------------------------------------------------

def tokenize(text: str, vocabulary: Vocabulary) -> list[str]:
    """Words, ',' and '|' (a sentence break). A piece with host-pattern syntax stays whole (the validator refuses
    it by name); '?' ends a question unless the word is a glob that matches some host."""
    tokens: list[str] = []
    for chunk in text.split():
        ends_question = chunk.endswith("?") and _is_question_mark(chunk, vocabulary)
        if ends_question:
            chunk = chunk.rstrip("?")
        chunk = chunk.strip("`")
        if chunk.endswith(":") and not _PATTERN_SYNTAX.search(chunk[:-1]):
            chunk = chunk[:-1]  # "hosts:" ends a label
        if chunk.startswith(PATCH_GROUP_MARK):
            tokens.append(chunk)
        elif chunk in ("|", "&", "+"):
            tokens.append(BREAK if chunk == "|" else chunk)
        elif (_PATTERN_SYNTAX.search(chunk) and re.search(r"[a-z0-9]", chunk)
              or ("," in chunk and re.search(r"[*?]", chunk))):
            tokens.append(chunk.strip(".;!\"'()"))  # 'web*,db*', 'a:&b': one name the validator refuses
        else:
            for part in re.split(r"(,)", chunk):
                if part == ",":
                    tokens.append(",")
                elif part:
                    is_glob = bool(re.search(r"[*?]", part))
                    core = part.strip(".,;!\"'()") if is_glob else part.strip(_CHUNK_STRIP)
                    if core:
                        tokens.append(core)
                    if part.endswith((".", ";", "!", "?")) and not is_glob:
                        tokens.append(BREAK)
        if ends_question:
            tokens.append(BREAK)
    return tokens


def _is_question_mark(chunk: str, vocabulary: Vocabulary) -> bool:
    word = chunk.rstrip("?")
    if "*" in word:
        return False
    if not re.search(r"\d", word) or vocabulary.host(word):
        return True
    pattern = re.compile(re.escape(word) + "." * (len(chunk) - len(word)) + "$")
    return not any(pattern.match(h) for h in vocabulary.all_hosts)


# --- the scan -------------------------------------------------------------------------------------------------------

class _Scanner:
    def __init__(self, tokens: list[str], vocabulary: Vocabulary, language: Language, patch_group_names: list[str]):
        self.tokens, self.vocabulary, self.language = tokens, vocabulary, language
        self.patch_group_names = patch_group_names
        self.scan = Scan()
        self.current: Segment | None = None
        self.excluding = False
        self.connector = False
        self.last_name: str | None = None
        self.just_excluded = False  # the word before was an excluder
        self.correcting = False  # a correction word was said: what comes next replaces the last thing of its kind
        self.negate_next = False  # "non-prod": the next name is excluded, the rest stays included

    # segments
    def _target_list(self) -> list[Segment]:
        return self.scan.exclude if self.excluding else self.scan.include

    def close(self) -> None:
        if self.current is not None and self.current.values:
            self._target_list().append(self.current)
        self.current = None

    def term(self, dimension: str, term: Term) -> None:
        if self.negate_next:
            self.negate_next = False
            excluded = Segment()
            excluded.add(dimension, term)
            self.scan.exclude.append(excluded)
            return
        if self.correcting:
            self.correcting = False
            self.take_back()
        self.scan.seen_term = True
        seg = self.current
        if seg is None:
            seg = self.current = Segment(joined=self.connector)
        elif self.connector and not (dimension in seg.values and len(seg.values) == 1):
            self.close()
            seg = self.current = Segment(joined=True)
        elif not self.connector and dimension != "host" and dimension in seg.values:
            # Side by side without "and", two groups narrow each other ("fra1 lbs"): only names make a list.
            while dimension in seg.values:
                dimension += "+"
        seg.add(dimension, term)
        self.connector = False
        if term.kind == "name" and dimension == "host":
            self.last_name = term.value
        if term.kind == "name" and dimension != "host" and not self.excluding and self.tokens_say_one():
            self.scan.singular = True

    def take_back(self) -> None:
        """A correction: the last name said is withdrawn."""
        seg = self.current
        if seg is None and self.scan.include and not self.excluding:
            seg = self.current = self.scan.include.pop()
        if seg is None:
            return
        last_kind = list(seg.values)[-1]
        seg.values[last_kind].pop()
        if not seg.values[last_kind]:
            del seg.values[last_kind]
        if not seg.values:
            self.current = None

    # reading
    def run(self) -> Scan:
        i = 0
        tokens = self.tokens
        while i < len(tokens):
            token = tokens[i]
            if token == BREAK:
                self.close()
                self.excluding = self.connector = False
                i += 1
                continue
            if token == ",":
                self.connector = True
                if self.excluding and self._clause_includes(i + 1):
                    self.close()  # "avoid ldap1, ldap2 gets group 1": the comma ended the exclusion
                    self.excluding = self.connector = False
                i += 1
                continue
            excluder = token in self.language.words["excluders"]
            if token.startswith(PATCH_GROUP_MARK):
                self._patch_group(token[len(PATCH_GROUP_MARK):])
                i += 1
                self.just_excluded = False
                continue
            width = self._fleet_term(i)
            if width:
                i += width
            else:
                i += self._word(i)
            self.just_excluded = excluder
        if self.correcting:
            self.take_back()  # "patch www-01 and www-02, no wait": the last one is taken back
        self.close()
        self._inherit(self.scan.include)
        self._inherit(self.scan.exclude)
        return self.scan

    def tokens_say_one(self) -> bool:
        words = self.language.words
        return any(t in words["singular_nouns"] for t in self.tokens) and \
            not any(t in words["plural_nouns"] for t in self.tokens)

    def _clause_includes(self, i: int) -> bool:
        """Does the stretch up to the next comma or sentence end ask for something (a patch group, a verb)?"""
        words = self.language.words
        for token in self.tokens[i:]:
            if token in (",", BREAK):
                return False
            if token.startswith(PATCH_GROUP_MARK) or token in words["includers"]:
                return True
        return False

    def _fleet_term(self, i: int) -> int:
        """Match the longest fleet phrase at position i; 0 when none."""
        words = self.tokens[i:i + MAX_PHRASE_WORDS]
        for size in range(len(words), 0, -1):
            piece = words[:size]
            if BREAK in piece or "," in piece:
                continue
            text = " ".join(piece)
            if size <= 2 and (host := self.vocabulary.host(text)):
                self.term("host", Term(kind="name", value=host))
                return size
            meanings = self.vocabulary.lookup(text)
            if not meanings or (size == 1 and self._is_language_word(text) and self.vocabulary.is_derived(text)):
                continue
            if size > 1 and self._splits(piece):
                continue  # "prod db": the environment and the role, so that "and web" keeps the environment
            self._meanings(text, meanings)
            return size
        token = words[0]
        if self.vocabulary.hosts_ending(token):
            self.term("host", Term(kind="name", value=token))  # a short form: resolved by the scope given
            return 1
        return 0

    def _splits(self, piece: list[str]) -> bool:
        """Every word of a group phrase is a group or value of its own."""
        nouns = self.language.words["host_nouns"]
        found = [self.vocabulary.lookup(word) for word in piece if word not in nouns]
        return all(len(m) == 1 and next(iter(m)).kind in ("group", "attribute") for m in found) and \
            len({next(iter(m)) for m in found}) == len(found)

    def _is_language_word(self, text: str) -> bool:
        return any(text in self.language.words[kind] for kind in (
            "filler", "connectors", "scope_prepositions", "quantifiers", "excluders", "includers", "additive",
            "replacing", "corrections", "references", "rest", "host_nouns", "start_over"))

    def _patch_group(self, ref: str) -> None:
        """A patch-group marker: an index into the catalog's patch groups, or '?<name as typed>'."""
        if self.just_excluded:
            return  # "group 2 instead of group 1": the excluded one is not asked for
        name = ref[1:].replace("_", " ") if ref.startswith("?") else self.patch_group_names[int(ref)]
        if self.correcting and self.scan.patch_groups:
            self.correcting = False
            self.scan.patch_groups.pop()  # "group 1.. wait, group 2"
        if name not in self.scan.patch_groups:
            self.scan.patch_groups.append(name)

    def _meanings(self, text: str, meanings: frozenset[Meaning]) -> None:
        others = [m for m in meanings if m.kind != "patch_group"]
        if not others:
            return
        if len(others) > 1:
            self.scan.doubts.append(f"'{text}' fits several groups")
            self.term("host", Term(kind="name", value=text))  # the validator reports it as ambiguous
            return
        meaning = others[0]
        if meaning.kind == "attribute":
            self.term(self.vocabulary.dimension(meaning), Term(kind="attribute", key=meaning.key, value=meaning.value))
        else:
            self.term(self.vocabulary.dimension(meaning), Term(kind="name", value=meaning.value))

    def _word(self, i: int) -> int:
        """A language word (or a few) at position i, or an unplaced word. Returns how many tokens it used.
        The kinds of word are tried in order; the first that takes the token wins."""
        token = self.tokens[i]
        for step in (self._correction_word, self._clause_word, self._joining_word, self._noise_word):
            if step(token, i):
                return 1
        self._name_word(token, i)
        return 1

    def _correction_word(self, token: str, i: int) -> bool:
        """Start over, a correction ('no wait', a refusal after a name), a negator ('non-'), or 'just' after a
        correction."""
        words, scan = self.language.words, self.scan
        following = self.tokens[i + 1] if i + 1 < len(self.tokens) else ""
        if token in words["start_over"]:
            scan.start_over = True
        elif token in words["corrections"] or (
                token in words["refusals"] and self.last_name and following in (",", BREAK, "")):
            self.correcting = scan.corrected = True
        elif token in words["negators"]:
            self.negate_next = True
        elif self.correcting and token in words["narrowers"]:
            self.correcting = False  # "make that just www-03": everything said before goes
            self.current = None
            scan.include.clear()
        else:
            return False
        return True

    def _clause_word(self, token: str, i: int) -> bool:
        """A word that starts an exclusion ('but', 'except'), 'the rest of', 'all' as the whole fleet, or 'those'
        right after an excluder."""
        words, scan = self.language.words, self.scan
        if token in words["contrast"]:
            if (self.current or scan.include) and self._name_follows(i + 1):
                self.close()
                self.excluding = True
        elif token in words["excluders"]:
            self.close()
            self.excluding = True
            self.connector = False
        elif token in words["rest"]:
            self._rest(i)
        elif token in words["whole_fleet"] and self._means_whole_fleet(i):
            scan.whole_fleet = True
        elif token in words["references"] and self.just_excluded:
            self.excluding = False  # "not those, the prod dbs": what was said goes, what follows replaces it
            scan.replacing = True
        else:
            return False
        return True

    def _joining_word(self, token: str, i: int) -> bool:
        """A word that includes, replaces or adds ('patch', 'instead', 'also'), a connector ('and'), or a
        reference to what was said before ('those')."""
        words, scan = self.language.words, self.scan
        if token in words["includers"] or token in words["replacing"] or token in words["additive"]:
            if token in words["narrowers"]:
                scan.narrowing = True
            elif token in words["replacing"]:
                scan.replacing = True
            if token in words["additive"]:
                scan.additive = True
            if self.excluding:
                self.close()
                self.excluding = False
        elif token in words["connectors"]:
            self.connector = bool(self.current) or self.connector
            if not scan.seen_term:
                scan.additive = True  # "and www-03": a message that starts with "and" adds
        elif token in words["references"]:
            scan.reference = True
        else:
            return False
        return True

    def _noise_word(self, token: str, i: int) -> bool:
        """A word that names nothing ('in', 'all', 'servers', punctuation), or a bare number that is the last
        named host's sibling (which `_sibling` adds)."""
        words = self.language.words
        if re.fullmatch(r"\d{1,3}", token) and self._sibling(token):
            return True
        return any(token in words[kind] for kind in _NOISE_KINDS) or bool(re.fullmatch(r"\W+", token))

    def _name_word(self, token: str, i: int) -> None:
        """What is left: a host name, a glob, pattern syntax (refused by name), or a word placed nowhere."""
        scan = self.scan
        if token.startswith("-") or _PATTERN_SYNTAX.search(token):
            self.term("host", Term(kind="name", value=token))  # pattern syntax: refused by name
        elif re.search(r"[*?]", token) and re.search(r"[a-z0-9]", token):
            self.term("host", Term(kind="glob", value=token))  # a glob the user typed
        elif token in ("*", "?"):
            self.term("host", Term(kind="glob", value=token))
        elif (_HOST_LIKE.match(token) and re.search(r"\d", token) and not _NOT_A_HOST.match(token)) or \
                re.fullmatch(r"[a-z0-9-]+(?:\.[a-z0-9-]+){2,}", token):
            self.term("host", Term(kind="name", value=token))  # looks like a host: the validator says if it exists
        elif _HOST_LIKE.match(token) and self._in_host_position(i):
            scan.unplaced.append(token)
            self.term("host", Term(kind="name", value=token))  # "patch zeus": reported as unknown
        else:
            scan.unplaced.append(token)

    def _name_follows(self, i: int) -> bool:
        for token in self.tokens[i:i + 3]:
            if token in self.language.words["filler"] and not self.vocabulary.lookup(token):
                continue
            vocabulary = self.vocabulary
            return bool(vocabulary.host(token) or vocabulary.lookup(token) or vocabulary.hosts_ending(token)
                        or re.fullmatch(r"\d{1,3}", token) or (re.search(r"\d", token) and _HOST_LIKE.match(token)))
        return False

    def _in_host_position(self, i: int) -> bool:
        nouns = self.language.words["host_nouns"]
        before = self.tokens[i - 1] if i else ""
        words = self.language.words
        return before in nouns or before in words["includers"] or before in words["loose_prepositions"]

    def _means_whole_fleet(self, i: int) -> bool:
        """'all' / 'everything' as the target itself, not as a quantifier ('all prod web servers')."""
        lang = self.language
        for token in self.tokens[i + 1:]:
            if token in lang.words["filler"] or token in lang.words["host_nouns"]:
                continue
            if token in lang.words["scope_prepositions"] - lang.words["loose_prepositions"]:
                return False  # "everything in prod"
            vocabulary = self.vocabulary
            return not (vocabulary.host(token) or vocabulary.lookup(token) or vocabulary.hosts_ending(token))
        return True

    def _rest(self, i: int) -> None:
        """'the rest of the prod web servers': what follows, minus the hosts named one by one before."""
        self.close()
        named = [seg for seg in self.scan.include if set(seg.values) == {"host"}]
        if not any(self._fleet_phrase_at(j) for j in range(i + 1, min(i + 6, len(self.tokens)))):
            self.scan.doubts.append("'the rest' of what?")
            return
        for seg in named:
            self.scan.include.remove(seg)
            self.scan.exclude.append(seg)
        self.excluding = False

    def _fleet_phrase_at(self, j: int) -> bool:
        token = self.tokens[j]
        return bool(self.vocabulary.lookup(token) or self.vocabulary.host(token))

    def _sibling(self, number: str) -> bool:
        """'www-01 through www-04 but skip 02': a bare number is the last named host's sibling."""
        if not self.last_name or not (match := re.fullmatch(r"(.*?)(\d+)", self.last_name)):
            return False
        prefix, digits = match.groups()
        candidate = f"{prefix}{int(number):0{len(digits)}d}"
        if self.vocabulary.host(candidate) or self.vocabulary.hosts_ending(candidate):
            self.term("host", Term(kind="name", value=candidate))
            return True
        return False

    @staticmethod
    def _inherit(segments: list[Segment]) -> None:
        """'web servers in prod and staging': the later segment takes the kinds it lacks from the one before."""
        for before, after in pairwise(segments):
            if after.joined and set(after.values) < set(before.values):
                for kind, terms in before.values.items():
                    after.values.setdefault(kind, list(terms))


def scan_targets(text: str, vocabulary: Vocabulary, language: Language, patch_group_names: list[str]) -> Scan:
    return _Scanner(tokenize(text, vocabulary), vocabulary, language, patch_group_names).run()
