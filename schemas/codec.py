"""orjson (de)serialization, and its registration as a Faust codec named ``orjson``."""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

from ltrr.schemas.exceptions import ContractError

CODEC_NAME = "orjson"


def dumps(obj: Any) -> bytes:
    """Encode to compact JSON bytes; keys keep insertion order (DSJSON readers rely on none)."""
    return orjson.dumps(obj)


def loads(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ContractError("not_json", f"not valid UTF-8 JSON: {exc}") from exc


class OrjsonCodec(codecs.Codec):
    """Faust codec: ``value_serializer="orjson"`` on a topic uses orjson for its values."""

    def _dumps(self, obj: Any) -> bytes:
        return dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return loads(s)


def register() -> None:
    """Make ``orjson`` available as a Faust serializer name (idempotent)."""
    codecs.register(CODEC_NAME, OrjsonCodec())
