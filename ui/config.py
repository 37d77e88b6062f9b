"""The UI's configuration, read from the environment (the same variable names and defaults as the API's settings).

The UI needs three things: where the API is, its own public address, and the API token it starts with. It reads
them here rather than through `core.settings`, so the frontend process loads nothing but Streamlit and its client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_UI_BASE_URL = "http://127.0.0.1:8501"


def _env(name: str, default: str = "") -> str:
    """`NAME` or `name` (the API's settings ignore case too); an empty value means unset."""
    for key in (name, name.lower()):
        value = os.environ.get(key, "").strip()
        if value:
            return value
    return default


def _url(name: str, default: str) -> str:
    value = _env(name, default).rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value


@dataclass(frozen=True)
class UiConfig:
    api_url: str  # API_URL: where the UI finds the API
    ui_base_url: str  # UI_BASE_URL: the UI's own address, for links when the browser's is not known
    token: str  # PATCHPILOT_TOKEN: the API token the sidebar starts with (`patchpilot up` passes its admin token)


def load_config() -> UiConfig:
    """Read on every page run, so a changed environment needs no restart of anything but the process.
    Raises ValueError for a URL that cannot be one."""
    return UiConfig(
        api_url=_url("API_URL", DEFAULT_API_URL),
        ui_base_url=_url("UI_BASE_URL", DEFAULT_UI_BASE_URL),
        token=_env("PATCHPILOT_TOKEN"),
    )
