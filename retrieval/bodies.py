"""Decoding of the HTTP API's JSON bodies (pure): bytes in, a validated request or a
``Refusal`` (status, reason, detail, field) out, never an exception.

The request schemas are the ones ``openapi.json`` publishes, so what is documented is what is
enforced. JSON Schema counts ``5.0`` as an integer; this API does not: where the contract says
integer, a number written with a fraction or an exponent (or one too large for 64 bits, which
the parser turns into a float) is refused, so nothing downstream meets a float it did not
expect or writes one to Kafka."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import fastjsonschema
import orjson

from ltrr.schemas.contracts import Contract
from ltrr.schemas.validation import Rejection, decode

__all__ = [
    "MAX_BATCH",
    "OPENAPI",
    "Refusal",
    "decode_actions",
    "decode_search",
    "integral_float",
]

#: Most actions one POST /actions may carry.
MAX_BATCH = 100

OPENAPI: dict[str, Any] = json.loads(
    resources.files(__package__).joinpath("openapi.json").read_text("utf-8")
)
_COMPONENTS: dict[str, Any] = OPENAPI["components"]["schemas"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: HTTP ``status``, ``reason`` code, human ``detail`` and the
    offending ``field`` (a dotted body path such as ``context.hour``, or a header name)."""

    status: int
    reason: str
    detail: str
    field: str | None = None


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        return _resolve(_COMPONENTS[ref.rsplit("/", 1)[1]])
    return schema


def json_schema(schema: Any) -> Any:
    """An OpenAPI 3.0 schema as plain JSON Schema (draft-07): ``$ref`` inlined, ``nullable``
    turned into a ``null`` type, OpenAPI-only keywords dropped."""
    if isinstance(schema, list):
        return [json_schema(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    schema = _resolve(schema)
    out = {
        k: json_schema(v)
        for k, v in schema.items()
        if k not in {"nullable", "example", "description", "default"}
    }
    if schema.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [{"type": "null"}, out]}
    return out


def _compile(name: str) -> Any:
    return fastjsonschema.compile(
        {**json_schema(_COMPONENTS[name]), "$schema": "http://json-schema.org/draft-07/schema#"}
    )


_validate_search = _compile("SearchRequest")


def integral_float(schema: Mapping[str, Any], value: Any, path: str = "") -> str | None:
    """The path of the first float in ``value`` where ``schema`` (OpenAPI) asks for an
    integer, or None. Run after schema validation, so ``value`` already has the right shape."""
    schema = _resolve(schema)
    if schema.get("type") == "integer" and isinstance(value, float):
        return path
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, Mapping) else None)
            found = None if sub is None else integral_float(sub, item, _join(path, key))
            if found is not None:
                return found
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, Mapping):
        for index, item in enumerate(value):
            found = integral_float(items, item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Refusal(400, "not_json", f"body is not valid UTF-8 JSON: {exc}")


def decode_search(raw: bytes) -> dict[str, Any] | Refusal:
    """A SearchRequest, validated against its published schema (integers strict)."""
    body = _parse(raw)
    if isinstance(body, Refusal):
        return body
    if not isinstance(body, dict):
        return Refusal(400, "not_object", "body must be a JSON object")
    try:
        _validate_search(body)
    except fastjsonschema.JsonSchemaValueException as exc:
        field = (exc.name or "data").removeprefix("data").lstrip(".") or None
        detail = exc.message.replace("data.", "").replace("data ", "request ")
        return Refusal(400, f"invalid_{exc.rule or 'value'}", detail, field)
    where = integral_float(_COMPONENTS["SearchRequest"], body)
    if where is not None:
        return Refusal(400, "invalid_type", f"{where} must be an integer, not a fraction", where)
    return body


def decode_actions(raw: bytes) -> tuple[list[tuple[dict[str, Any], bytes]], bool] | Refusal:
    """One UserAction or a JSON array of 1 to ``MAX_BATCH``, each checked against the
    UserAction v1 contract (integers strict): ``([(action, encoded), ...], is_batch)``."""
    body = _parse(raw)
    if isinstance(body, Refusal):
        return body
    batch = isinstance(body, list)
    items = body if batch else [body]
    if batch and not 1 <= len(items) <= MAX_BATCH:
        return Refusal(400, "invalid_batch", f"a batch holds 1 to {MAX_BATCH} actions")
    decoded = []
    for index, item in enumerate(items):
        where = f"[{index}]" if batch else ""
        if not isinstance(item, dict):
            return Refusal(400, "not_object", f"action{where} must be a JSON object", where or None)
        item.setdefault("schema_version", 1)
        encoded = orjson.dumps(item)
        result = decode(Contract.USER_ACTION, encoded)
        if isinstance(result, Rejection):
            field = f"{where}.{result.field}" if batch and result.field else result.field
            return Refusal(400, result.reason, f"action{where}: {result.detail}", field)
        wrong = integral_float(_COMPONENTS["UserAction"], result)
        if wrong is not None:
            field = f"{where}.{wrong}" if batch else wrong
            detail = f"action{where}: {wrong} must be an integer, not a fraction"
            return Refusal(400, "wrong_type", detail, field)
        decoded.append((result, encoded))
    return decoded, batch
