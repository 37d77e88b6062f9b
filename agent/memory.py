"""Conversation memory for the model: the stored messages of a conversation (with the tool calls and results the
assistant made, kept in `Message.data["tool_calls"]`), bounded by a message count and a character budget so a long
conversation never grows the prompt without limit."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

TOOL_RESULT_CHARS = 600  # one stored tool result, as shown again later
# The content of an assistant message that only calls tools. Not empty: the client would send `null`, which the
# llama.cpp Python server refuses; OpenAI and the others accept a blank string.
TOOL_CALL_CONTENT = " "


@dataclass(frozen=True)
class Turn:
    """One stored chat message, as the agent sees it."""

    role: str  # "user" | "assistant"
    text: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{"id", "name", "args", "result"}]


def _turn_messages(turn: Turn) -> list[BaseMessage]:
    if turn.role == "user":
        return [HumanMessage(turn.text)]
    messages: list[BaseMessage] = []
    calls = [c for c in turn.tool_calls if c.get("id") and c.get("name")]
    if calls:
        messages.append(AIMessage(content=TOOL_CALL_CONTENT, tool_calls=[
            {"id": c["id"], "name": c["name"], "args": c.get("args") or {}, "type": "tool_call"} for c in calls]))
        messages += [ToolMessage(content=str(c.get("result", ""))[:TOOL_RESULT_CHARS], tool_call_id=c["id"])
                     for c in calls]
    messages.append(AIMessage(turn.text))
    return messages


def _size(messages: list[BaseMessage]) -> int:
    total = 0
    for m in messages:
        total += len(m.content if isinstance(m.content, str) else json.dumps(m.content))
        total += sum(len(json.dumps(c["args"])) + len(c["name"]) for c in getattr(m, "tool_calls", []) or [])
    return total


def history_messages(turns: list[Turn], *, max_messages: int, max_chars: int) -> list[BaseMessage]:
    """The newest turns that fit both bounds, oldest first, starting with a user message. A stored message is
    kept or dropped whole, so a tool call is never separated from its result."""
    kept: list[list[BaseMessage]] = []
    used = 0
    for turn in reversed(turns[-max_messages:] if max_messages else []):
        if turn.role not in ("user", "assistant"):
            continue
        messages = _turn_messages(turn)
        size = _size(messages)
        if used + size > max_chars:
            break
        kept.append(messages)
        used += size
    kept.reverse()
    while kept and not isinstance(kept[0][0], HumanMessage):
        kept.pop(0)
    return [m for group in kept for m in group]
