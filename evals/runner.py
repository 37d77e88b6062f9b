"""Running a dataset through a provider and scoring it. No printing here: see evals/report.py."""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.rules import is_confident, open_draft_after, parse, rules_only_answer
from core.intent import ACTIONS, RUNS, IntentDraft, IntentResult
from core.inventory import Catalog
from core.validation import validate_draft
from evals.dataset import EXPECTED_KEYS, SET_KEYS, Case

# The confusion matrix's label for a case whose provider raised instead of answering.
NO_ANSWER = "error"


class ProviderUnavailable(RuntimeError):
    """The requested provider cannot run here (no LLM configured, module missing)."""


@dataclass
class CaseResult:
    case: Case
    got: dict
    failed_keys: list[str]
    confident: bool  # the rules parser's own verdict on this case
    latency_ms: float
    error: str | None = None
    llm_calls: int | None = None  # llm provider: model calls and tokens this case used
    llm_tokens: int | None = None
    wrong_target: bool = False  # proposes a run on a host the case does not expect (see `is_wrong_target`)

    @property
    def passed(self) -> bool:
        return not self.failed_keys

    @property
    def confident_and_wrong(self) -> bool:
        """The rules parser would have answered this case without a model call, and the answer is wrong."""
        return self.confident and not self.passed


@dataclass
class Run:
    provider: str
    results: list[CaseResult]
    prompt_version: str | None = None
    model: str | None = None
    per_key: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (passed, total)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def accuracy(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def wrong_target(self) -> list[CaseResult]:
        return [r for r in self.results if r.wrong_target]

    @property
    def confident_and_wrong(self) -> list[CaseResult]:
        return [r for r in self.results if r.confident_and_wrong]

    def confusion(self) -> dict[str, dict[str, int]]:
        """expected action -> got action -> count, over every action that occurs."""
        labels = self.action_labels()
        matrix = {e: dict.fromkeys(labels, 0) for e in labels}
        for r in self.results:
            matrix[r.case.expected["action"]][r.got.get("action") or NO_ANSWER] += 1
        return matrix

    def action_labels(self) -> list[str]:
        used = ({r.case.expected["action"] for r in self.results}
                | {r.got.get("action") or NO_ANSWER for r in self.results})
        return [a for a in (*ACTIONS, NO_ANSWER) if a in used]

    def latency(self) -> dict[str, float]:
        values = sorted(r.latency_ms for r in self.results)
        return {"p50": _percentile(values, 50), "p95": _percentile(values, 95), "max": values[-1] if values else 0.0,
                "mean": sum(values) / len(values) if values else 0.0}


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))  # nearest-rank
    return sorted_values[rank - 1]


def compare(expected: dict, got: dict) -> list[str]:
    """The expected keys whose values differ (hosts, missing and unknown_hosts compare as sets)."""
    failed = []
    for key, want in expected.items():
        have = got.get(key)
        if key in SET_KEYS:
            same = set(want) == set(have or [])
        elif key == "check_mode":
            same = bool(have) == want
        else:
            same = have == want
        if not same:
            failed.append(key)
    return failed


PROPOSING_ACTIONS = RUNS


def is_wrong_target(expected: dict, got: dict) -> bool:
    """The result proposes a patch or pre-check (action patch/precheck with hosts) holding a host outside the
    expected `hosts`, or proposes one where the expected action is not patch/precheck. A case that expects
    patch/precheck but gives no `hosts` cannot be checked and never counts."""
    if got.get("action") not in PROPOSING_ACTIONS or not got.get("hosts"):
        return False
    if expected["action"] not in PROPOSING_ACTIONS:
        return True
    if "hosts" not in expected:
        return False
    return bool(set(got["hosts"]) - set(expected["hosts"]))


# --- providers: case -> IntentResult ----------------------------------------------------------------------------------

Provider = Callable[[Case], IntentResult]


def rules_provider(catalog: Catalog) -> Provider:
    """The rules parser alone, as the chat runs it with no model: a reading it is not sure of is asked about."""
    def run_case(case: Case) -> IntentResult:
        draft = _rules_draft(case, catalog)
        return rules_only_answer(draft, validate_draft(draft, catalog))
    return run_case


def _rules_draft(case: Case, catalog: Catalog) -> IntentDraft:
    """The latest message read against the open draft the earlier turns left, as the chat keeps it."""
    previous: IntentDraft | None = None
    for turn in case.history:
        draft = parse(turn, catalog, previous)
        previous = open_draft_after(previous, draft, validate_draft(draft, catalog))
    return parse(case.text, catalog, previous)


def llm_provider(catalog: Catalog) -> tuple[Provider, str | None, str | None]:
    """-> (provider, prompt version, model). Raises ProviderUnavailable with a one-line reason."""
    from core.settings import get_settings

    settings = get_settings()
    if settings.llm_provider == "none":
        raise ProviderUnavailable("no LLM is configured (set LLM_PROVIDER, LLM_MODEL and LLM_API_KEY)")
    if importlib.util.find_spec("agent.llm_intent") is None:
        raise ProviderUnavailable("the LLM intent parser (agent.llm_intent) is not installed")
    from agent import llm_intent

    parse_with_llm = getattr(llm_intent, "parse_with_llm", None)
    if parse_with_llm is None:
        raise ProviderUnavailable("agent.llm_intent has no parse_with_llm function")

    def run_case(case: Case) -> IntentResult:
        out = parse_with_llm(case.text, catalog, list(case.history))
        if isinstance(out, tuple):  # (draft, result)
            out = out[-1]
        return out if isinstance(out, IntentResult) else validate_draft(out, catalog)

    version = getattr(llm_intent, "PROMPT_VERSION", None)
    return run_case, (str(version) if version is not None else None), settings.llm_model


def run(cases: list[Case], provider_name: str, catalog: Catalog) -> Run:
    prompt_version = model = None
    if provider_name == "llm":
        provider, prompt_version, model = llm_provider(catalog)
    else:
        provider = rules_provider(catalog)

    results = []
    for case in cases:
        error = None
        calls_before, tokens_before = _llm_usage()
        started = time.perf_counter()
        try:
            got = provider(case).eval_view()
        except Exception as exc:  # one broken case is reported as a failure, the run goes on
            got, error = {"action": None}, f"{type(exc).__name__}: {exc}"
        latency_ms = (time.perf_counter() - started) * 1000
        calls_after, tokens_after = _llm_usage()
        usage = {} if provider_name != "llm" else {"llm_calls": int(calls_after - calls_before),
                                                   "llm_tokens": int(tokens_after - tokens_before)}
        failed_keys = compare(case.expected, got) if not error else ["error"]
        results.append(CaseResult(case=case, got=got, failed_keys=failed_keys,
                                  confident=_rules_confident(case, catalog), latency_ms=latency_ms, error=error,
                                  wrong_target=not error and is_wrong_target(case.expected, got), **usage))

    per_key = {}
    for key in EXPECTED_KEYS:
        scored = [r for r in results if key in r.case.expected]
        if scored:
            per_key[key] = (sum(key not in r.failed_keys and not r.error for r in scored), len(scored))
    return Run(provider=provider_name, results=results, prompt_version=prompt_version, model=model, per_key=per_key)


def _llm_usage() -> tuple[float, float]:
    """Model calls and tokens counted so far by the agent's Prometheus counters (0 when it is not loaded)."""
    from prometheus_client import REGISTRY

    calls = tokens = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "patchpilot_llm_calls_total":
                calls += sample.value
            elif sample.name == "patchpilot_llm_tokens_total":
                tokens += sample.value
    return calls, tokens


def _rules_confident(case: Case, catalog: Catalog) -> bool:
    try:
        draft = _rules_draft(case, catalog)
        return is_confident(draft, validate_draft(draft, catalog))
    except Exception:
        return False
