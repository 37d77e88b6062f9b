"""AWX-style list endpoints: field lookups (`name=`, `created__gte=`, `counter__gt=`), `order_by`, pages.

A bad parameter answers 400 (403 for filtering on `extra_vars`, 404 for a page out of range), never 500.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 200
# django-ansible-base's FieldLookupBackend.RESERVED_NAMES: never filters (`limit` is a pagination parameter, so
# `jobs/?limit=web-01` lists every job, never the jobs with that limit).
NON_FILTER_PARAMS = frozenset({"page", "page_size", "order_by", "format", "search", "order", "type", "host_filter",
                               "count_disabled", "no_truncate", "limit"})
LOOKUPS = frozenset({"exact", "iexact", "contains", "icontains", "startswith", "istartswith",
                     "gt", "gte", "lt", "lte", "in", "isnull"})


class QueryError(Exception):
    """A query the double (like AWX) refuses; turned into a JSON error response."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def parse_datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "+"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


_COERCE: dict[type, Callable[[str], Any]] = {int: int, str: str, bool: parse_bool, datetime: parse_datetime}


def _comparable(value: Any, kind: type) -> Any:
    return parse_datetime(value) if kind is datetime and isinstance(value, str) else value


def _matches(value: Any, lookup: str, wanted: Any) -> bool:
    if lookup == "isnull":
        return (value is None) == wanted
    if value is None:
        return False
    if lookup == "in":
        return value in wanted
    if lookup in ("iexact", "icontains", "istartswith"):
        value, wanted = str(value).lower(), str(wanted).lower()
        lookup = lookup[1:]
    return {
        "exact": lambda: value == wanted,
        "contains": lambda: str(wanted) in str(value),
        "startswith": lambda: str(value).startswith(str(wanted)),
        "gt": lambda: value > wanted,
        "gte": lambda: value >= wanted,
        "lt": lambda: value < wanted,
        "lte": lambda: value <= wanted,
    }[lookup]()


def filter_items(items: list[dict[str, Any]], params: QueryParams,
                 fields: dict[str, type]) -> list[dict[str, Any]]:
    """Apply every `field[__lookup]=value` parameter; `fields` names the filterable fields and their types."""
    for key, raw in params.multi_items():
        if key in NON_FILTER_PARAMS:
            if key == "search":
                items = [item for item in items if raw.lower() in str(item.get("name", "")).lower()]
            continue
        name, _, lookup = key.partition("__")
        if name == "extra_vars":
            raise QueryError(403, "Filtering on extra_vars is not allowed.")
        lookup = lookup or "exact"
        if name not in fields or lookup not in LOOKUPS:
            raise QueryError(400, f"Invalid filter: {key} is not an allowed field or lookup.")
        kind = fields[name]
        try:
            if lookup == "isnull":
                wanted: Any = parse_bool(raw)
            elif lookup == "in":
                wanted = {_COERCE[kind](part) for part in raw.split(",")}
            else:
                wanted = _COERCE[kind](raw)
        except (ValueError, TypeError):
            raise QueryError(400, f"Invalid value for {key}: {raw!r}.") from None
        items = [item for item in items if _matches(_comparable(item.get(name), kind), lookup, wanted)]
    return items


def order_items(items: list[dict[str, Any]], params: QueryParams, fields: dict[str, type],
                default: str) -> list[dict[str, Any]]:
    """`order_by=a,-b`; rows with an empty value sort last, as PostgreSQL does."""
    spec = params.get("order_by") or default
    ordered = list(items)
    for term in reversed([part.strip() for part in spec.split(",") if part.strip()]):
        name = term.lstrip("-")
        if name not in fields:
            raise QueryError(400, f"Cannot order by {name!r}: not an allowed field.")
        kind = fields[name]
        present = [item for item in ordered if item.get(name) is not None]
        missing = [item for item in ordered if item.get(name) is None]
        present.sort(key=lambda item: _comparable(item[name], kind), reverse=term.startswith("-"))
        ordered = present + missing
    return ordered


def _positive_int(params: QueryParams, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(400, f"{name} must be a positive integer, not {raw!r}.") from None
    if value < 1:
        raise QueryError(400, f"{name} must be a positive integer, not {raw!r}.")
    return value


def paginate(path: str, params: QueryParams, items: list[dict[str, Any]], *, overlap: int = 0) -> dict[str, Any]:
    """One page in AWX's shape; `next`/`previous` are server-relative paths, as AWX returns them.
    `overlap` makes every page after the first repeat that many rows of the previous page."""
    page_size = min(_positive_int(params, "page_size", DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE)
    page = _positive_int(params, "page", 1)
    count = len(items)
    if page > 1 and (page - 1) * page_size >= count:
        raise QueryError(404, "Invalid page.")
    start = max(0, (page - 1) * page_size - (overlap if page > 1 else 0))

    def link(number: int) -> str:
        query = [(k, v) for k, v in params.multi_items() if k != "page"] + [("page", str(number))]
        return f"{path}?{urlencode(query)}"

    return {
        "count": count,
        "next": link(page + 1) if page * page_size < count else None,
        "previous": link(page - 1) if page > 1 else None,
        "results": items[start:start + page_size],
    }


def list_response(path: str, params: QueryParams, items: list[dict[str, Any]], fields: dict[str, type],
                  default_order: str, *, overlap: int = 0) -> dict[str, Any]:
    chosen = order_items(filter_items(items, params, fields), params, fields, default_order)
    return paginate(path, params, chosen, overlap=overlap)
