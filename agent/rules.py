"""The deterministic intent parser: chat text -> `IntentDraft`, with no model and no network.

It recognises how operators usually write a patch request and says so through `is_confident`; whatever it cannot
place (an unknown word, an ambiguous patch-group description, a schedule) is left to the LLM path.

Safety rules it keeps:
- Names are never guessed. A word in a host position that is not an inventory host goes into the draft as written,
  so the validator reports it as unknown. Keyword typos ("ptach", "stagng") are corrected; host names never are.
- Pattern-looking input ("web*,db*", "~regex", "@file", "a:&b") is passed through as one name for the validator
  to refuse; the parser never builds a host pattern.
- Prompt-injection phrases are cut out before parsing and change nothing; in particular they never add targets.
- Destructive or out-of-scope commands make the whole message `unsupported`, even next to a patch request.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from pydantic import PrivateAttr
from rapidfuzz.distance import DamerauLevenshtein

from core.intent import IntentDraft, IntentResult
from core.inventory import Catalog
from core.validation import GROUP_ALIASES, resolve_targets, validate_draft

MAX_TEXT_CHARS = 2000
MAX_RANGE = 50


class RulesDraft(IntentDraft):
    """An `IntentDraft` that also remembers what the rules parser could not place (read by `is_confident`)."""

    _unplaced: tuple[str, ...] = PrivateAttr(default=())
    _doubts: tuple[str, ...] = PrivateAttr(default=())


# --- phrase patterns (matched on lower-cased, normalised text) -------------------------------------------------

_INJECTIONS = [re.compile(p) for p in (
    r"\b(?:please\s+)?(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+|any\s+|the\s+|your\s+|my\s+|of\s+)*"
    r"(?:previous|prior|above|earlier|preceding|system|safety|other|existing|former)?\s*"
    r"(?:instructions?|rules?|prompts?|guidelines?|guardrails?|polic(?:y|ies)|restrictions?|constraints?|checks?)\b",
    r"\b(?:and\s+)?(?:just\s+)?approve\s+(?:it|this|that|them|the\s+(?:job|request|patch|proposal|change|run))?\s*"
    r"(?:yourself|automatically|for\s+me|on\s+my\s+behalf|right\s+away|immediately|without\s+asking)\b",
    r"\b(?:and\s+)?(?:self|auto)[\s-]?approve\w*(?:\s+(?:it|this|them))?",
    r"\b(?:there(?:'s|\s+is)\s+)?no\s+need\s+to\s+(?:ask|confirm|wait|check)(?:\s+(?:me|anyone|with\s+me|for\s+\w+))?",
    r"\b(?:without|skip(?:ping)?|bypass(?:ing)?|no)\s+(?:the\s+|any\s+)?(?:approval|confirmation|asking|human\s+review|"
    r"review|approve\s+step|approval\s+step)\b",
    r"\bdon'?t\s+(?:wait\s+for|ask\s+for)\s+(?:approval|confirmation|me)\b",
    r"\b(?:and\s+)?(?:also\s+)?(?:do|patch|include|add|hit|update|hit)?\s*(?:all|every|each)\s+(?:of\s+the\s+)?"
    r"(?:other|remaining)\s+(?:servers?|hosts?|machines?|boxes|box|nodes?)\b",
    r"\b(?:and\s+)?(?:also\s+)?(?:do|patch|include)?\s*the\s+rest\s+of\s+(?:the\s+)?(?:fleet|servers|hosts|machines)\b",
    r"\b(?:you\s+are\s+now|from\s+now\s+on\s+you|pretend\s+(?:to\s+be|you)|act\s+as)\b[^.;!?\n]*",
    r"\bsystem\s*(?:prompt|message|override|instruction)\s*:?[^.;!?\n]*",
    r"\b(?:developer|admin|god|sudo)\s+mode\b(?:\s+(?:on|enabled))?",
    r"\b(?:i\s+am|i'm|im)\s+(?:the\s+|an?\s+)?(?:admin|administrator|root|boss|cto|ciso|owner)\b(?:\s+(?:here|so))?",
    r"\b(?:it'?s|this\s+is)\s+(?:pre-?)?approved(?:\s+already)?\b|\bapproval\s+(?:is\s+)?(?:already\s+)?granted\b",
    r"\bexecute\s+(?:it\s+)?(?:immediately|right\s+away|now)\b",
)]
# Approval can only come from the Approve button; a message that only asks for it is not a request.
_APPROVAL_ONLY = re.compile(
    r"^\W*(?:(?:yes|yep|ok|okay|sure|please|just|so)\W+)*(?:approve|approved|confirm|confirmed|go\s+ahead|do\s+it|ship\s+it|"
    r"lgtm|proceed)(?:\s+(?:it|this|that|them|the\s+\w+|now|please|job\s*#?\d+))*\W*$"
)

_DESTRUCTIVE = re.compile(
    r"\brm\s+-|\bmkfs\b|\bdd\s+if=|\b(?:drop|truncate)\s+(?:the\s+)?(?:database|table|db|schema)\b|\bdelete\b|\bwipe\b|"
    r"\berase\b|\bformat\s+(?:the\s+)?(?:disk|drive|server|partition|/)|\bshut\s*down\b|\bpower[\s-]?off\b|\bpoweroff\b|"
    r"\bdestroy\b|\bdecommission\w*|\bterminate\s+(?:the\s+)?(?:instance|vm|server|host)|\bchmod\b|\bchown\b|\bsudo\b|"
    r"\bkill\s+-\d|\bfork\s*bomb|:\(\)\s*\{|\buninstall\b|\bpurge\b|\bdowngrade\b|\brollback\b|\broll\s+back\b|"
    r"\b(?:create|add|make)\s+(?:a\s+|an\s+|new\s+)*(?:user|account|vm|instance|database|db\s+user|admin)\b|"
    r"\b(?:reset|change)\s+(?:the\s+)?(?:root\s+|admin\s+)?password|\bopen\s+(?:up\s+)?(?:the\s+)?port\b|\bfirewall\b|"
    r"\bdisable\s+(?:selinux|the\s+firewall|auditd|monitoring)|\bdeploy\b|\bexec(?:ute)?\s+(?:the\s+)?(?:command|script)|"
    r"\brun\s+(?:this\s+|the\s+|a\s+)?(?:shell\s+)?(?:command|script)\b|\bssh\s+(?:in)?to\b|\bcurl\s+http|\bwget\s+http|"
    r"\bscale\s+(?:up|down)\b|\bmigrate\b|\bresize\b|\bsnapshot\b|\bbackup\b|\bmount\b|\brestore\b"
)
_SMALL_TALK = re.compile(
    r"^\W*(?:hi|hello|hey|hiya|yo|howdy|good\s+(?:morning|afternoon|evening|night)|thanks?(?:\s+you)?|thx|ty|cheers|"
    r"bye|goodbye|see\s+you|ok|okay|cool|great|nice|lol|haha|sorry|how\s+are\s+you(?:\s+doing)?(?:\s+today)?|"
    r"who\s+are\s+you|what\s+are\s+you|what\s+can\s+you\s+do|help|what\s+is\s+patchpilot|are\s+you\s+(?:a\s+)?(?:bot|human))"
    r"(?:\W+(?:there|mate|buddy|bot|patchpilot|again|a\s+lot|so\s+much|all))*\W*$"
    r"|\bweather\b|\bjoke\b|\bpoem\b|\brecipe\b|\bstock\s+price\b|\bfootball\b|\bmeaning\s+of\s+life\b|\bcapital\s+of\b|"
    r"\btranslate\b|\bwho\s+won\b|\bwrite\s+(?:me\s+)?(?:an?\s+)?(?:email|essay|story|song)"
)

_JOB_ID = re.compile(r"\b(?:awx\s+)?(?:job|run|task)s?\s*(?:(?:no\.?|number|id|num)\s*)?[#:]?\s*(\d{1,12})\b|(?<![\w#])#\s?(\d{1,12})\b")

_NUMBER_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
                 "eight": "8", "nine": "9", "ten": "10"}
_PATCH_GROUP_NAME = re.compile(
    r"\b(?:patch[\s_-]*)?(?:group|grp|gr|pg|baseline)[\s_#:-]*(?:no\.?\s*|number\s*)?"
    r"(\d{1,3}|one|two|three|four|five|six|seven|eight|nine|ten)\b|\bg(\d{1,2})\b"
)
_NOT_THIS_GROUP = re.compile(r"(?:instead\s+of|rather\s+than|not|from|no\s+longer|but\s+not)\s*(?:the\s+)?$")
_DESCRIPTIONS: list[tuple[str, re.Pattern[str]]] = [
    ("Group-2", re.compile(
        r"\bsecurity\s*(?:updates?|patches|fixes|errata|advisories)?\s*(?:and|&|\+|plus|with|incl\.?|including)\s*"
        r"(?:the\s+|also\s+)?bug[\s-]?fix(?:es)?(?:\s+(?:updates?|patches|errata|advisories))?\b|"
        r"\bbug[\s-]?fix(?:es)?\s*(?:updates?|patches|errata|advisories)?\s*(?:and|&|\+|plus)\s*security"
        r"(?:\s+(?:updates?|patches|fixes|errata|advisories))?\b|\bbug[\s-]?fix(?:es)?(?:\s+(?:updates?|patches|errata|advisories))?\b")),
    ("Group-1", re.compile(
        r"\b(?:only|just)\s+(?:the\s+)?(?:critical\s+(?:and|&)\s+important\s+)?security(?:\s+(?:updates?|patches|fixes|errata|advisories))?\b|"
        r"\bsecurity[\s-]*(?:updates?|patches|fixes|errata|advisories)?[\s-]*only\b|\bsec[\s-]only\b|"
        r"\bcritical\s+(?:and|&|\+)\s+important(?:\s+(?:security\s+)?(?:updates?|patches|fixes|advisories|errata))?\b")),
    ("Group-3", re.compile(
        r"\bfull\s+(?:os\s+|system\s+|package\s+)?(?:update|upgrade|patch(?:ing)?|patch\s+run)\b|\bfully\b|"
        r"\beverything\s+(?:incl\.?|including|inc\.?|plus|and|with)\s+(?:the\s+)?kernel\b|"
        r"\b(?:incl\.?|including|inc\.?|with|plus)\s+(?:the\s+)?kernel(?:\s+updates?)?\b|\bkernel\s+(?:updates?|upgrades?|included|too)\b|"
        r"\b(?:all|every)\s+(?:the\s+)?(?:available\s+|pending\s+)?(?:updates|packages|upgrades|patches)\b|"
        r"\blatest\s+(?:packages|versions?|everything)\b|\b(?:update|upgrade)\s+everything\b|\bdist[\s-]?upgrade\b|"
        r"\beverything\s+(?:up\s+to\s+date|to\s+latest)\b")),
]
# "security updates" alone fits Group-1 and Group-2: ask instead of picking one.
_AMBIGUOUS_DESCRIPTION = re.compile(r"\bsecurity(?:\s+(?:updates?|patches|fixes|errata|advisories|patching))?\b")

_REBOOT_NEVER = re.compile(
    r"\b(?:no|without(?:\s+a)?|skip(?:ping)?(?:\s+the)?|don'?t|dont|do\s+not|never|w/o|suppress(?:\s+the)?|avoid(?:\s+a)?|"
    r"not|disable)[\s-]+(?:any\s+|the\s+)?(?:auto[\s-]?)?(?:reboot|restart)\w*(?:\s+(?:it|them|the\s+(?:box|boxes|servers?|hosts?|machines?))"
    r")?(?:\s+(?:afterwards|after(?:\s+patching)?|please|at\s+all))*\b|\bnoreboot\b|\breboot\s*[:=]\s*(?:no|false|never)\b"
)
_REBOOT_IF_NEEDED = re.compile(
    r"\b(?:only\s+)?(?:reboot|restart)\w*(?:\s+(?:it|them))?\s+(?:only\s+)?(?:if|when|as|where)\s+(?:it'?s\s+|is\s+|they\s+are\s+)?"
    r"(?:needed|necessary|required)\b|\bif\s+(?:a\s+)?(?:reboot|restart)\s+is\s+(?:needed|required|necessary)(?:\s+(?:reboot|restart))?\b|"
    r"\breboot\s*[:=]\s*(?:if[_\s-]needed|auto)\b"
)
_REBOOT_ALWAYS = re.compile(
    r"\b(?:force\s+(?:a\s+)?|forced\s+|always\s+|with\s+(?:a\s+)?|and\s+(?:then\s+)?|then\s+|plus\s+(?:a\s+)?|including\s+(?:a\s+)?|"
    r"incl\.?\s+(?:a\s+)?|followed\s+by\s+(?:a\s+)?)(?:reboot|restart)\w*(?:\s+(?:it|them))?(?:\s+(?:afterwards|after(?:wards)?|at\s+the\s+end|"
    r"when\s+done|once\s+done|after\s+patching|anyway|regardless))?\b|\b(?:reboot|restart)\w*(?:\s+(?:it|them))?\s+(?:afterwards|after(?:wards)?|"
    r"at\s+the\s+end|when\s+done|once\s+done|after\s+patching|anyway|regardless)\b|\breboot\s*[:=]\s*(?:yes|true|always)\b"
)
_REBOOT_WORD = re.compile(r"\b(?:reboot|restart)\w*\b")

_NOT_DRY_RUN = re.compile(
    r"\bfor\s+real\b|\bskip\s+(?:the\s+)?(?:dry[\s_-]?run|check[\s_-]mode|simulation)\b|\bnot\s+(?:a\s+|in\s+)?(?:dry[\s_-]?run|check[\s_-]mode|simulation)\b|\bno\s+(?:more\s+)?(?:dry[\s_-]?run|check[\s_-]mode|simulation)\b|"
    r"\b(?:a\s+)?real\s+run\b|\bactually\s+(?:patch|apply|do|run)\s+it\b|\bdo\s+it\s+properly\b"
)
_DRY_RUN = re.compile(
    r"\bdry[\s_-]?run\w*\b|\bcheck[\s_-]?mode\b|--check\b|\bsimulat\w*\b|\bwhat\s+would\s+(?:happen|change)\b|\bwhat[\s-]if\b|"
    r"\bwithout\s+(?:making|applying)\s+(?:any\s+)?changes\b|\bno[\s-]op\b|\btest\s+run\b|\bpreview\b|\bpretend\b|"
    r"\bdon'?t\s+(?:actually\s+)?(?:change|apply)\s+anything\b"
)
_PRECHECK_WORDS = re.compile(
    r"\bpre[\s-]?(?:checks?|flight(?:\s+checks?)?|patch(?:ing)?\s+checks?)\b|\breadiness\s+checks?\b|"
    r"\bready\s+(?:for|to\s+be)\s+patch\w*\b"
)
_PRECHECK = re.compile(_PRECHECK_WORDS.pattern + r"|\bcheck\s+(?:if|whether)\b[^.?!]*\bready\b")
_STATUS = re.compile(
    r"\bstatus\b|\bprogress\b|\bhow(?:'s|\s+is|\s+are|\s+did|\s+far|\s+was)\b|"
    r"\b(?:is|are)\s+(?:it|job|#\d+|[\w-]+\d\w*|the\s+\w+(?:\s+\w+)?)\s+(?:\w+\s+)?(?:done|finished|complete|completed|over|"
    r"running|patched|ok|through|successful)\b|\bdid\s+.*\b(?:finish|complete|succeed|fail|work|go)\w*\b|"
    r"\bhas\s+.*\b(?:finished|completed|been\s+patched|succeeded|failed)\b|\bany\s+(?:news|updates?)\s+(?:on|about|for)\b|"
    r"\b(?:an?\s+)?update\s+on\b|\bwhere\s+(?:are\s+we|is\s+job)\b|\bwhat\s+happened\s+(?:to|with)\b|\bresults?\s+(?:of|for)\b|"
    r"\bwhen\s+was\b.*\bpatched\b|\bcheck\s+on\b|\b(?:show|check|give\s+me)\s+(?:me\s+)?(?:on\s+)?job\s*#?\s*\d+|\bstill\s+running\b"
)
_CANCEL = re.compile(r"\b(?:cancel\w*|abort\w*|stop|stopping|kill|halt|terminate)\b")
_CANCEL_OBJECT = re.compile(r"\b(?:job|jobs|patch\w*|run|update\w*|upgrade\w*|it|that|this|rollout)\b")
_LIST = re.compile(
    r"\b(?:list|show|display|give\s+me|what\s+are|see)\s+(?:me\s+)?(?:all\s+)?(?:of\s+)?(?:my|the|our|all|recent|latest|last|"
    r"today'?s|running|active|failed|open|pending|current|yesterday'?s)?\s*(?:\w+\s+){0,2}(?:jobs|runs|patch\s+runs|requests|history)\b|"
    r"\bwhat(?:'s|\s+is)\s+(?:running|queued|in\s+progress)\b|\bwhat\s+(?:ran|has\s+run|was\s+run|got\s+patched|was\s+patched|jobs?)\b|"
    r"\b(?:job|patch|patching)\s+history\b|\b(?:recent|my|our|running|active|failed)\s+jobs\b|\bany\s+jobs?\s+running\b|"
    r"\bwhich\s+jobs\b|\bjobs\s+(?:today|this\s+week|from\s+today)\b"
)
_PATCH_VERB = re.compile(
    r"\b(?:patch|patches|patched|patching|update|updates|updated|updating|upgrade|upgrades|upgraded|upgrading|apply|applying|"
    r"remediate|install\s+(?:the\s+|all\s+)?(?:\w+\s+)?(?:updates|patches|upgrades|errata)|roll\s*out|bring\b.*\bup\s+to\s+date)\b"
)
# Operations the assistant does not do. Without a patching word they make the message unsupported.
_OTHER_OPERATION = re.compile(
    r"\b(?:reboot|restart|start|install|configure|ping|open|close|create|enable|disable|grant|rotate|renew|"
    r"clean|clear|flush|change|rename|move|copy|upload|download|edit|modify)\w*\b"
)

# --- word classes for the token scan ------------------------------------------------------------------------------

_ENVIRONMENTS = {"prod": "prod", "production": "prod", "prd": "prod", "live": "prod", "staging": "staging",
                 "stage": "staging", "stg": "staging", "preprod": "staging", "pre-prod": "staging", "uat": "staging",
                 "dev": "dev", "development": "dev", "develop": "dev"}
_ROLES = {"web": "web", "webserver": "web", "webservers": "web", "websrv": "web", "frontend": "web", "frontends": "web",
          "app": "app", "apps": "app", "application": "app", "applications": "app", "appserver": "app", "appservers": "app",
          "db": "db", "dbs": "db", "database": "db", "databases": "db", "dbserver": "db", "dbservers": "db",
          "cache": "cache", "caches": "cache", "redis": "cache", "lb": "lb", "lbs": "lb", "loadbalancer": "lb",
          "loadbalancers": "lb", "balancer": "lb", "balancers": "lb", "bastion": "bastion", "bastions": "bastion",
          "jumphost": "bastion", "jumphosts": "bastion", "jump": "bastion"}
_HOST_NOUNS = {"server", "servers", "host", "hosts", "machine", "machines", "box", "boxes", "node", "nodes", "vm", "vms",
               "instance", "instances", "system", "systems", "tier", "tiers", "cluster", "fleet", "environment", "env",
               "envs", "environments", "side", "layer", "role", "group", "groups", "ones", "one"}
_QUANTIFIERS = {"all", "every", "each", "entire", "whole", "both", "any"}
_EXCLUDERS = {"except", "excluding", "exclude", "without", "minus", "not", "skip", "skipping", "leave", "drop", "remove",
              "omit", "omitting", "but"}
_ADDITIVE = {"also", "too", "additionally", "add", "plus", "including", "include", "well"}  # "as well"
_REPLACING = {"instead", "rather", "actually", "switch", "change", "make", "only", "just"}
_CONNECTORS = {"and", "or", "&", ",", "plus", "as", "n"}
_TARGET_PREPOSITIONS = {"on", "onto", "for", "to", "against", "at"}
_FILLER = {
    "please", "pls", "plz", "kindly", "can", "could", "would", "will", "shall", "should", "may", "might", "you", "u", "i",
    "we", "me", "my", "our", "us", "the", "a", "an", "this", "that", "these", "those", "it", "them", "their", "its",
    "with", "using", "use", "via", "in", "of", "from", "by", "is", "are", "was", "be", "been", "being", "do", "does", "did",
    "done", "go", "ahead", "run", "running", "start", "launch", "kick", "off", "now", "right", "asap", "quickly", "want",
    "wanna", "need", "needs", "like", "let's", "lets", "let", "hey", "hi", "ok", "okay", "so", "then", "there", "here",
    "what", "which", "how", "about", "up", "set", "get", "have", "has", "had", "job", "jobs", "patch", "patches",
    "patched", "patching", "update", "updates", "updated", "updating", "upgrade", "upgrades", "upgrading", "apply",
    "applying", "install", "os", "linux", "packages", "package", "latest", "pending", "available", "yes", "yeah",
    "thanks", "thank", "cheers", "today", "again", "once", "more", "same", "other", "it's", "that's", "i'd",
    "i'm", "we'd", "you're", "there's", "what's", "where's", "how's", "doing", "going", "currently", "still", "status",
    "progress", "cancel", "abort", "stop", "kill", "halt", "show", "list", "see", "check", "checks", "mode", "tell",
    "give", "know", "ready", "for", "if", "whether", "when", "where", "who", "stuff", "everything", "on", "onto", "at",
    "to", "against", "into", "baseline", "level", "round", "cycle", "window", "request", "new", "open", "current",
    "everywhere", "vulnerabilities", "vulns", "cves", "errata", "advisories", "fixes", "properly", "safely", "carefully",
    "immediately", "afterwards", "after", "later", "first", "last", "next", "ones", "one", "real", "some", "few",
    "named", "called", "also", "as", "well", "too", "instead", "rather", "actually", "switch", "change", "make",
    "only", "just", "both", "and", "or", "plus", "n", "hosts", "host", "servers", "server", "happen",
    "happened", "finished", "complete", "completed", "over", "through", "successful", "succeed", "fail",
    "failed", "work", "worked", "news", "result", "results", "anything", "something", "things", "prod's", "ran",
    "reboot", "restart", "far", "whats", "hows", "yet", "already", "finish",
}
# Keyword vocabulary that typos are corrected to. Host names are never corrected.
_TYPO_TARGETS = ("patch", "patching", "update", "upgrade", "reboot", "restart", "cancel", "abort", "status",
                 "staging", "production", "servers", "server", "database", "databases", "precheck", "prechecks",
                 "group", "security", "kernel", "simulate", "except", "webservers", "please", "dry-run")
_TIME_WORDS = re.compile(r"\b(?:tonight|tomorrow|weekend|saturday|sunday|monday|tuesday|wednesday|thursday|friday|"
                         r"midnight|noon|\d{1,2}(?::\d\d)?\s*(?:am|pm)|at\s+\d{1,2}:\d\d|next\s+week|every\s+(?:day|night|week))\b")

_CHUNK_STRIP = ".,;:!?\"'()`"
_PHRASES = [(re.compile(p), r) for p, r in (
    (r"\bload[\s-]?balancers?\b", " lb "), (r"\bjump[\s-]?(?:hosts?|boxes|servers?)\b", " bastion "),
    (r"\bbut\s+not|apart\s+from|other\s+than|leave\s+out|except\s+for|with\s+the\s+exception\s+of\b", " except "),
    (r"\bas\s+well(?:\s+as)?\b", " also "),
)]
_PATTERN_SYNTAX = re.compile(r"[:&!~@\[\]{}|^$\\/=<>%+]")
# Word-ish tokens with a digit could be host names, in any script (a Cyrillic 'е' must come out as unknown).
_HOST_LIKE = re.compile(r"^[\w*?][\w.*?-]*$")
_NOT_A_HOST = re.compile(
    r"^(?:\d+(?:st|nd|rd|th|am|pm|h|hrs?|m|mins?|s|secs?|d|days?|x|%)|v\d+(?:\.\d+)*|el\d+|rhel\d*|cve-[\d-]+|rhsa-[\d:-]+|"
    r"x86[_-]64|i\d86|ipv\d|\d+)$"
)
_RANGE = re.compile(
    r"\b([a-z][a-z0-9-]*?)(\d+)\s*(?:to|through|thru|till|until|\.\.|-|–)\s*(?:\1)?(\d+)\b"
)
_SPACED_HOST = re.compile(r"\b(web|app|db|cache|lb|jump)\s+(\d{1,3})\b(?!\s*(?:%|am|pm|h\b|min))")
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": " - "})


@dataclass
class _Scan:
    """What the token scan found in the text that was left after the phrase patterns."""

    hosts: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    envs: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    whole_fleet: bool = False
    additive: bool = False
    replacing: bool = False
    unplaced: list[str] = field(default_factory=list)

    @property
    def has_targets(self) -> bool:
        return bool(self.hosts or self.roles or self.envs or self.whole_fleet)


@dataclass
class _Reading:
    """Everything the parser read from one message, before it is combined with the previous draft."""

    action: str | None = None  # None: no action word (a fragment such as "Group-2" or "no reboot")
    scan: _Scan = field(default_factory=_Scan)
    patch_group: str | None = None
    reboot: str | None = None
    check_mode: bool | None = None  # None: not mentioned
    job_id: int | None = None
    explicit_action: bool = False  # an action word was written (not only implied by a patch group)
    injection: bool = False
    doubts: list[str] = field(default_factory=list)
    note: str | None = None
    recognised: bool = False  # small talk or a destructive command was recognised as such


# --- public API ---------------------------------------------------------------------------------------------------

def parse(text: str, catalog: Catalog, previous: IntentDraft | None = None) -> IntentDraft:
    """Read one chat message. `previous` is the conversation's open draft; a follow-up fragment amends it."""
    reading = _read(text, catalog)
    if previous is not None and previous.action in ("patch", "precheck", "clarify") and _is_follow_up(reading, previous, catalog):
        return _merge(previous, reading, catalog)
    if previous is not None and reading.action is None and not reading.scan.has_targets and _carries_nothing(reading):
        # Only an injection or an approval request: the open intent stays exactly as it was.
        return _copy_of(previous)
    return _draft_from(reading, catalog)


def interpret(text: str, catalog: Catalog, previous: IntentDraft | None = None) -> tuple[IntentDraft, IntentResult]:
    draft = parse(text, catalog, previous)
    return draft, validate_draft(draft, catalog)


def is_confident(draft: IntentDraft, result: IntentResult) -> bool:
    """True when the rules parser placed every word and nothing was ambiguous. Drafts from elsewhere: False."""
    if not isinstance(draft, RulesDraft):
        return False
    if draft._unplaced or draft._doubts:
        return False
    return result.action == draft.action or result.action == "clarify"


# --- reading one message --------------------------------------------------------------------------------------------

def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text[:MAX_TEXT_CHARS]).translate(_ZERO_WIDTH).translate(_QUOTES)
    return " ".join(text.lower().split())


def _fix_typos(text: str) -> str:
    """Correct misspelt keywords ('ptach' -> 'patch'). Words with digits (host names) are left alone."""
    def fix(match: re.Match[str]) -> str:
        word = match.group(0)
        if len(word) < 4 or word in _FILLER or word in _ENVIRONMENTS or word in _ROLES or word in _HOST_NOUNS:
            return word
        budget = 1 if len(word) < 8 else 2
        for target in _TYPO_TARGETS:
            if word != target and abs(len(word) - len(target)) <= budget and DamerauLevenshtein.distance(word, target) <= budget:
                return target
        return word
    return re.sub(r"(?<![\w-])[a-z]+(?![\w-])", fix, text)


def _cut(pattern: re.Pattern[str], text: str) -> tuple[str, list[re.Match[str]]]:
    """Remove every match of `pattern`, leaving a clause break '|' so lists do not run across the gap."""
    found = list(pattern.finditer(text))
    return (pattern.sub(" | ", text) if found else text), found


def _read(text: str, catalog: Catalog) -> _Reading:
    reading = _Reading()
    text = _normalise(text)
    text = re.sub(r"(?<!\S)w/o(?!\S)", "without", re.sub(r"(?<!\S)w/(?!\S)", "with", text))

    for pattern in _INJECTIONS:
        text, found = _cut(pattern, text)
        reading.injection |= bool(found)

    if _DESTRUCTIVE.search(text):
        reading.action, reading.recognised = "unsupported", True
        reading.note = "That is not a patching request; I can only patch, pre-check, report on or cancel patch jobs."
        return reading
    stripped = re.sub(r"[\s|.,;!?]+", " ", text).strip()
    if _APPROVAL_ONLY.match(stripped):
        reading.recognised = True
        reading.note = "Approval is only given with the Approve button."
        return reading
    if not stripped or _SMALL_TALK.search(stripped):
        reading.recognised = True
        if not reading.injection:
            reading.action = "unsupported"
            reading.note = "I can patch servers, run pre-checks, report on jobs and cancel them."
        return reading

    text = _fix_typos(text)
    if _TIME_WORDS.search(text):
        reading.doubts.append("schedule")  # no scheduling: a proposal runs when approved

    text = _read_patch_group(text, reading)  # first: "group #2" is not job 2
    found = list(_JOB_ID.finditer(text))
    text = _JOB_ID.sub(" job ", text)  # the word stays for the action patterns ("is job finished")
    for match in found:
        number = int(match.group(1) or match.group(2))
        if number <= 2**31 - 1:
            reading.job_id = number

    text = _read_reboot(text, reading)
    text, found = _cut(_NOT_DRY_RUN, text)
    if found:
        reading.check_mode = False
    text, found = _cut(_DRY_RUN, text)
    if found:
        reading.check_mode = True

    reading.action = _action(text, reading)
    if reading.action == "precheck":
        text, _ = _cut(_PRECHECK_WORDS, text)
    elif reading.action == "list_jobs":
        text, _ = _cut(_LIST, text)
    elif reading.action == "patch" and reading.reboot is None and _REBOOT_WORD.search(text):
        reading.reboot = "always"  # "patch web-01 with Group-1, reboot"
    text = _REBOOT_WORD.sub(" ", text)
    for pattern, replacement in _PHRASES:
        text = pattern.sub(replacement, text)
    text = _RANGE.sub(lambda m: _expand_range(m) or m.group(0), text)
    text = _SPACED_HOST.sub(lambda m: f"{m.group(1)}-{m.group(2)}" if _is_host(f"{m.group(1)}-{m.group(2)}", catalog)
                            else m.group(0), text)
    reading.scan = _scan(text, catalog)

    if reading.action == "unsupported" and reading.scan.has_targets and not reading.scan.unplaced:
        reading.recognised = True  # "reboot web-01": understood, and out of scope
    return reading


def _read_patch_group(text: str, reading: _Reading) -> str:
    names: list[str] = []
    for match in _PATCH_GROUP_NAME.finditer(text):
        if _NOT_THIS_GROUP.search(text[: match.start()]):
            continue
        number = match.group(1) or match.group(2)
        name = f"Group-{_NUMBER_WORDS.get(number, number).lstrip('0') or '0'}"
        if name not in names:
            names.append(name)
    text, _ = _cut(_PATCH_GROUP_NAME, text)
    if len(names) > 1:
        reading.doubts.append("several patch groups")
        reading.patch_group = " or ".join(names)  # the validator resolves none of it: patch group missing
    elif names:
        reading.patch_group = names[0]

    described: list[str] = []
    for name, pattern in _DESCRIPTIONS:
        text, found = _cut(pattern, text)
        if found:
            described.append(name)
    if described and reading.patch_group is None:
        if len(described) == 1:
            reading.patch_group = described[0]
        else:
            reading.doubts.append("patch group description fits several groups")
            reading.patch_group = " or ".join(described)
    text, found = _cut(_AMBIGUOUS_DESCRIPTION, text)
    if found and reading.patch_group is None:
        reading.doubts.append("'security updates' fits Group-1 and Group-2")
        reading.patch_group = "security updates"  # resolves to no group: the operator is asked to pick one
    return text


def _read_reboot(text: str, reading: _Reading) -> str:
    for policy, pattern in (("never", _REBOOT_NEVER), ("if_needed", _REBOOT_IF_NEEDED), ("always", _REBOOT_ALWAYS)):
        text, found = _cut(pattern, text)
        if found and reading.reboot is None:
            reading.reboot = policy
    return text


def _action(text: str, reading: _Reading) -> str | None:
    verb = bool(_PATCH_VERB.search(text))
    action: str | None = None
    if _CANCEL.search(text) and (reading.job_id is not None or _CANCEL_OBJECT.search(text) or verb
                                 or len(text.split()) <= 3):
        action = "cancel"
    elif _LIST.search(text) and reading.job_id is None:
        action = "list_jobs"
    elif _STATUS.search(text) and reading.check_mode is None and not _PRECHECK_WORDS.search(text):
        action = "status"
    elif reading.job_id is not None and not verb and reading.patch_group is None:
        action = "status"  # "job 42?"
    elif _PRECHECK.search(text):
        action = "precheck"
    elif verb:
        action = "patch"
    if action is not None:
        reading.explicit_action = True
        return action
    if reading.patch_group is not None or reading.check_mode is True:
        return "patch"  # "web-01 with group 2", "dry run web-01": a patch request without the verb
    if _REBOOT_WORD.search(text):
        reading.recognised = True  # "reboot all servers now": understood, and not a patch request
    if _REBOOT_WORD.search(text) or _OTHER_OPERATION.search(text):
        reading.note = "I can only patch servers with a patch group; other operations are out of scope."
        return "unsupported"
    return None


def _expand_range(match: re.Match[str]) -> str | None:
    prefix, first, last = match.group(1), match.group(2), match.group(3)
    start, end = int(first), int(last)
    if not (start < end <= start + MAX_RANGE):
        return None
    width = len(first)
    return " , ".join(f"{prefix}{n:0{width}d}" for n in range(start, end + 1))


def _is_host(name: str, catalog: Catalog) -> bool:
    return _host_index(catalog).get(re.sub(r"[-_.]", "", name)) is not None


_INDEXES: dict[int, tuple[Catalog, dict[str, str]]] = {}


def _host_index(catalog: Catalog) -> dict[str, str]:
    """Separator-free lower-case key -> host name ('web01' -> 'web-01'), for the few catalogs in use."""
    cached = _INDEXES.get(id(catalog))
    if cached is None or cached[0] is not catalog:
        index: dict[str, str] = {}
        for host in catalog.inventory.hosts:
            key = re.sub(r"[-_.]", "", host.lower())
            index[key] = host if key not in index else ""  # "" marks a key two hosts share
        cached = _INDEXES[id(catalog)] = (catalog, index)
    return cached[1]


def _chunks(text: str, catalog: Catalog) -> list[str]:
    """Whitespace-separated pieces; a comma list of plain names is split, a pattern-looking piece is kept whole."""
    pieces: list[str] = []
    for chunk in text.split():
        if chunk.endswith("?") and _is_question_mark(chunk, catalog):
            chunk = chunk.rstrip("?")
            pieces_end = True
        else:
            pieces_end = False
        chunk = chunk.strip("`")
        if chunk.endswith(":") and not _PATTERN_SYNTAX.search(chunk[:-1]):
            chunk = chunk[:-1]  # "hosts:" / "web-03:" ends a label
        if _PATTERN_SYNTAX.search(chunk) and re.search(r"[a-z0-9]", chunk) and chunk not in ("|", "&"):
            pieces.append(chunk.strip(".;!?\"'()"))
            continue
        if "," in chunk and any(c in chunk for c in "*?"):
            pieces.append(chunk.strip(".;!?\"'()"))  # 'web*,db*' is an Ansible pattern, not a list
            continue
        for part in re.split(r"(,)", chunk):
            if part == ",":
                pieces.append(",")
            elif part:
                core = part.strip(_CHUNK_STRIP) if not any(c in part for c in "*?") else part.strip(".,;!\"'()")
                if core:
                    pieces.append(core)
                if part.endswith((".", ";", "!", "?")) and not any(c in part for c in "*?"):
                    pieces.append("|")
        if pieces_end:
            pieces.append("|")
    return pieces


def _is_question_mark(chunk: str, catalog: Catalog) -> bool:
    """'done?' ends a question; 'web-0?' is a glob. A trailing '?' is a glob only if it then matches some host."""
    word = chunk.rstrip("?")
    if not re.search(r"\d", word) or "*" in word or _is_host(word, catalog):
        return not ("*" in word)
    pattern = re.compile(re.escape(word) + "." * (len(chunk) - len(word)) + "$")
    return not any(pattern.match(host) for host in catalog.inventory.hosts)


def _scan(text: str, catalog: Catalog) -> _Scan:
    scan = _Scan()
    index = _host_index(catalog)
    tokens = _chunks(text, catalog)
    excluding = False
    previous_word = ""

    def add_target(kind: str, value: str) -> None:
        if excluding:
            if value not in scan.exclude:
                scan.exclude.append(value)
            return
        bucket = {"host": scan.hosts, "role": scan.roles, "env": scan.envs}[kind]
        if value not in bucket:
            bucket.append(value)

    for position, token in enumerate(tokens):
        following = tokens[position + 1] if position + 1 < len(tokens) else ""
        if token == "|":
            excluding = False
        elif token in _CONNECTORS:
            pass
        elif token in _EXCLUDERS and token != "but":
            excluding = True
        elif token in ("all", "everything", "fleet") and _means_whole_fleet(tokens, position):
            scan.whole_fleet = True
        elif re.fullmatch(r"\W+", token):
            pass
        elif token.startswith("-") or _PATTERN_SYNTAX.search(token):
            add_target("host", token)  # pattern syntax: the validator refuses it by name
        elif index.get(re.sub(r"[-_.]", "", token)):
            add_target("host", index[re.sub(r"[-_.]", "", token)])
        elif any(c in token for c in "*?") and re.search(r"[a-z0-9]", token) or token in ("*", "?"):
            add_target("host", token)
        elif token in _ENVIRONMENTS:
            add_target("env", _ENVIRONMENTS[token])
        elif token in _ROLES or GROUP_ALIASES.get(token) in _ROLES.values():
            add_target("role", _ROLES.get(token) or GROUP_ALIASES[token])
        elif token in catalog.inventory.groups and token != "all":
            add_target("role", token)
        elif _HOST_LIKE.match(token) and re.search(r"\d", token) and not _NOT_A_HOST.match(token):
            add_target("host", token)  # looks like a host name: the validator says whether it exists
        elif token in _ADDITIVE:
            scan.additive = True
        elif token in _REPLACING:
            scan.replacing = True
        elif token in _QUANTIFIERS or token in _HOST_NOUNS or token in _FILLER or token in _TARGET_PREPOSITIONS:
            pass
        elif token == "but":
            pass
        elif _HOST_LIKE.match(token) and (previous_word in _HOST_NOUNS - {"group", "groups"} | {"patch", "on", "onto"}
                                          or following in ("server", "host", "box", "machine", "node", "vm")):
            scan.unplaced.append(token)
            add_target("host", token)  # "patch zeus": a name in a host position, reported as unknown
        else:
            scan.unplaced.append(token)
        if token not in _CONNECTORS:
            previous_word = token
    return scan


def _means_whole_fleet(tokens: list[str], position: int) -> bool:
    """'all' / 'everything' as the target itself, not as a quantifier ('all prod web servers')."""
    rest = [t for t in tokens[position + 1:] if t not in ("the", "of", "our", "my")]
    head = rest[0] if rest else ""
    return head in ("", "|", ",", "servers", "hosts", "machines", "boxes", "nodes", "systems", "vms", "instances",
                    "with", "using", "to", "and", "except", "but", "fleet", "now", "please", "on", "in", "at",
                    "environments", "envs", "them")


# --- building the draft ------------------------------------------------------------------------------------------

def _targets(scan: _Scan, catalog: Catalog) -> dict[str, list[str]]:
    hosts, groups, within = list(scan.hosts), list(scan.roles), []
    if scan.whole_fleet and not (scan.hosts or scan.roles or scan.envs):
        groups = ["all"]  # the validator answers that the whole fleet is too broad
    elif len(scan.envs) == 1 and (scan.roles or any(c in h for h in hosts for c in "*?") or not hosts):
        within = list(scan.envs)
    elif len(scan.envs) > 1 and scan.roles:
        # "web servers in prod and staging": a union of intersections, which the draft has no field for.
        inventory = catalog.inventory
        for env in scan.envs:
            for role in scan.roles:
                hosts += sorted(inventory.group_hosts(env) & inventory.group_hosts(role))
        groups = []
    else:
        groups += scan.envs
    return {"hosts": hosts, "groups": groups, "within": within, "exclude_hosts": list(scan.exclude)}


def _new_draft(reading: _Reading, **fields) -> RulesDraft:
    draft = RulesDraft(**fields)
    draft._unplaced = tuple(reading.scan.unplaced)
    draft._doubts = tuple(reading.doubts)
    return draft


def _draft_from(reading: _Reading, catalog: Catalog) -> RulesDraft:
    action = reading.action
    if action is None:
        if reading.scan.has_targets or reading.patch_group or reading.reboot:
            action = "patch"  # "web-01 with group 2": a patch request without the verb
            reading.doubts.append("no action word")
        else:
            if not reading.recognised:
                reading.doubts.append("nothing recognised")
            return _new_draft(reading, action="unsupported", note=reading.note or "I did not understand that request.")
    if action == "unsupported":
        if not reading.recognised:
            reading.doubts.append("out of scope, not recognised")
        return _new_draft(reading, action="unsupported", note=reading.note)
    if action == "list_jobs":
        return _new_draft(reading, action="list_jobs")
    targets = _targets(reading.scan, catalog)
    if action in ("status", "cancel"):
        return _new_draft(reading, action=action, job_id=reading.job_id, **targets)
    return _new_draft(reading, action=action, patch_group=reading.patch_group, reboot=reading.reboot,
                      check_mode=bool(reading.check_mode), **targets)


def _carries_nothing(reading: _Reading) -> bool:
    """Only an injection or an approval request: nothing in it may change the open intent."""
    asks_approval = (reading.note or "").startswith("Approval")
    return (reading.injection or asks_approval) and reading.patch_group is None and reading.reboot is None \
        and reading.check_mode is None and reading.job_id is None and not reading.scan.exclude


def _is_follow_up(reading: _Reading, previous: IntentDraft, catalog: Catalog) -> bool:
    """Does this message amend the open intent rather than start a new one?"""
    if reading.action in ("status", "cancel", "list_jobs", "unsupported"):
        return False
    switches_action = reading.explicit_action and not reading.scan.has_targets  # "just run the pre-checks instead"
    amends = (reading.patch_group or reading.reboot or reading.check_mode is not None or reading.scan.exclude
              or reading.scan.has_targets or switches_action)
    if not amends:
        return False
    if not reading.explicit_action or reading.scan.additive or reading.scan.replacing:
        return True
    # A verb with its own targets and patch group is a complete new request.
    if reading.scan.has_targets and reading.patch_group:
        return False
    if previous.action == "clarify" or validate_draft(previous, catalog).action == "clarify":
        return True  # the open intent is waiting for exactly this kind of answer
    return not reading.scan.has_targets


def _merge(previous: IntentDraft, reading: _Reading, catalog: Catalog) -> RulesDraft:
    scan = reading.scan
    action = reading.action if reading.explicit_action else previous.action
    if action == "clarify":
        action = "patch"
    fields = {"hosts": list(previous.hosts), "groups": list(previous.groups), "within": list(previous.within),
              "exclude_hosts": list(previous.exclude_hosts)}
    if scan.has_targets:
        new = _targets(scan, catalog)
        if scan.additive and not scan.replacing:
            fields = _union_targets(previous, new, catalog)
        else:
            fields = _keep_other_dimension(previous, scan, new)
    if scan.exclude:
        fields["hosts"] = [h for h in fields["hosts"] if h not in scan.exclude]
        fields["exclude_hosts"] = _unique(fields["exclude_hosts"] + scan.exclude)
    check_mode = previous.check_mode if reading.check_mode is None else reading.check_mode
    return _new_draft(
        reading, action=action, patch_group=reading.patch_group or previous.patch_group,
        reboot=reading.reboot or previous.reboot, check_mode=check_mode, **fields,
    )


def _keep_other_dimension(previous: IntentDraft, scan: _Scan, new: dict[str, list[str]]) -> dict[str, list[str]]:
    """'make that the staging ones' after 'the prod web servers' keeps 'web'; 'the db servers instead' keeps 'prod'."""
    roles = [g for g in previous.groups if g not in _ENVIRONMENTS.values() and g != "all"]
    if scan.envs and not (scan.hosts or scan.roles) and roles and len(scan.envs) == 1:
        return new | {"groups": roles, "within": list(scan.envs)}
    if scan.roles and not (scan.hosts or scan.envs) and previous.within:
        return new | {"within": list(previous.within)}
    return new


def _union_targets(previous: IntentDraft, new: dict[str, list[str]], catalog: Catalog) -> dict[str, list[str]]:
    if previous.within == new["within"]:
        return {key: _unique(list(getattr(previous, key)) + new[key]) for key in ("hosts", "groups", "exclude_hosts")} | {
            "within": list(previous.within)}
    # Different scopes ("prod web" plus "the staging db"): spell both out as exact hosts.
    old = resolve_targets(previous, catalog.inventory)
    added = resolve_targets(IntentDraft(action="patch", **new), catalog.inventory)
    return {"hosts": sorted(old.hosts | added.hosts) + old.unknown + added.unknown, "groups": [], "within": [],
            "exclude_hosts": []}


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _copy_of(previous: IntentDraft) -> RulesDraft:
    draft = RulesDraft(**previous.model_dump())
    draft._unplaced = getattr(previous, "_unplaced", ())
    draft._doubts = getattr(previous, "_doubts", ())
    return draft
