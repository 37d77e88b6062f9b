"""Text -> PatchIntent: the rules parser and the LLM tool-calling agent (see docs/llm.md)."""
