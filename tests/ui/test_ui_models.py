"""The UI's response models (ui/models.py, ui/meta.py) against the API they read.

Every field a UI model declares must exist in what the API answers, with a type the UI can read: for the routes
with a response schema, in the API's OpenAPI document; for the routes that answer a plain JSON object (meta, inbox,
live), in what the API's own functions return for them. A field the UI requires must be one the API always sends.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import AliasChoices, BaseModel

from api.main import app
from api.routes import inbox as inbox_route
from api.services import timeline
from core.identity import Principal
from core.inventory import get_catalog
from core.models import PatchRequest as PatchRequestRow
from ui import models
from ui.meta import JobsShown, Meta, StageInfo, StateInfo

# (method, path, the UI's model, whether the answer is a list under "items")
ROUTES = [
    ("post", "/api/v1/chat", models.ChatReply, False),
    ("get", "/api/v1/requests/{request_id}", models.PatchRequest, False),
    ("post", "/api/v1/requests/{request_id}/approve", models.PatchRequest, False),
    ("post", "/api/v1/requests/{request_id}/reject", models.PatchRequest, False),
    ("post", "/api/v1/requests/{request_id}/cancel", models.PatchRequest, False),
    ("get", "/api/v1/requests", models.PatchRequest, True),
    ("get", "/api/v1/requests/{request_id}/events", models.JobEvent, True),
    ("get", "/api/v1/conversations", models.Conversation, True),
    ("get", "/api/v1/conversations/{conversation_id}/messages", models.Message, True),
    ("get", "/api/v1/me", models.Me, False),
    ("get", "/api/v1/system", models.SystemStatus, False),
]
# The routes that answer a plain object: checked against what the API's functions return.
PLAIN_ROUTES = {"/api/v1/meta": Meta, "/api/v1/inbox": models.Inbox, "/api/v1/requests/{request_id}/live": models.Live}


# --- comparing JSON schemas ------------------------------------------------------------------------


class Schemas:
    """One side's JSON schemas, with its $refs resolved."""

    def __init__(self, definitions: dict[str, Any]) -> None:
        self.definitions = definitions

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.definitions[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def variants(self, schema: dict[str, Any]) -> list[dict[str, Any]]:
        schema = self.resolve(schema)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return [v for option in schema[key] for v in self.variants(option)]
        return [schema]


def problems(ui: dict[str, Any], api: dict[str, Any], ui_side: Schemas, api_side: Schemas, path: str) -> list[str]:
    """Why the UI's schema cannot read everything the API's schema allows (empty: it can)."""
    ui_options = ui_side.variants(ui)
    if any(not option.get("type") and "properties" not in option for option in ui_options):
        return []  # the UI reads anything here
    found: list[str] = []
    for sent in api_side.variants(api):
        attempts = [_one(option, sent, ui_side, api_side, path) for option in ui_options]
        if all(attempts):
            found += min(attempts, key=len)
    return found


def _one(ui: dict[str, Any], api: dict[str, Any], ui_side: Schemas, api_side: Schemas, path: str) -> list[str]:
    ui_type, api_type = ui.get("type", "object"), api.get("type")
    if api_type is None and "properties" not in api:
        return [f"{path}: the API sends anything, the UI reads {ui_type}"]
    api_type = api_type or "object"
    if ui_type == "number" and api_type == "integer":
        return []
    if ui_type != api_type:
        return [f"{path}: the API sends {api_type}, the UI reads {ui_type}"]
    if "enum" in ui and not set(api.get("enum", [object()])) <= set(ui["enum"]):
        return [f"{path}: the API may send values the UI does not know"]
    if ui_type == "array":
        return problems(ui.get("items", {}), api.get("items", {}), ui_side, api_side, f"{path}[]")
    if ui_type == "object" and "properties" in ui:
        return object_problems(ui, api, ui_side, api_side, path)
    if ui_type == "object" and isinstance(ui.get("additionalProperties"), dict):
        sent = api.get("additionalProperties")
        if not isinstance(sent, dict):
            return [f"{path}: the API sends an object without a value type, the UI reads a mapping"]
        return problems(ui["additionalProperties"], sent, ui_side, api_side, f"{path}{{}}")
    return []


def object_problems(ui: dict[str, Any], api: dict[str, Any], ui_side: Schemas, api_side: Schemas,
                    path: str) -> list[str]:
    found = []
    sent = api.get("properties", {})
    for name, schema in ui["properties"].items():
        if name not in sent:
            found.append(f"{path}.{name}: the API has no such field")
            continue
        found += problems(schema, sent[name], ui_side, api_side, f"{path}.{name}")
    for name in ui.get("required", []):
        if name in sent and name not in api.get("required", []):
            found.append(f"{path}.{name}: the UI requires a field the API may leave out")
    return found


def ui_schema(model: type[BaseModel]) -> tuple[dict[str, Any], Schemas]:
    schema = model.model_json_schema()
    return schema, Schemas(schema.get("$defs", {}))


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return app.openapi()


def response_schema(openapi: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation = openapi["paths"][path][method]
    return operation["responses"]["200"]["content"]["application/json"]["schema"]


@pytest.mark.parametrize("method, path, model, listed", ROUTES, ids=[f"{m} {p}" for m, p, *_ in ROUTES])
def test_each_ui_model_reads_its_routes_openapi_schema(openapi, method, path, model, listed) -> None:
    api_side = Schemas(openapi["components"]["schemas"])
    api = api_side.resolve(response_schema(openapi, method, path))
    if listed:
        assert "items" in api["properties"], f"{path} answers no items list"
        api = api["properties"]["items"]
        assert api.get("type") == "array"
        api = api["items"]
    ui, ui_side = ui_schema(model)
    assert not problems(ui, api, ui_side, api_side, model.__name__)


def test_every_response_model_of_the_ui_is_checked() -> None:
    checked = {model for *_, model, _ in ROUTES} | set(PLAIN_ROUTES.values())
    readers = {getattr(models, name) for name in ("ChatReply", "PatchRequest", "JobEvent", "Conversation", "Message",
                                                  "Me", "SystemStatus", "Inbox", "Live")}
    assert readers <= checked


def test_the_comparison_finds_what_the_ui_cannot_read() -> None:
    class Wrong(BaseModel):
        id: int  # the API sends a string
        nowhere: str = ""  # the API has no such field
        awx_job_id: int  # the API may send null
        approved_by: str | None = None  # fine

    api_side = Schemas(app.openapi()["components"]["schemas"])
    ui, ui_side = ui_schema(Wrong)
    found = problems(ui, api_side.resolve({"$ref": "#/components/schemas/RequestView"}), ui_side, api_side, "Wrong")
    assert any(p.startswith("Wrong.id: the API sends string") for p in found)
    assert "Wrong.nowhere: the API has no such field" in found
    assert any(p.startswith("Wrong.awx_job_id: the API sends null") for p in found)
    assert not [p for p in found if p.startswith("Wrong.approved_by")]


# --- the plain-object routes: what the API's functions return ------------------------------------


def _aliases(name: str, field: Any) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [str(alias or name)]


def _nested(annotation: Any) -> type[BaseModel] | None:
    """The model inside an annotation (Model, list[Model], dict[str, Model], Model | None), if any."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, dict, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if (found := _nested(arg)) is not None:
                return found
    return None


def sample_problems(model: type[BaseModel], data: Any, path: str) -> list[str]:
    """Fields of `model` missing from `data` (the API's answer), recursively; then the answer must validate."""
    if not isinstance(data, dict):
        return [f"{path}: the API sends {type(data).__name__}, the UI reads an object"]
    found = []
    for name, field in model.model_fields.items():
        keys = [k for k in _aliases(name, field) if k in data]
        if not keys:
            found.append(f"{path}.{name}: the API does not send it")
            continue
        value, inner = data[keys[0]], _nested(field.annotation)
        if inner is not None:
            if isinstance(value, list):
                values = value
            elif isinstance(value, dict) and typing.get_origin(field.annotation) is dict:
                values = list(value.values())
            else:
                values = [value]
            for item in values[:3]:
                if item is not None:
                    found += sample_problems(inner, item, f"{path}.{name}")
    return found


def wire(data: Any) -> str:
    """The answer as the API sends it: JSON (enum members become their values, datetimes ISO strings)."""
    return json.dumps(data, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))


def check_sample(model: type[BaseModel], data: Any) -> None:
    assert not sample_problems(model, json.loads(wire(data)), model.__name__)
    model.model_validate_json(wire(data), strict=True)  # every value of a type the UI reads


class _Rows:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def all(self) -> list[Any]:
        return self.rows

    def scalars(self) -> Any:
        return iter(self.rows)


class StubSession:
    """Answers every query with the given rows: the API's pure shaping code runs without a database."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def execute(self, _statement: Any) -> _Rows:
        return _Rows(self.rows)


@pytest.fixture(scope="module")
def catalog():
    return get_catalog()


def test_meta_model_reads_what_the_api_sends(catalog) -> None:
    answer = timeline.meta(catalog)
    check_sample(Meta, answer)
    meta = Meta.model_validate_json(wire(answer))
    # The words are really there: states with their meaning, stages, environments, choices.
    assert meta.states and meta.stages and meta.roles and meta.reboot_policies and meta.actions
    assert any(s.terminal for s in meta.states) and any(s.cancelable for s in meta.states)
    assert meta.production_environments and set(meta.production_environments) <= set(meta.environments)
    assert meta.jobs_shown.failed and set(meta.jobs_shown.failed) <= set(meta.jobs_shown.finished)
    for model in (StateInfo, StageInfo, JobsShown):
        assert model.model_config.get("extra") == "ignore"


def test_live_model_reads_what_the_api_sends(openapi, catalog) -> None:
    # The request is a RequestView (checked against the OpenAPI document) plus cancel_requested_at.
    api_side = Schemas(openapi["components"]["schemas"])
    ui, ui_side = ui_schema(models.PatchRequest)
    assert not problems(ui, api_side.resolve({"$ref": "#/components/schemas/RequestView"}), ui_side, api_side, "req")
    extra = set(models.LiveRequest.model_fields) - set(models.PatchRequest.model_fields)
    assert extra == {"cancel_requested_at"}
    assert 'view["cancel_requested_at"]' in inspect.getsource(inbox_route.get_live)
    # The rest as the API's functions build it.
    now = datetime.now(UTC)
    host = next(iter(catalog.inventory.hosts))
    view = {"id": "a" * 32, "state": "running", "stages": [{"stage": "prechecks", "at": now.isoformat()}],
            "check_mode": False, "reboot": "if_needed", "finished_at": None, "decided_by": None,
            "requested_by": "alice", "hosts": [{"name": host}], "cancel_requested_at": None}
    plays = {"prechecks": {"ran": 2, "skipped": 0, "failed": 0, "first": now, "last": now}}
    event_row = (7, now, "Patching", "Apply updates", host, "runner_on_ok", True, False, {"res": {"msg": "done"}})
    answer = {
        "request": view,
        "timeline": timeline.timeline(view, plays),
        "allowed": timeline.refusals(Principal("bob", frozenset({"approver"}), "token"), view, catalog,
                                     same_person=lambda a, b: a == b),
        "tasks": timeline.recent_tasks(StubSession([event_row]), view["id"]),
        "replaced_by_newer": False,
    }
    for name in ("timeline", "allowed", "tasks", "replaced_by_newer"):
        field = models.Live.model_fields[name]
        inner = _nested(field.annotation)
        if inner is not None:
            assert answer[name] and not sample_problems(inner, json.loads(wire(answer[name][0])), name)
    live = models.Live.model_validate_json(wire({**answer, "request": {**view, "stage": "prechecks"}}), strict=True)
    assert live.timeline[0].status == models.StepStatus.CURRENT and live.tasks[0].result
    assert {s.status for s in live.timeline} <= set(models.StepStatus)


def test_inbox_model_reads_what_the_api_sends(catalog) -> None:
    host = next(iter(catalog.inventory.hosts))
    row = PatchRequestRow(id="b" * 32, action="patch", hosts=[host], patch_group="Group-1", requested_by="alice",
                          created_at=datetime.now(UTC) - timedelta(minutes=2),
                          expires_at=datetime.now(UTC) + timedelta(hours=1))
    caller = Principal("alice", frozenset({"requester"}), "token")
    answer = timeline.inbox(StubSession([row]), caller, catalog, same_person=lambda a, b: a == b)
    assert answer["mine"], "the check needs an item"
    check_sample(models.Inbox, {**answer, "items": answer["mine"]})


def test_the_sample_check_finds_a_missing_field() -> None:
    class Wants(BaseModel):
        value: str
        inner: list[models.StageEntry]

    assert sample_problems(Wants, {"value": "x", "inner": [{"label": "y", "at": None}]}, "Wants") == [
        "Wants.inner.stage: the API does not send it"]
    assert sample_problems(Wants, {"inner": []}, "Wants") == ["Wants.value: the API does not send it"]
