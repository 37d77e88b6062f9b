"""Text -> PatchIntent: the rules parser, and (later) the LLM tool-calling agent."""
