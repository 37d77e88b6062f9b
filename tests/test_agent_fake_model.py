"""The LLM agent with a scripted fake chat model: tool calls, validation, clarification, amendment, memory, failure
fallbacks and the hybrid path. No network; the API test at the end uses the real database."""

from __future__ import annotations

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
from agent.service import UNSUPPORTED_REPLY, describe_clarification, interpret_message
from core.intent import IntentDraft
from core.inventory import get_catalog
from core.settings import Settings

SECOND_PROD_WEB = "can you sort out the security fixes on the second prod web box?"


class ScriptedModel(FakeMessagesListChatModel):
    """Plays `script` in order: an AIMessage is returned, an exception raised. Records what each call was sent."""

    script: list[Any]
    responses: list = Field(default_factory=list)
    calls: list = Field(default_factory=list)
    model_name: str = "fake-model"
    bound_tools: list = Field(default_factory=list)

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        self.bound_tools = [t["function"]["name"] for t in tools]
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.calls.append(list(messages))
        if len(self.calls) > len(self.script):
            raise AssertionError(f"unexpected model call #{len(self.calls)}")
        step = self.script[len(self.calls) - 1]
        if isinstance(step, BaseException):
            raise step
        return ChatResult(generations=[ChatGeneration(message=step)])


def tool(name: str, call_id: str = "call_1", **args) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}],
                     usage_metadata={"input_tokens": 100, "output_tokens": 10, "total_tokens": 110})


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


# --- the loop ----------------------------------------------------------------------------------------------------

def test_complete_intent_searches_then_proposes(catalog):
    fake = model(tool("search_inventory", "c1", query="prod web"),
                 tool("propose_patch", "c2", hosts=["web-02"], patch_group="Group-1"))
    outcome = run_agent(SECOND_PROD_WEB, catalog=catalog, model=fake)
    assert outcome.result.is_proposable
    assert (outcome.result.hosts, outcome.result.patch_group) == (["web-02"], "Group-1")
    assert outcome.usage == {"llm_calls": 2, "input_tokens": 200, "output_tokens": 20}
    assert fake.bound_tools == ["search_inventory", "list_patch_groups", "propose_patch", "job_status", "list_jobs",
                                "propose_cancel"]
    first, second = fake.calls
    assert isinstance(first[0], SystemMessage) and "cannot approve" in first[0].content
    assert isinstance(first[-1], HumanMessage) and first[-1].content == SECOND_PROD_WEB
    search_result = second[-1]
    assert isinstance(search_result, ToolMessage) and search_result.tool_call_id == "c1"
    assert "web-02" in search_result.content and "db-01" not in search_result.content
    assert [c["name"] for c in outcome.tool_calls] == ["search_inventory", "propose_patch"]


def test_missing_patch_group_is_asked_with_descriptions_then_answered_next_turn(catalog):
    first = run_agent(SECOND_PROD_WEB, catalog=catalog,
                      model=model(tool("search_inventory", "c0", query="prod web"),
                                  tool("propose_patch", "c1", hosts=["web-02"], patch_group="security fixes")))
    assert first.result.action == "clarify" and first.result.missing == ["patch_group"]
    reply = describe_clarification(first.result, catalog)
    for group in catalog.patch_groups.values():
        assert group.name in reply and group.description in reply

    history = [Turn("user", SECOND_PROD_WEB), Turn("assistant", reply, first.tool_calls)]
    fake = model(tool("propose_patch", "c2", hosts=["web-02"], patch_group="Group-2"))
    second = run_agent("hmm, the second option sounds right", catalog=catalog, model=fake,
                       previous=first.draft, history=history)
    assert second.result.is_proposable and second.result.patch_group == "Group-2"
    sent = fake.calls[0]
    assert '"hosts": ["web-02"]' in sent[0].content  # the open draft is in the system prompt
    assert [type(m).__name__ for m in sent[1:]] == ["HumanMessage", "AIMessage", "ToolMessage", "ToolMessage",
                                                    "AIMessage", "HumanMessage"]
    assert [c["id"] for c in sent[2].tool_calls] == ["c0", "c1"]
    assert [m.tool_call_id for m in sent[3:5]] == ["c0", "c1"]


def test_amendment_goes_through_the_hybrid_path_with_prompt_version(catalog, settings, use_model):
    previous = IntentDraft(action="patch", hosts=["web-02"], patch_group="Group-2")
    use_model(model(tool("propose_patch", hosts=["web-02"], patch_group="Group-2", check_mode=True)))
    out = interpret_message("hmm, make that one a simulation instead please", catalog=catalog, previous=previous,
                            settings=settings)
    assert out.engine == "llm:fake-model" and out.model_name == "fake-model"
    assert out.prompt_version == PROMPT_VERSION and PROMPT_VERSION.startswith("intent_system.v1")
    assert out.result.is_proposable and out.result.check_mode is True and out.result.hosts == ["web-02"]
    assert out.usage["llm_calls"] == 1


def test_invented_host_becomes_a_clarification_naming_it(catalog):
    out = run_agent("sort out the newest web box with group 1", catalog=catalog,
                    model=model(tool("propose_patch", hosts=["web-07"], patch_group="Group-1")))
    assert out.result.action == "clarify" and not out.result.is_proposable
    assert out.result.unknown_hosts == ["web-07"]
    assert "web-07" in describe_clarification(out.result, catalog)


def test_targets_the_user_did_not_name_are_not_proposed(catalog):
    fake = model(tool("propose_patch", hosts=["web-01", "web-02", "db-01"], groups=["prod"], patch_group="Group-1"))
    out = run_agent("patch web-01 with Group-1 plus the rest, no need to ask", catalog=catalog, model=fake)
    assert out.result.action == "clarify" and out.result.hosts == []
    for name in ("web-02", "db-01", "prod"):
        assert name in out.result.message
    assert out.draft.hosts == ["web-01"] and out.draft.groups == []  # the open draft keeps only what was named


def test_searched_hosts_count_as_named(catalog):
    fake = model(tool("search_inventory", "c1", query="prod web"), tool("propose_patch", "c2", hosts=["web-04"],
                                                                        patch_group="Group-3"))
    out = run_agent("full update on the last prod web box", catalog=catalog, model=fake)
    assert out.result.is_proposable and out.result.hosts == ["web-04"]


def test_malformed_arguments_are_fed_back_once(catalog):
    fake = model(tool("propose_patch", "bad", hosts="web-01", patch_group=["x"], reboot="sometimes"),
                 tool("propose_patch", "good", hosts=["web-01"], patch_group="Group-1"))
    out = run_agent("sort out web-01, security only", catalog=catalog, model=fake)
    assert out.result.is_proposable and out.usage["llm_calls"] == 2
    error = fake.calls[1][-1]
    assert isinstance(error, ToolMessage) and error.tool_call_id == "bad" and error.status == "error"
    assert "reboot" in error.content and "hosts" in error.content


def test_bad_json_twice_gives_up(catalog):
    broken = AIMessage(content="", invalid_tool_calls=[
        {"name": "propose_patch", "args": '{"hosts": ["web-01"', "id": "x1", "error": "bad json", "type": "invalid_tool_call"}])
    unknown_tool = tool("approve_request", "x2", request="all")
    with pytest.raises(AgentFailure) as failure:
        run_agent("sort out web-01", catalog=catalog, model=model(broken, unknown_tool))
    assert failure.value.kind == "malformed" and failure.value.usage["llm_calls"] == 2


def test_the_loop_is_bounded(catalog):
    searches = [tool("search_inventory", f"s{i}", query="web") for i in range(3)]
    with pytest.raises(AgentFailure) as failure:
        run_agent("sort out the web boxes", catalog=catalog, model=model(*searches), max_calls=3)
    assert failure.value.kind == "exhausted" and failure.value.usage["llm_calls"] == 3


def test_out_of_scope_answer_and_false_claims(catalog):
    out = run_agent("what's the capital of peru, and then the weather", catalog=catalog,
                    model=model(AIMessage("I only help with patching servers.")))
    assert out.result.action == "unsupported" and out.reply == "I only help with patching servers."
    out = run_agent("approve it now", catalog=catalog, model=model(AIMessage("Done: I have approved and launched it.")))
    assert out.reply == UNSUPPORTED_REPLY


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


def test_rules_confident_messages_make_no_llm_call(catalog, settings, use_model):
    fake = use_model(model())  # any call would fail the test: the script is empty
    calls_before = counter("patchpilot_llm_calls_total", outcome="ok") + counter("patchpilot_llm_calls_total", outcome="error")
    confident_before = counter("patchpilot_intent_turns_total", path="rules_confident")
    for text in ("Patch server web-01 with Group-1", "dry-run Group-1 on web-01", "tell me a joke"):
        out = interpret_message(text, catalog=catalog, settings=settings)
        assert out.engine == "rules" and out.usage == {}
    assert fake.calls == []
    assert counter("patchpilot_llm_calls_total", outcome="ok") + counter("patchpilot_llm_calls_total", outcome="error") \
        == calls_before
    assert counter("patchpilot_intent_turns_total", path="rules_confident") == confident_before + 3


def test_no_llm_configured_means_rules_alone(catalog):
    out = interpret_message(SECOND_PROD_WEB, catalog=catalog, settings=Settings(llm_provider="none"))
    assert out.engine == "rules" and out.notice is None and out.usage == {}


# --- memory bounds ---------------------------------------------------------------------------------------------------

def test_history_is_bounded_by_messages_and_characters():
    turns = []
    for i in range(30):
        turns += [Turn("user", f"message {i} " + "x" * 100),
                  Turn("assistant", f"answer {i}", [{"id": f"c{i}", "name": "propose_patch", "args": {"hosts": ["web-01"]},
                                                     "result": "y" * 5000}])]
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
        tool("propose_patch", "t2", hosts=["web-02"]),
        tool("propose_patch", "t3", hosts=["web-02"], patch_group="Group-2"),
    ))
    first = api.post("/api/v1/chat", json={"text": SECOND_PROD_WEB}, headers=_user()).json()
    assert first["engine"] == "llm:fake-model" and first["proposal"] is None
    assert first["intent"]["hosts"] == ["web-02"] and first["intent"]["missing"] == ["patch_group"]
    assert "Group-2: All security updates plus bug-fix advisories" in first["reply"]

    conversation = first["conversation_id"]
    second = api.post("/api/v1/chat", json={"conversation_id": conversation,
                                            "text": "hmm, the second option sounds right"}, headers=_user()).json()
    proposal = second["proposal"]
    assert proposal["state"] == "proposed" and proposal["patch_group"] == "Group-2"
    assert [h["name"] for h in proposal["hosts"]] == ["web-02"]
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
        stored = session.exec(select(Message).where(Message.conversation_id == conversation, Message.role == "assistant")
                              .order_by(Message.id)).all()
    assert [c["name"] for c in stored[0].data["tool_calls"]] == ["search_inventory", "propose_patch"]
    assert stored[1].data["usage"]["llm_calls"] == 1 and "tool_calls" not in stored[2].data


def test_api_model_failure_creates_nothing_and_says_so(api, use_model):
    use_model(model(_timeout()))
    body = api.post("/api/v1/chat", json={"text": SECOND_PROD_WEB}, headers=_user()).json()
    assert body["engine"] == "rules" and "did not answer in time" in body["reply"]
    assert body["proposal"] is None and body["intent"]["action"] == "clarify"
    assert api.get("/api/v1/requests").json()["items"] == []
