"""The chat model built from settings, and the LLM counters.

Any OpenAI-compatible server works through `ChatOpenAI` (OpenAI, vLLM, Ollama, llama.cpp server, OpenShift AI);
Azure OpenAI goes through `AzureChatOpenAI`. Retries with backoff (429, 5xx, timeouts, `Retry-After`) are the
openai client's own, bounded by `LLM_MAX_RETRIES`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from prometheus_client import Counter

from core.settings import Settings

LLM_CALLS = Counter("patchpilot_llm_calls_total", "Chat model calls made by the intent agent", ["outcome"])
LLM_TOKENS = Counter("patchpilot_llm_tokens_total", "Tokens used by the intent agent", ["kind"])
INTENT_TURNS = Counter(
    "patchpilot_intent_turns_total", "Chat turns by the engine that answered them",
    ["path"],  # rules_confident | rules_only (no LLM) | llm | rules_fallback
)

# Servers without keys (Ollama, llama.cpp, most vLLM set-ups) still need a non-empty key for the client.
NO_KEY = "not-needed"

ModelFactory = Callable[[Settings], BaseChatModel]
_override: ModelFactory | None = None
_cache: dict[tuple[object, ...], BaseChatModel] = {}
_lock = threading.Lock()


def llm_configured(settings: Settings) -> bool:
    return _override is not None or (settings.llm_provider != "none" and bool(settings.llm_model))


def model_name(settings: Settings, model: BaseChatModel | None = None) -> str:
    """The name stored with a proposal: the model's own, else the configured one."""
    name = getattr(model, "model_name", None) or getattr(model, "deployment_name", None) or settings.llm_model
    return str(name or "unknown")


def set_model_factory(factory: ModelFactory | None) -> ModelFactory | None:
    """Replace how the chat model is made (tests inject fake models). Returns the previous override."""
    global _override
    previous, _override = _override, factory
    _cache.clear()
    return previous


def get_chat_model(settings: Settings) -> BaseChatModel | None:
    """The configured model, or None when no LLM is configured (the rules parser then answers alone)."""
    if _override is not None:
        return _override(settings)
    if not llm_configured(settings):
        return None
    key = _cache_key(settings)
    with _lock:
        if key not in _cache:
            _cache[key] = build_chat_model(settings)
        return _cache[key]


def _cache_key(settings: Settings) -> tuple[object, ...]:
    secret = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return (settings.llm_provider, settings.llm_model, settings.llm_base_url, secret, settings.llm_timeout_seconds,
            settings.llm_max_tokens, settings.llm_temperature, settings.llm_max_retries,
            settings.llm_azure_api_version, settings.llm_azure_deployment)


def build_chat_model(settings: Settings, *, http_client: Any = None) -> BaseChatModel:
    """A LangChain chat model for `settings`. `http_client` (an httpx.Client) lets tests swap the transport."""
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    common: dict[str, Any] = {
        "temperature": settings.llm_temperature,
        "max_tokens": settings.llm_max_tokens,
        "timeout": settings.llm_timeout_seconds,
        "max_retries": settings.llm_max_retries,
    }
    if http_client is not None:
        common["http_client"] = http_client
    if settings.llm_provider == "azure":
        from langchain_openai import AzureChatOpenAI

        if not settings.llm_base_url:
            raise ValueError("LLM_PROVIDER=azure needs LLM_BASE_URL (https://<resource>.openai.azure.com/)")
        return AzureChatOpenAI(
            azure_endpoint=settings.llm_base_url, azure_deployment=settings.llm_azure_deployment or settings.llm_model,
            api_version=settings.llm_azure_api_version, api_key=api_key, model=settings.llm_model, **common,
        )
    from langchain_openai import ChatOpenAI

    extra: dict[str, Any] = {}
    if settings.llm_base_url:
        # ChatOpenAI sends only `max_completion_tokens`; vLLM, Ollama and llama.cpp servers read `max_tokens`.
        extra["extra_body"] = {"max_tokens": settings.llm_max_tokens}
    return ChatOpenAI(
        model=settings.llm_model, base_url=settings.llm_base_url, api_key=api_key or NO_KEY, **extra, **common,
    )
