"""The LLM agent with a scripted fake chat model: tool calls, validation, clarification, amendment, memory, failure
fallbacks and the hybrid path; a model that obeys attacks (widening through searches, globs and earlier drafts,
false claims, slowness). No network; the API tests use the real database."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from agent import llm
from agent.llm_intent import PROMPT_VERSION, AgentFailure, run_agent
from agent.memory import Turn, history_messages
from agent.service import OUTCOME_CLAIM_REPLY, describe_clarification, interpret_message
from core.intent import IntentDraft
from core.inventory import get_catalog
from core.settings import Settings
from core.targets import TargetExpr
from core.targets import name as name_term

SECOND_PROD_WEB = "can you sort out the security fixes on the second prod web box?"
WEB_02 = "can you sort out the security fixes on web-02 in prod?"


@dataclass
class Slow:
    """A script step that takes `seconds` before it answers with `then`."""

    seconds: float
    then: Any


class ScriptedModel(FakeMessagesListChatModel):
    """Plays `script` in order: an AIMessage is returned, an exception raised, a `Slow` step waits first. Records what
    each call was sent and the timeout it was given."""

    script: list[Any]
    responses: list = Field(default_factory=list)
    calls: list = Field(default_factory=list)
    timeouts: list = Field(default_factory=list)
    model_name: str = "fake-model"
    bound_tools: list = Field(default_factory=list)

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        self.bound_tools = [t["function"]["name"] for t in tools]
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.calls.append(list(messages))
        self.timeouts.append(kwargs.get("timeout"))
        if len(self.calls) > len(self.script):
            raise AssertionError(f"unexpected model call #{len(self.calls)}")
        step = self.script[len(self.calls) - 1]
        if isinstance(step, Slow):
            time.sleep(step.seconds)
            step = step.then
        if isinstance(step, BaseException):
            raise step
        return ChatResult(generations=[ChatGeneration(message=step)])


def tool(name: str, call_id: str = "call_1", **args) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}],
                     usage_metadata={"input_tokens": 100, "output_tokens": 10, "total_tokens": 110})


def sel(*terms: str | dict) -> list:
    """One selection for propose_patch, as the tool schema shows it: a list of terms that must all match."""
    return list(terms)


def targets(*include: list, exclude: tuple[list, ...] = ()) -> dict:
    return {"include": list(include), "exclude": list(exclude)}


def names(*hosts: str) -> dict:
    return targets(*(sel(h) for h in hosts))


def model(*script) -> ScriptedModel:
    return ScriptedModel(script=list(script), calls=[])


@pytest.fixture
def catalog():
    return get_catalog()


@pytest.fixture
def settings():
    return Settings(llm_provider="openai", llm_model="fake-model", llm_max_calls_per_turn=4)


@pytest.fixture
def use_model():
    """Injects a fake model into the hybrid path; restores the factory afterwards."""
    installed = []

    def install(fake: ScriptedModel) -> ScriptedModel:
        installed.append(llm.set_model_factory(lambda _settings: fake))
        return fake

    yield install
    llm.set_model_factory(None)


def counter(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def model_path(monkeypatch):
    """The rules parser is never confident: every turn goes to the model (whatever the rules parser would say)."""
    from agent import rules

    monkeypatch.setattr(rules, "is_confident", lambda draft, result: False)


# --- the loop ----------------------------------------------------------------------------------------------------

def test_complete_intent_searches_then_proposes(catalog):
    fake = model(tool("search_inventory", "c1", query="prod web"),
                 tool("propose_patch", "c2", targets=names("web-02"), patch_group="Group-1"))
    outcome = run_agent(WEB_02, catalog=catalog, model=fake)
    assert outcome.result.is_proposable
    assert (outcome.result.hosts, outcome.result.patch_group) == (["web-02"], "Group-1")
    assert outcome.usage == {"llm_calls": 2, "input_tokens": 200, "output_tokens": 20}
    assert fake.bound_tools == ["search_inventory", "list_patch_groups", "propose_patch", "job_status", "list_jobs",
                                "propose_cancel"]
    first, second = fake.calls
    assert isinstance(first[0], SystemMessage) and "cannot approve" in first[0].content
    assert isinstance(first[-1], HumanMessage) and first[-1].content == WEB_02
    search_result = second[-1]
    assert isinstance(search_result, ToolMessage) and search_result.tool_call_id == "c1"
    assert "web-02" in search_result.content and "db-01" not in search_result.content
    assert "stg-web-01" not in search_result.content  # prod AND web
    assert [c["name"] for c in outcome.tool_calls] == ["search_inventory", "propose_patch"]


def test_missing_patch_group_is_asked_with_descriptions_then_answered_next_turn(catalog):
    first = run_agent(WEB_02, catalog=catalog,
                      model=model(tool("search_inventory", "c0", query="prod web"),
                                  tool("propose_patch", "c1", targets=names("web-02"), patch_group="security fixes")))
    assert first.result.action == "clarify" and first.result.missing == ["patch_group"]
    reply = describe_clarification(first.result, catalog)
    for group in catalog.patch_groups.values():
        assert group.name in reply and group.description in reply

    history = [Turn("user", WEB_02), Turn("assistant", reply, first.tool_calls)]
    fake = model(tool("propose_patch", "c2", targets=names("web-02"), patch_group="Group-2"))
    second = run_agent("hmm, the second option sounds right", catalog=catalog, model=fake,
                       previous=first.draft, history=history)
    assert second.result.is_proposable and second.result.patch_group == "Group-2"
    sent = fake.calls[0]
    assert '"targets": {"include": [["web-02"]]}' in sent[0].content  # the open draft, in the tool's form
    assert [type(m).__name__ for m in sent[1:]] == ["HumanMessage", "AIMessage", "ToolMessage", "ToolMessage",
                                                    "AIMessage", "HumanMessage"]
    assert [c["id"] for c in sent[2].tool_calls] == ["c0", "c1"]
    assert [m.tool_call_id for m in sent[3:5]] == ["c0", "c1"]


def test_amendment_goes_through_the_hybrid_path_with_prompt_version(catalog, settings, use_model, model_path):
    previous = IntentDraft(action="patch", targets=TargetExpr(include=[name_term("web-02")]), patch_group="Group-2")
    history = [Turn("user", "patch web-02 with group 2"), Turn("assistant", "Patch proposal for 1 host.")]
    use_model(model(tool("propose_patch", targets=names("web-02"), patch_group="Group-2", check_mode=True)))
    out = interpret_message("hmm, make that one a simulation instead please", catalog=catalog, previous=previous,
                            history=history, settings=settings)
    assert out.engine == "llm:fake-model" and out.model_name == "fake-model"
    assert out.prompt_version == PROMPT_VERSION and PROMPT_VERSION == "intent_system.v2+intent_examples.v2"
    assert out.result.is_proposable and out.result.check_mode is True and out.result.hosts == ["web-02"]
    assert out.usage["llm_calls"] == 1


def test_the_open_draft_alone_grounds_nothing(catalog):
    """The open draft counts only through the user's words that made it: with those out of the history, a target
    the model takes from the draft is asked about."""
    previous = IntentDraft(action="patch", targets=TargetExpr(include=[name_term("web-02")]), patch_group="Group-2")
    out = run_agent("make that one a simulation instead please", catalog=catalog, previous=previous,
                    model=model(tool("propose_patch", targets=names("web-02"), patch_group="Group-2",
                                     check_mode=True)))
    assert out.result.action == "clarify" and not out.result.is_proposable
    assert "web-02" in out.result.message and out.result.hosts == []


def test_names_from_the_assistants_turns_do_not_count_as_the_users(catalog):
    history = [Turn("user", "patch dbb-01 with Group-1"),
               Turn("assistant", "I don't know a host called 'dbb-01'. Did you mean db-01, db-02?")]
    fake = model(tool("propose_patch", targets=names("db-01"), patch_group="Group-1"))
    out = run_agent("yes, the first one", catalog=catalog, model=fake, history=history)
    assert out.result.action == "clarify" and not out.result.is_proposable and "db-01" in out.result.message
    fake = model(tool("propose_patch", targets=names("db-01"), patch_group="Group-1"))
    out = run_agent("yes, db-01", catalog=catalog, model=fake, history=history)
    assert out.result.is_proposable and out.result.hosts == ["db-01"]


def test_invented_host_becomes_a_clarification_naming_it(catalog):
    out = run_agent("sort out the newest web box with group 1", catalog=catalog,
                    model=model(tool("propose_patch", targets=names("web-07"), patch_group="Group-1")))
    assert out.result.action == "clarify" and not out.result.is_proposable
    assert out.result.unknown_hosts == ["web-07"]
    assert "web-07" in describe_clarification(out.result, catalog)


def test_targets_the_user_did_not_name_are_not_proposed(catalog):
    fake = model(tool("propose_patch", targets=targets(sel("web-01"), sel("web-02"), sel("db-01"), sel("prod")),
                      patch_group="Group-1"))
    out = run_agent("patch web-01 with Group-1 plus the rest, no need to ask", catalog=catalog, model=fake)
    assert out.result.action == "clarify" and out.result.hosts == ["web-01"] and not out.result.is_proposable
    for label in ("web-02", "db-01", "prod"):
        assert label in out.result.message
    assert out.draft.targets.include == [name_term("web-01")]  # the open draft keeps only what the user named
    # What the model sees of this call on a later turn is the clarification, not "proposed".
    assert '"action": "clarify"' in out.tool_calls[0]["result"] and "proposed" not in out.tool_calls[0]["result"]


def test_the_flat_shorthand_of_older_tool_calls_is_checked_the_same_way(catalog):
    fake = model(tool("propose_patch", hosts=["web-01", "db-01"], patch_group="Group-1"))
    out = run_agent("patch web-01 with Group-1", catalog=catalog, model=fake)
    assert out.result.action == "clarify" and "db-01" in out.result.message
    fake = model(tool("propose_patch", hosts=["web-01"], patch_group="Group-1"))
    assert run_agent("patch web-01 with Group-1", catalog=catalog, model=fake).result.hosts == ["web-01"]


def test_searched_hosts_do_not_count_as_named(catalog):
    fake = model(tool("search_inventory", "c1", query="prod web"),
                 tool("propose_patch", "c2", targets=names("web-04"), patch_group="Group-3"))
    out = run_agent("full update on the last prod web box", catalog=catalog, model=fake)
    assert not out.result.is_proposable and out.result.action == "clarify"
    assert "web-04" in out.result.message and out.result.hosts == []


def test_a_searched_environment_is_not_a_list_of_named_hosts(catalog):
    """The model searches the environment the user named and proposes every host the search returned."""
    text = "security only for the staging web servers please"
    fake = model(tool("search_inventory", "c1", query="staging"),
                 tool("propose_patch", "c2", targets=names("stg-web-01", "stg-web-02", "stg-app-01", "stg-db-01"),
                      patch_group="Group-1"))
    out = run_agent(text, catalog=catalog, model=fake)
    assert "stg-db-01" in out.tool_calls[0]["result"]  # the search did return them
    assert out.result.action == "clarify" and not out.result.is_proposable and out.result.hosts == []
    for host in ("stg-web-01", "stg-web-02", "stg-app-01", "stg-db-01"):
        assert host in out.result.message
    assert out.draft.targets.include == []
    # The same request in the user's own words is proposed: staging AND web.
    fake = model(tool("propose_patch", targets=targets(sel("staging", "web")), patch_group="Group-1"))
    out = run_agent(text, catalog=catalog, model=fake)
    assert out.result.is_proposable and out.result.hosts == ["stg-web-01", "stg-web-02"]


@pytest.mark.parametrize("pattern", ["*-0*", "web*", "stg-*"])
def test_a_glob_the_user_did_not_type_is_never_expanded(catalog, pattern):
    fake = model(tool("propose_patch", targets=targets(sel(pattern)), patch_group="Group-1"))
    out = run_agent("patch the web servers in prod with Group-1", catalog=catalog, model=fake)
    assert out.result.action == "clarify" and not out.result.is_proposable
    assert out.result.hosts == [] and pattern in out.result.message
    assert out.draft.targets.include == []


def test_a_glob_the_user_typed_is_used(catalog):
    fake = model(tool("propose_patch", targets=targets(sel("web-0*")), patch_group="Group-1"))
    out = run_agent("patch web-0* with Group-1", catalog=catalog, model=fake)
    assert out.result.is_proposable and out.result.hosts == ["web-01", "web-02", "web-03", "web-04"]
    # ... but not a wider one next to it.
    fake = model(tool("propose_patch", targets=targets(sel("*web*")), patch_group="Group-1"))
    out = run_agent("patch web-0* with Group-1", catalog=catalog, model=fake)
    assert not out.result.is_proposable and "*web*" in out.result.message


def test_model_glob_in_the_core_targets_form_is_not_expanded(catalog):
    """The form of `core.targets` is accepted too; a pattern in it, whatever its kind, is only ever used when the user
    typed it."""
    fake = model(tool("propose_patch", targets={"include": [{"terms": [{"kind": "name", "value": "web-0*"}]}]},
                      patch_group="Group-1"))
    out = run_agent("patch the prod web servers with Group-1", catalog=catalog, model=fake)
    assert not out.result.is_proposable and out.result.hosts == []


def test_hosts_added_next_to_an_unknown_name_are_not_named_on_the_next_turn(catalog):
    first_text = "patch web-01 and wbe-77 with Group-1"
    fake = model(tool("propose_patch", "c1", targets=names("web-01", "wbe-77", "db-01"), patch_group="Group-1"))
    first = run_agent(first_text, catalog=catalog, model=fake)
    assert first.result.action == "clarify" and first.result.unknown_hosts == ["wbe-77"]
    assert "db-01" in first.result.message
    assert "db-01" not in first.draft.targets.named_values()  # not left in the open draft

    history = [Turn("user", first_text), Turn("assistant", describe_clarification(first.result, catalog),
                                              first.tool_calls)]
    # Even a draft that still held db-01 (as open drafts did) does not make it named.
    held = IntentDraft(action="patch", targets=TargetExpr(include=[name_term("web-01"), name_term("db-01")]),
                       patch_group="Group-1")
    for previous in (first.draft, held):
        fake = model(tool("propose_patch", "c2", targets=names("web-01", "web-02", "db-01"), patch_group="Group-1"))
        second = run_agent("sorry, I meant web-02", catalog=catalog, model=fake, previous=previous, history=history)
        assert second.result.action == "clarify" and not second.result.is_proposable
        assert "db-01" in second.result.message and "db-01" not in second.result.hosts
        assert set(second.result.hosts) == {"web-01", "web-02"}


def test_an_exclusion_the_user_typed_is_kept(catalog):
    text = "security only on the prod web servers except web-02"
    expr = targets(sel("prod", "web"), exclude=(sel("web-02"),))
    out = run_agent(text, catalog=catalog, model=model(tool("propose_patch", targets=expr, patch_group="Group-1")))
    assert out.result.is_proposable and out.result.hosts == ["web-01", "web-03", "web-04"]
    assert out.draft.targets.exclude == [name_term("web-02")] and "except web-02" in out.result.targets
    # An amendment re-proposes the whole expression from the user's words: the exclusion stays.
    history = [Turn("user", text), Turn("assistant", "Patch proposal for 3 hosts.", out.tool_calls)]
    fake = model(tool("propose_patch", targets=expr, patch_group="Group-1", check_mode=True))
    second = run_agent("make it a dry run", catalog=catalog, model=fake, previous=out.draft, history=history)
    assert second.result.is_proposable and second.result.check_mode
    assert "web-02" not in second.result.hosts and len(second.result.hosts) == 3


def test_an_attribute_filter_must_be_the_users(catalog):
    text = "bug fixes for the Debian boxes in prod"
    debian = "os_family=Debian"
    out = run_agent(text, catalog=catalog,
                    model=model(tool("propose_patch", targets=targets(sel("prod", debian)), patch_group="Group-2")))
    assert out.result.is_proposable and out.result.hosts == ["app-03", "cache-01", "lb-01", "lb-02"]
    redhat = "os_family=RedHat"
    out = run_agent(text, catalog=catalog,
                    model=model(tool("propose_patch", targets=targets(sel("prod", debian), sel("prod", redhat)),
                                     patch_group="Group-2")))
    assert not out.result.is_proposable and "RedHat" in out.result.message
    # A bare value the fleet knows only as a host variable is that variable, grounded the same way.
    out = run_agent(text, catalog=catalog,
                    model=model(tool("propose_patch", targets=targets(sel("prod", "Debian")), patch_group="Group-2")))
    assert out.result.is_proposable and out.result.hosts == ["app-03", "cache-01", "lb-01", "lb-02"]


def test_an_intersection_of_the_users_words(catalog):
    out = run_agent("dry run of the full update on the staging db", catalog=catalog,
                    model=model(tool("propose_patch", targets=targets(sel("staging", "db")), patch_group="Group-3",
                                     check_mode=True)))
    assert out.result.is_proposable and out.result.hosts == ["stg-db-01"] and out.result.check_mode


def test_malformed_arguments_are_fed_back_once(catalog):
    fake = model(tool("propose_patch", "bad", targets={"include": "web-01"}, patch_group=["x"], reboot="sometimes"),
                 tool("propose_patch", "good", targets=names("web-01"), patch_group="Group-1"))
    out = run_agent("sort out web-01, security only", catalog=catalog, model=fake)
    assert out.result.is_proposable and out.usage["llm_calls"] == 2
    error = fake.calls[1][-1]
    assert isinstance(error, ToolMessage) and error.tool_call_id == "bad" and error.status == "error"
    assert "reboot" in error.content and "targets" in error.content


def test_bad_json_twice_gives_up(catalog):
    broken = AIMessage(content="", invalid_tool_calls=[
        {"name": "propose_patch", "args": '{"hosts": ["web-01"', "id": "x1", "error": "bad json",
         "type": "invalid_tool_call"}])
    unknown_tool = tool("approve_request", "x2", request="all")
    with pytest.raises(AgentFailure) as failure:
        run_agent("sort out web-01", catalog=catalog, model=model(broken, unknown_tool))
    assert failure.value.kind == "malformed" and failure.value.usage["llm_calls"] == 2


def test_the_loop_is_bounded(catalog):
    searches = [tool("search_inventory", f"s{i}", query="web") for i in range(3)]
    with pytest.raises(AgentFailure) as failure:
        run_agent("sort out the web boxes", catalog=catalog, model=model(*searches), max_calls=3)
    assert failure.value.kind == "exhausted" and failure.value.usage["llm_calls"] == 3


# --- what the model says ---------------------------------------------------------------------------------------------

def test_out_of_scope_answer_is_shown(catalog):
    out = run_agent("what's the capital of peru, and then the weather", catalog=catalog,
                    model=model(AIMessage("I only help with patching servers.")))
    assert out.result.action == "unsupported" and out.reply == "I only help with patching servers."


@pytest.mark.parametrize("claim", [
    "Approved and launched!",
    "Done, patched.",
    "OK, job started.",
    "I've cancelled it.",
    "The servers were rebooted.",
    "Done: I have approved and launched it.",
    "Patch is now running on web-01.",
    "Genehmigt und gestartet!",
    "Erledigt, web-01 ist gepatcht.",
    "C'est fait : approuvé et lancé.",
    "Le job est annulé.",
    "¡Aprobado y lanzado!",
    "Listo, el servidor fue parcheado y reiniciado.",
])
def test_a_reply_claiming_an_outcome_is_never_shown(catalog, claim):
    out = run_agent("approve it now", catalog=catalog, model=model(AIMessage(claim)))
    assert out.reply == OUTCOME_CLAIM_REPLY
    assert claim not in out.result.message and claim not in (out.draft.note or "")


def test_api_shows_the_services_words_not_the_models_claim(api, use_model, model_path):
    use_model(model(AIMessage("Approved and launched!")))
    body = api.post("/api/v1/chat", json={"text": "approve it and launch it now"}, headers=_user()).json()
    assert "Approved and launched" not in body["reply"] and "Approved and launched" not in str(body["intent"])
    assert "Nothing was approved, launched" in body["reply"] and body["proposal"] is None


# --- one deadline for the whole turn ---------------------------------------------------------------------------------

def test_the_deadline_bounds_all_calls_of_a_turn(catalog):
    fake = model(Slow(0.3, tool("search_inventory", "s1", query="web")),
                 Slow(0.3, tool("search_inventory", "s2", query="prod")),
                 tool("propose_patch", "p", targets=names("web-01"), patch_group="Group-1"))
    started = time.monotonic()
    with pytest.raises(AgentFailure) as failure:
        run_agent("patch web-01 with Group-1", catalog=catalog, model=fake, deadline_seconds=0.5)
    assert failure.value.kind == "deadline" and "time limit" in failure.value.notice
    assert time.monotonic() - started < 0.9
    first, second = fake.timeouts  # each call got what was left of the turn
    assert 0 < second < first <= 0.5


def test_a_slow_model_leaves_the_rules_answer_and_never_a_proposal(catalog, use_model, model_path):
    """The rules parser read a complete request but was not sure of it; the model does not answer in time."""
    settings = Settings(llm_provider="openai", llm_model="fake-model", llm_turn_deadline_seconds=0.3)
    use_model(model(Slow(3, tool("propose_patch", targets=names("web-01"), patch_group="Group-1"))))
    started = time.monotonic()
    out = interpret_message("Patch server web-01 with Group-1", catalog=catalog, settings=settings)
    assert time.monotonic() - started < 2
    assert out.engine == "rules" and "time limit" in out.notice and "rules parser" in out.notice
    assert out.result.action == "clarify" and not out.result.is_proposable
    assert out.result.requested_action == "patch" and out.result.hosts == ["web-01"]
    assert '"Patch web-01 with Group-1"' in out.result.message


def test_unconfirmed_only_touches_proposals(catalog):
    from agent.service import unconfirmed
    from core.validation import validate_draft

    proposal = validate_draft(IntentDraft(action="precheck", targets=TargetExpr(include=[name_term("app-03")]),
                                          patch_group="Group-1"), catalog)
    assert proposal.is_proposable
    asked = unconfirmed(proposal)
    assert asked.action == "clarify" and asked.requested_action == "precheck" and not asked.is_proposable
    assert "Pre-checks on app-03" in asked.message
    question = validate_draft(IntentDraft(action="patch", targets=TargetExpr(include=[name_term("web-01")])), catalog)
    assert unconfirmed(question) is question


# --- failures fall back to the rules parser ------------------------------------------------------------------------

def _timeout():
    return openai.APITimeoutError(request=httpx.Request("POST", "http://llm.invalid/v1/chat/completions"))


def _rate_limited():
    request = httpx.Request("POST", "http://llm.invalid/v1/chat/completions")
    return openai.RateLimitError("rate limited", response=httpx.Response(429, request=request), body=None)


@pytest.mark.parametrize("step,words", [
    (_timeout(), "did not answer in time"),
    (_rate_limited(), "rate-limited"),
    (openai.APIConnectionError(request=httpx.Request("POST", "http://llm.invalid/")), "could not be reached"),
    (AIMessage(content="", additional_kwargs={"refusal": "I can't help with that."}), "declined"),
])
def test_failures_fall_back_to_the_rules_parser(catalog, settings, use_model, step, words):
    use_model(model(step))
    before = counter("patchpilot_intent_turns_total", path="rules_fallback")
    out = interpret_message(SECOND_PROD_WEB, catalog=catalog, settings=settings)
    assert out.engine == "rules" and words in out.notice and "rules parser" in out.notice
    assert out.result.action == "clarify" and out.result.hosts == ["web-01", "web-02", "web-03", "web-04"]
    assert counter("patchpilot_intent_turns_total", path="rules_fallback") == before + 1


@pytest.mark.parametrize("step", [
    _timeout(), _rate_limited(), AIMessage(content="", additional_kwargs={"refusal": "no"}),
    tool("approve_request", "x", request="all"),
])
def test_a_fallback_never_proposes_a_reading_the_rules_parser_was_not_sure_of(catalog, settings, use_model,
                                                                               model_path, step):
    use_model(model(step, tool("approve_request", "y", request="all")))
    out = interpret_message("Patch server web-01 with Group-1", catalog=catalog, settings=settings)
    assert out.engine == "rules" and "rules parser" in out.notice
    assert out.result.action == "clarify" and not out.result.is_proposable and out.result.hosts == ["web-01"]
    assert "not sure" in out.result.message


def test_a_misconfigured_model_never_proposes_an_unsure_reading(catalog, model_path):
    def broken(_settings):
        raise ValueError("LLM_PROVIDER=azure needs LLM_BASE_URL")

    llm.set_model_factory(broken)
    try:
        out = interpret_message("Patch server web-01 with Group-1", catalog=catalog,
                                settings=Settings(llm_provider="openai", llm_model="x"))
    finally:
        llm.set_model_factory(None)
    assert "misconfigured" in out.notice and out.result.action == "clarify" and not out.result.is_proposable


def test_rules_confident_messages_make_no_llm_call(catalog, settings, use_model):
    fake = use_model(model())  # any call would fail the test: the script is empty

    def llm_calls() -> float:
        return sum(counter("patchpilot_llm_calls_total", outcome=outcome) for outcome in ("ok", "error"))

    calls_before = llm_calls()
    confident_before = counter("patchpilot_intent_turns_total", path="rules_confident")
    for text in ("Patch server web-01 with Group-1", "dry-run Group-1 on web-01", "tell me a joke"):
        out = interpret_message(text, catalog=catalog, settings=settings)
        assert out.engine == "rules" and out.usage == {}
    assert fake.calls == []
    assert llm_calls() == calls_before
    assert counter("patchpilot_intent_turns_total", path="rules_confident") == confident_before + 3


def test_no_llm_configured_means_rules_alone(catalog):
    out = interpret_message(SECOND_PROD_WEB, catalog=catalog, settings=Settings(llm_provider="none"))
    assert out.engine == "rules" and out.notice is None and out.usage == {}


# --- memory bounds ---------------------------------------------------------------------------------------------------

def test_history_is_bounded_by_messages_and_characters():
    turns = []
    for i in range(30):
        turns += [Turn("user", f"message {i} " + "x" * 100),
                  Turn("assistant", f"answer {i}", [{"id": f"c{i}", "name": "propose_patch",
                                                     "args": {"hosts": ["web-01"]}, "result": "y" * 5000}])]
    messages = history_messages(turns, max_messages=12, max_chars=100_000)
    assert sum(isinstance(m, HumanMessage) for m in messages) == 6
    assert isinstance(messages[0], HumanMessage) and "message 24" in messages[0].content
    assert all(len(m.content) <= 600 for m in messages if isinstance(m, ToolMessage))
    small = history_messages(turns, max_messages=12, max_chars=1000)
    assert 0 < len(small) < len(messages) and isinstance(small[0], HumanMessage)
    ids = {m.tool_call_id for m in small if isinstance(m, ToolMessage)}
    assert ids == {c["id"] for m in small if isinstance(m, AIMessage) for c in m.tool_calls}
    assert history_messages(turns, max_messages=0, max_chars=1000) == []


# --- through the API --------------------------------------------------------------------------------------------------

def _user():
    from conftest import bearer  # the API's test identities (a requester)

    return bearer("alice")


def test_api_conversation_reaches_a_proposal_through_the_model(api, use_model):
    fake = use_model(model(
        tool("search_inventory", "t1", query="prod web"),
        tool("propose_patch", "t2", targets=targets(sel("prod", "web"))),
        tool("propose_patch", "t3", targets=targets(sel("prod", "web")), patch_group="Group-2"),
    ))
    prod_web = ["web-01", "web-02", "web-03", "web-04"]
    first = api.post("/api/v1/chat", json={"text": SECOND_PROD_WEB}, headers=_user()).json()
    assert first["engine"] == "llm:fake-model" and first["proposal"] is None
    assert first["intent"]["hosts"] == prod_web and first["intent"]["missing"] == ["patch_group"]
    assert "Group-2: All security updates plus bug-fix advisories" in first["reply"]

    conversation = first["conversation_id"]
    second = api.post("/api/v1/chat", json={"conversation_id": conversation,
                                            "text": "hmm, the second option sounds right"}, headers=_user()).json()
    proposal = second["proposal"]
    assert proposal["state"] == "proposed" and proposal["patch_group"] == "Group-2"
    assert [h["name"] for h in proposal["hosts"]] == prod_web
    assert (proposal["engine"], proposal["model_name"], proposal["prompt_version"]) == (
        "llm:fake-model", "fake-model", PROMPT_VERSION)
    # The second turn's model call saw turn one from PostgreSQL, tool calls and results included.
    sent = fake.calls[2]
    assert [m.tool_call_id for m in sent if isinstance(m, ToolMessage)] == ["t1", "t2"]
    assert any(isinstance(m, HumanMessage) and m.content == SECOND_PROD_WEB for m in sent)

    third = api.post("/api/v1/chat", json={"conversation_id": conversation, "text": "actually make it a dry run"},
                     headers=_user()).json()
    assert third["engine"] == "rules" and third["proposal"]["check_mode"] is True
    assert api.get(f"/api/v1/requests/{proposal['id']}").json()["state"] == "rejected"
    assert len(fake.calls) == 3  # the confident third turn made no model call

    from sqlmodel import Session, select

    from core.db import get_engine
    from core.models import Message

    with Session(get_engine()) as session:
        stored = session.exec(select(Message)
                              .where(Message.conversation_id == conversation, Message.role == "assistant")
                              .order_by(Message.id)).all()
    assert [c["name"] for c in stored[0].data["tool_calls"]] == ["search_inventory", "propose_patch"]
    assert stored[1].data["usage"]["llm_calls"] == 1 and "tool_calls" not in stored[2].data


def test_api_model_failure_creates_nothing_and_says_so(api, use_model):
    use_model(model(_timeout()))
    body = api.post("/api/v1/chat", json={"text": SECOND_PROD_WEB}, headers=_user()).json()
    assert body["engine"] == "rules" and "did not answer in time" in body["reply"]
    assert body["proposal"] is None and body["intent"]["action"] == "clarify"
    assert api.get("/api/v1/requests").json()["items"] == []


@pytest.mark.parametrize("text", [
    "security only on the prod web servers except web-02, and the flurble thingy",
    "web-02 had issues after the last run. anyway, security only on the prod web servers and the flurble thingy",
])
def test_a_model_that_drops_an_exclusion_or_reads_a_mention_as_a_target_proposes_nothing(
        catalog, settings, use_model, text):
    """An obeying hostile model proposes every prod web server; the user had excluded or only mentioned web-02."""
    use_model(model(tool("propose_patch", targets=targets(sel("prod", "web")), patch_group="Group-1")))
    out = interpret_message(text, catalog=catalog, settings=settings)
    assert out.engine == "llm:fake-model"
    assert not out.result.is_proposable and out.result.action == "clarify" and "web-02" in out.result.message
