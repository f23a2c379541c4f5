"""Decode raw Kafka messages into validated events, or say precisely why not.

Bad input is a value here, not an exception that escapes: ``decode`` returns either the
validated JSON object or a ``Rejection`` naming the reason (a dead-letter reason code), the
failing field and what was expected. Agents route rejections to the dead-letter topic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import orjson

from ltrr.schemas.contracts import Contract, validator
from ltrr.schemas.exceptions import ContractError

#: Default upper bound of one event's encoded size; larger messages are rejected as oversized.
DEFAULT_MAX_EVENT_BYTES = 256 * 1024

_RULE_REASONS = {
    "required": "missing_field",
    "type": "wrong_type",
    "additionalProperties": "unknown_field",
    "propertyNames": "invalid_value",
}


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused: ``reason`` code, human ``detail``, offending ``field`` path."""

    reason: str
    detail: str
    field: str | None = None


def decode(
    contract: Contract,
    raw: bytes | None,
    *,
    key: bytes | None = None,
    key_field: str | None = None,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> dict[str, Any] | Rejection:
    """Parse and validate one message against ``contract``.

    ``key_field`` names the field the Kafka key must equal (e.g. ``impression_id``): a missing
    or different key would put the event on the wrong partition and silently break the join.
    """
    if raw is None:
        return Rejection("not_json", "message has no value (a tombstone?); expected a JSON object")
    if len(raw) > max_bytes:
        return Rejection(
            "oversized", f"message is {len(raw)} bytes; the limit is {max_bytes} (max_event_bytes)"
        )
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection("not_json", f"not valid UTF-8 JSON: {exc}")
    if not isinstance(obj, dict):
        return Rejection("not_object", f"expected a JSON object, got {type(obj).__name__}")
    try:
        check(contract, obj)
    except ContractError as exc:
        return Rejection(exc.reason, exc.detail, exc.field)
    if key_field is not None:
        expected = obj[key_field]
        got = None if key is None else key.decode("utf-8", "replace")
        if got != expected:
            return Rejection(
                "bad_key",
                f"Kafka key is {got!r} but {key_field} is {expected!r}; produce with "
                f"key={key_field} so the event lands on its join partition",
                key_field,
            )
    return obj


def check(contract: Contract, obj: dict[str, Any]) -> None:
    """Raise ``ContractError`` unless ``obj`` satisfies ``contract`` (schema + cross-field)."""
    version = obj.get("schema_version")
    if "schema_version" not in obj:
        raise ContractError("missing_field", "schema_version is required", "schema_version")
    if version != contract.version or isinstance(version, bool):
        raise ContractError(
            "unsupported_schema_version",
            f"{contract.stem} schema_version {version!r} is not supported; this worker "
            f"accepts version {contract.version}",
            "schema_version",
        )
    try:
        validator(contract)(obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise _contract_error(exc) from exc
    semantic = _SEMANTIC_CHECKS.get(contract)
    if semantic is not None:
        semantic(obj)


def _contract_error(exc: fastjsonschema.JsonSchemaValueException) -> ContractError:
    path = _field_path(exc.name or "data")
    reason = _RULE_REASONS.get(exc.rule or "", "invalid_value")
    detail = exc.message.replace("data.", "", 1).replace("data ", "event ", 1)
    if exc.rule == "required" and isinstance(exc.value, dict):
        missing = [k for k in exc.rule_definition or () if k not in exc.value]
        field = _join(path, missing[0]) if missing else path
        return ContractError(reason, f"{field} is required", field)
    if exc.rule == "additionalProperties" and isinstance(exc.value, dict):
        known = (exc.definition or {}).get("properties", {})
        extra = sorted(k for k in exc.value if k not in known)
        field = _join(path, extra[0]) if extra else path
        return ContractError(reason, f"{field} is not a field of this contract", field)
    return ContractError(reason, detail, path or None)


def _field_path(name: str) -> str:
    if name == "data":
        return ""
    return name[5:] if name.startswith("data.") else name


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_impression(obj: dict[str, Any]) -> None:
    plans, pmf, chosen = obj["plans"], obj["pmf"], obj["chosen"]
    if len(pmf) != len(plans):
        raise ContractError(
            "invalid_value", f"pmf has {len(pmf)} entries for {len(plans)} plans", "pmf"
        )
    if chosen >= len(plans):
        raise ContractError(
            "invalid_value", f"chosen={chosen} but only {len(plans)} plans were offered", "chosen"
        )
    total = math.fsum(pmf)
    if abs(total - 1.0) > 1e-6:
        raise ContractError("invalid_value", f"pmf sums to {total:.9f}, expected 1", "pmf")
    if pmf[chosen] <= 0.0:
        raise ContractError(
            "invalid_value",
            "the chosen plan has probability 0; it could not have been drawn",
            "pmf",
        )
    ids = [p["id"] for p in plans]
    if len(set(ids)) != len(ids):
        raise ContractError("invalid_value", "plan ids must be unique", "plans")


def _check_reward(obj: dict[str, Any]) -> None:
    if obj["_labelIndex"] != obj["_label_Action"] - 1:
        raise ContractError("invalid_value", "_labelIndex must be _label_Action - 1", "_labelIndex")
    if obj["_label_Action"] > len(obj["c"]["_multi"]):
        raise ContractError(
            "invalid_value", "_label_Action is past the end of c._multi", "_label_Action"
        )
    if len(obj["a"]) != len(obj["p"]):
        raise ContractError("invalid_value", "a and p must have the same length", "p")


_SEMANTIC_CHECKS = {
    Contract.SEARCH_IMPRESSION: _check_impression,
    Contract.REWARD: _check_reward,
}
