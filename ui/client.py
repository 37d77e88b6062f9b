"""Typed HTTP client for the patchpilot API.

This is the only module of the UI that speaks HTTP; it answers with the models of `ui.models`. Every failure -- an
HTTP error status, a timeout, a refused connection, a body that is not JSON or not in the expected shape -- leaves
it as an `ApiError` whose text can be shown to an operator as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from ui.meta import Meta
from ui.models import (
    ChatReply,
    Conversation,
    Inbox,
    JobEvent,
    Live,
    Me,
    Message,
    PatchRequest,
    SystemStatus,
)

M = TypeVar("M", bound=BaseModel)

# Set by the OAuth proxy in front of the UI (and the API) when it runs in proxy mode.
PROXY_USER_HEADER = "X-Forwarded-User"
PROXY_GROUPS_HEADER = "X-Forwarded-Groups"

# Who am I and is everything up: asked on every page run, so an API that does not answer is noticed quickly.
QUICK_TIMEOUT = 4.0

# --- errors -------------------------------------------------------------------------------------


class ApiError(Exception):
    """A failed API call, carrying a message fit for the operator."""

    def __init__(self, message: str, status_code: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        # The API's own reason (its `detail`), without the status prefix; empty when it gave none.
        self.detail = detail

    @property
    def is_conflict(self) -> bool:
        return self.status_code == 409

    @property
    def is_unauthorized(self) -> bool:
        """No credentials, or ones the API does not know (401): the person has to sign in."""
        return self.status_code == 401

    @property
    def is_forbidden(self) -> bool:
        """The API knows who is calling and refuses (403: role too low, four-eyes)."""
        return self.status_code == 403

    def __str__(self) -> str:
        return self.message


_STATUS_PREFIX = {
    400: "Bad request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    409: "Not possible right now",
    422: "Invalid input",
    429: "Too many requests",
    503: "Service unavailable",
}


def format_detail(detail: Any) -> str:
    """Turn an error `detail` (a string, or pydantic's list of errors) into one readable line."""
    if detail is None:
        return ""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                # Drop the "body"/"query" prefix pydantic puts in front of the field path.
                loc = [str(p) for p in item.get("loc", []) if p not in ("body", "query", "path")]
                msg = str(item.get("msg", "")).strip() or "invalid value"
                parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return str(detail.get("msg") or detail.get("message") or detail)
    return str(detail)


def error_detail(response: httpx.Response) -> str:
    """The reason an HTTP error response gives, as one readable line."""
    try:
        detail = format_detail(response.json().get("detail"))
    except (ValueError, AttributeError):
        # Not our JSON (a proxy's HTML page, say): show a short piece of it.
        detail = response.text.strip()[:200]
    return detail or response.reason_phrase or "no details given"


def error_message(response: httpx.Response) -> str:
    """The operator-facing text for an HTTP error response."""
    code = response.status_code
    prefix = _STATUS_PREFIX.get(code) or ("API error" if code >= 500 else "Request refused")
    return f"{prefix} ({code}): {error_detail(response)}"


# --- client -------------------------------------------------------------------------------------


def proxy_identity(incoming: Mapping[str, str] | None) -> dict[str, str]:
    """The OAuth proxy's identity headers among the browser request's headers (empty when there are none)."""
    if not incoming:
        return {}
    found = {}
    lowered = {str(k).lower(): v for k, v in incoming.items()}
    for name in (PROXY_USER_HEADER, PROXY_GROUPS_HEADER):
        value = str(lowered.get(name.lower()) or "").strip()
        if value:
            found[name] = value
    # Groups without a user identify nobody.
    return found if PROXY_USER_HEADER in found else {}


def auth_headers(token: str = "", incoming: Mapping[str, str] | None = None) -> dict[str, str]:
    """Identity sent with every call; the only place that decides how the UI identifies the person.

    `token` is an API token (token mode: `Authorization: Bearer <token>`). `incoming` are the headers of the
    browser's request to the UI: when the OAuth proxy in front of the UI set `X-Forwarded-User` (and
    `X-Forwarded-Groups`), those two are passed on, so proxy mode works without a token. The person the proxy
    signed in is then who calls: a token (say the one from `PATCHPILOT_TOKEN`) is not sent along, so it
    cannot make them act as someone else.
    """
    headers = proxy_identity(incoming)
    token = (token or "").strip()
    if token and not headers:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class PatchpilotClient:
    """Synchronous client: Streamlit reruns scripts top to bottom, so blocking calls fit."""

    def __init__(
        self,
        base_url: str,
        token: str = "",
        *,
        incoming_headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        chat_timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # What identifies the caller; a different identity needs a different client.
        self.identity = auth_headers(token, incoming_headers)
        self.timeout = timeout
        # Chat can wait on a language model, so it gets longer than the plain reads.
        self.chat_timeout = chat_timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=self.identity,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
        )
        self._meta: Meta | None = None

    def close(self) -> None:
        self._http.close()

    # -- plumbing --

    def _call(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ApiError(f"Cannot reach the patchpilot API at {self.base_url}. Is it running?") from None
        except httpx.TimeoutException:
            waited = timeout if timeout is not None else self.timeout
            raise ApiError(
                f"The patchpilot API at {self.base_url} did not answer within {waited:g} s. Try again shortly."
            ) from None
        except httpx.HTTPError as exc:
            raise ApiError(f"Talking to the patchpilot API at {self.base_url} failed: {exc}") from None
        if response.is_error:
            raise ApiError(error_message(response), response.status_code, error_detail(response))
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"The patchpilot API answered {method} {path} with something that is not JSON.",
                response.status_code,
            ) from None

    def _parse(self, model: type[M], body: Any, what: str) -> M:
        try:
            return model.model_validate(body)
        except ValidationError:
            raise ApiError(f"The patchpilot API sent {what} in an unexpected shape.") from None

    def _items(self, model: type[M], body: Any) -> list[M]:
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ApiError("The patchpilot API sent a list in an unexpected shape.")
        return [self._parse(model, item, "a list") for item in items]

    # -- endpoints --

    def chat(self, text: str, conversation_id: str | None = None) -> ChatReply:
        body = self._call("POST", "/api/v1/chat", json={"conversation_id": conversation_id, "text": text},
                          timeout=self.chat_timeout)
        return self._parse(ChatReply, body, "its reply")

    def get_request(self, request_id: str) -> PatchRequest:
        return self._parse(PatchRequest, self._call("GET", f"/api/v1/requests/{request_id}"), "the request")

    def approve(self, request_id: str) -> PatchRequest:
        return self._decide(request_id, "approve")

    def reject(self, request_id: str) -> PatchRequest:
        return self._decide(request_id, "reject")

    def cancel(self, request_id: str) -> PatchRequest:
        return self._decide(request_id, "cancel")

    def _decide(self, request_id: str, action: str) -> PatchRequest:
        return self._parse(PatchRequest, self._call("POST", f"/api/v1/requests/{request_id}/{action}"), "the request")

    def list_requests(self, state: str | None = None, limit: int = 50) -> list[PatchRequest]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        return self._items(PatchRequest, self._call("GET", "/api/v1/requests", params=params))

    def events(self, request_id: str, after: int = 0) -> list[JobEvent]:
        body = self._call("GET", f"/api/v1/requests/{request_id}/events", params={"after": after})
        return self._items(JobEvent, body)

    def conversations(self) -> list[Conversation]:
        return self._items(Conversation, self._call("GET", "/api/v1/conversations"))

    def messages(self, conversation_id: str) -> list[Message]:
        return self._items(Message, self._call("GET", f"/api/v1/conversations/{conversation_id}/messages"))

    def me(self) -> Me:
        """Who the API takes the caller for, and their roles."""
        body = self._call("GET", "/api/v1/me", timeout=QUICK_TIMEOUT)
        return self._parse(Me, body, "who you are")

    def system(self) -> SystemStatus:
        return self._parse(SystemStatus, self._call("GET", "/api/v1/system", timeout=QUICK_TIMEOUT), "its status")

    def meta(self) -> Meta:
        """The domain's words: states and what they mean, stages, environments, roles, reboot policies, actions (the
        UI keeps no copy of them). Read once per client, that is once per session and identity; a failure is not
        kept, so the next call asks again."""
        if self._meta is None:
            body = self._call("GET", "/api/v1/meta")
            if not isinstance(body, dict) or not isinstance(body.get("states"), list):
                raise ApiError("The patchpilot API sent its labels in an unexpected shape.")
            self._meta = self._parse(Meta, body, "its labels")
        return self._meta

    def inbox(self) -> Inbox:
        """Proposals waiting for the caller's approval, and the caller's own proposals waiting for someone."""
        body = self._call("GET", "/api/v1/inbox")
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise ApiError("The patchpilot API sent the inbox in an unexpected shape.")
        return self._parse(Inbox, body, "the inbox")

    def live(self, request_id: str) -> Live:
        """One request as a page shows it: the request, its timeline, what the caller may do, recent task output."""
        body = self._call("GET", f"/api/v1/requests/{request_id}/live")
        return self._parse(Live, body, "the request")
