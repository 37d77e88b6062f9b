"""Wire level: the real ChatOpenAI / AzureChatOpenAI clients against an httpx.MockTransport that answers in the
exact chat-completions format. Checks what goes over the wire and that our loop reads what comes back."""

from __future__ import annotations

import json

import httpx
import pytest

from agent.llm import build_chat_model
from agent.llm_intent import AgentFailure, run_agent
from core.inventory import get_catalog
from core.settings import Settings

TEXT = "can you sort out the security fixes on the second prod web box? full update"
PROD_WEB_GROUP_3 = '{"targets": {"include": [["prod", "web"]]}, "patch_group": "Group-3"}'


def completion(message: dict, finish_reason: str = "tool_calls", prompt_tokens: int = 321) -> dict:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None, **message},
                     "finish_reason": finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 12, "total_tokens": prompt_tokens + 12},
    }


def tool_call(call_id: str, name: str, arguments: str) -> dict:
    return {"tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]}


class Server:
    """Answers each request with the next scripted (status, body) or raises a scripted exception."""

    def __init__(self, *script):
        self.script, self.requests = list(script), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        status, body, headers = step if len(step) == 3 else (*step, {})
        return httpx.Response(status, json=body, headers=headers)

    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


def chat_model(server: Server, **overrides):
    values = {"llm_provider": "openai", "llm_model": "gpt-test", "llm_base_url": "http://llm.test/v1",
              "llm_api_key": "sk-test", "llm_max_tokens": 256, "llm_max_retries": 0, **overrides}
    settings = Settings(**values)
    return build_chat_model(settings, http_client=httpx.Client(transport=httpx.MockTransport(server)))


def test_tool_loop_over_the_wire():
    server = Server(
        (200, completion(tool_call("call_a", "search_inventory", '{"query": "prod web"}'))),
        (200, completion(tool_call("call_b", "propose_patch", PROD_WEB_GROUP_3))),
    )
    out = run_agent(TEXT, catalog=get_catalog(), model=chat_model(server))
    assert out.result.is_proposable and out.result.patch_group == "Group-3"
    assert out.result.hosts == ["web-01", "web-02", "web-03", "web-04"]
    assert out.usage == {"llm_calls": 2, "input_tokens": 642, "output_tokens": 24}

    first, second = server.bodies()
    assert server.requests[0].url == "http://llm.test/v1/chat/completions"
    assert server.requests[0].headers["authorization"] == "Bearer sk-test"
    assert first["model"] == "gpt-test" and first["temperature"] == 0
    assert first["max_tokens"] == 256 and first["max_completion_tokens"] == 256
    assert first["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in first["tools"]] == [
        "search_inventory", "list_patch_groups", "propose_patch", "job_status", "list_jobs", "propose_cancel"]
    propose = next(t for t in first["tools"] if t["function"]["name"] == "propose_patch")["function"]["parameters"]
    assert propose["properties"]["action"]["enum"] == ["patch", "precheck"]
    assert "hosts" not in propose["properties"] and "groups" not in propose["properties"]
    include = propose["properties"]["targets"]["properties"]["include"]
    assert include["items"] == {"items": {"type": "string"}, "type": "array"}  # selections of terms
    assert first["messages"][0]["role"] == "system" and "cannot approve" in first["messages"][0]["content"]
    assert first["messages"][-1] == {"role": "user", "content": TEXT}

    assistant, tool_result = second["messages"][-2:]
    assert assistant["role"] == "assistant" and isinstance(assistant["content"], str)  # llama.cpp refuses null
    assert assistant["tool_calls"][0]["id"] == "call_a"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"query": "prod web"}
    assert tool_result["role"] == "tool" and tool_result["tool_call_id"] == "call_a"
    assert "web-02" in tool_result["content"]


def test_malformed_json_arguments_are_fed_back_with_the_call_id():
    server = Server(
        (200, completion(tool_call("call_bad", "propose_patch", '{"hosts": ["web-01"'))),
        (200, completion(tool_call("call_ok", "propose_patch", '{"hosts": ["web-01"], "patch_group": "Group-1"}'))),
    )
    out = run_agent("sort out web-01 with group 1", catalog=get_catalog(), model=chat_model(server))
    assert out.result.is_proposable
    fed_back = server.bodies()[1]["messages"][-1]
    assert fed_back["role"] == "tool" and fed_back["tool_call_id"] == "call_bad"
    assert "not valid JSON" in fed_back["content"]


def test_the_turn_deadline_is_a_client_timeout_not_a_request_field():
    server = Server((200, completion(tool_call("c1", "propose_patch", PROD_WEB_GROUP_3))))
    out = run_agent(TEXT, catalog=get_catalog(), model=chat_model(server), deadline_seconds=5)
    assert out.result.is_proposable
    assert "timeout" not in server.bodies()[0]
    assert server.requests[0].extensions["timeout"]["read"] <= 5


def test_refusal_field_is_a_failure():
    server = Server((200, completion({"content": None, "refusal": "I can't help with that."}, finish_reason="stop")))
    with pytest.raises(AgentFailure) as failure:
        run_agent(TEXT, catalog=get_catalog(), model=chat_model(server))
    assert failure.value.kind == "refusal"


def test_rate_limit_is_retried_then_reported():
    limited = (429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"retry-after-ms": "10"})
    ok = (200, completion(tool_call("c1", "propose_patch", '{"hosts": ["web-01"], "patch_group": "Group-1"}')))
    server = Server(limited, ok)
    out = run_agent("sort out web-01 with group 1", catalog=get_catalog(), model=chat_model(server, llm_max_retries=2))
    assert out.result.is_proposable and len(server.requests) == 2

    server = Server(limited, limited, limited)
    with pytest.raises(AgentFailure) as failure:
        run_agent(TEXT, catalog=get_catalog(), model=chat_model(server, llm_max_retries=2))
    assert failure.value.kind == "rate_limit" and len(server.requests) == 3


def test_timeout_and_network_errors():
    server = Server(httpx.ReadTimeout("slow"))
    with pytest.raises(AgentFailure) as failure:
        run_agent(TEXT, catalog=get_catalog(), model=chat_model(server))
    assert failure.value.kind == "timeout"
    server = Server(httpx.ConnectError("refused"))
    with pytest.raises(AgentFailure) as failure:
        run_agent(TEXT, catalog=get_catalog(), model=chat_model(server))
    assert failure.value.kind == "network"


def test_azure_deployment_url_and_key_header():
    server = Server((200, completion({"content": "I only help with patching."}, finish_reason="stop")))
    settings = Settings(llm_provider="azure", llm_model="gpt-4o", llm_azure_deployment="patchpilot-gpt4o",
                        llm_base_url="https://example-resource.openai.azure.com/", llm_api_key="azure-key",
                        llm_azure_api_version="2024-10-21", llm_max_retries=0)
    model = build_chat_model(settings, http_client=httpx.Client(transport=httpx.MockTransport(server)))
    out = run_agent("what is the weather like", catalog=get_catalog(), model=model)
    assert out.reply == "I only help with patching."
    request = server.requests[0]
    assert request.url.path == "/openai/deployments/patchpilot-gpt4o/chat/completions"
    assert request.url.params["api-version"] == "2024-10-21"
    assert request.headers["api-key"] == "azure-key"
    assert server.bodies()[0]["max_completion_tokens"] == 512
