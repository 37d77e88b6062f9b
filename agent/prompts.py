"""Prompt files (prompts/<name>.v<N>.md), loaded by name. The version travels with every proposal the LLM path
makes, so a stored request says which prompt produced it."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
_VERSIONED = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>\d+)\.md$")


class PromptNotFound(LookupError):
    pass


@lru_cache(maxsize=32)
def load_prompt(name: str, directory: Path = PROMPTS_DIR) -> tuple[str, str]:
    """'intent_system' -> (text of the highest version, 'intent_system.v3'); 'intent_system.v1' -> that file."""
    if re.search(r"\.v\d+$", name):
        path = directory / f"{name}.md"
        if not path.is_file():
            raise PromptNotFound(f"no prompt file {path.name} in {directory}")
        return path.read_text(encoding="utf-8").strip(), name
    versions = [
        (int(m["version"]), path) for path in directory.glob(f"{name}.v*.md")
        if (m := _VERSIONED.match(path.name)) and m["name"] == name
    ]
    if not versions:
        raise PromptNotFound(f"no prompt named {name!r} in {directory}")
    version, path = max(versions)
    return path.read_text(encoding="utf-8").strip(), f"{name}.v{version}"
