"""ModelSnapshot v1 on the wire: sign, split into Kafka messages, reassemble and verify.

Pure functions and one small state machine, no Kafka I/O: the learner produces what
``encode_snapshot`` returns, in order; retrieval workers ``feed`` every message of the
snapshots topic to a ``SnapshotAssembler`` and hot-load what comes out as ``Loaded``.

A model that fits in one message travels inline (``payload_b64``). A larger one is split into
binary chunk messages keyed ``<model>/<version>/<i>`` that precede the header (keyed by the
model name), so a consumer has every chunk in hand when the header arrives. Compaction keeps
the relative order of the records it retains, so this holds after compaction too.

The HMAC covers every header field except ``signature`` and ``payload_b64`` (``chunks``
included); the payload itself is covered through ``sha256`` and ``size_bytes``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ltrr.schemas.contracts import Contract
from ltrr.schemas.exceptions import ContractError
from ltrr.schemas.validation import check

#: Room left under ``max_message_bytes`` for the key, record headers and batch overhead.
SAFETY_MARGIN_BYTES = 64 * 1024
#: Default cap on chunk bytes an assembler holds while waiting for headers.
DEFAULT_MAX_BUFFERED_BYTES = 256 * 1024 * 1024
_UNSIGNED_FIELDS = frozenset({"signature", "payload_b64"})


@dataclass(frozen=True, slots=True)
class Loaded:
    """A verified snapshot: its header (without ``payload_b64``) and the model bytes."""

    header: dict[str, Any]
    model_bytes: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a snapshot (or a chunk) was refused: ``reason`` code, human ``detail``, version.

    Reasons: ``malformed``, ``unknown_key``, ``bad_signature``, ``stale_version``,
    ``incomplete``, ``checksum_mismatch``, ``buffer_full``.
    """

    reason: str
    detail: str
    version: int | None


def sign_header(header: Mapping[str, Any], key: bytes) -> str:
    """Hex HMAC-SHA256 of the canonical header: orjson with sorted keys, unsigned fields out.

    Sorted keys make the bytes independent of field order, so any producer can sign and any
    consumer can verify without agreeing on how the JSON was laid out.
    """
    signed = {k: v for k, v in header.items() if k not in _UNSIGNED_FIELDS}
    canonical = orjson.dumps(signed, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def chunk_key(model: str, version: int, index: int) -> bytes:
    """Kafka key of chunk ``index`` of ``model`` at ``version``."""
    return f"{model}/{version}/{index}".encode()


def encode_snapshot(
    *,
    model: str,
    version: int,
    vw_args: list[str],
    model_bytes: bytes,
    examples_learned: int,
    offsets: list[dict[str, Any]],
    created_ms: int,
    key_id: str,
    key: bytes,
    max_message_bytes: int,
    previous_chunks: int = 0,
    previous_version: int | None = None,
) -> list[tuple[bytes, bytes | None]]:
    """The (key, value) messages to produce, in order, to publish one snapshot.

    Chunks first, then the header, then tombstones for the previous version's chunk keys.
    The tombstones matter: compaction keeps the newest record *per key*, and every chunk key
    is new, so without them a compacted topic would keep every chunk of every version forever.
    Raises ``ContractError`` if the header breaks the contract, ``ValueError`` on bad sizes.
    """
    budget = max_message_bytes - SAFETY_MARGIN_BYTES
    if budget <= 0:
        raise ValueError(f"max_message_bytes must exceed {SAFETY_MARGIN_BYTES}")
    if previous_version is not None and previous_version >= version:
        raise ValueError(f"previous_version {previous_version} is not older than {version}")
    header: dict[str, Any] = {
        "schema_version": Contract.MODEL_SNAPSHOT.version,
        "model": model,
        "version": version,
        "vw_args": list(vw_args),
        "examples_learned": examples_learned,
        "offsets": [dict(o) for o in offsets],
        "created_ms": created_ms,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "size_bytes": len(model_bytes),
    }
    chunks: list[tuple[bytes, bytes | None]] = []
    if _inline_size(header, len(model_bytes)) <= budget:
        header["payload_b64"] = base64.b64encode(model_bytes).decode("ascii")
    else:
        chunks = _chunks(model, version, model_bytes, budget)
        header["chunks"] = {"count": len(chunks), "chunk_bytes": budget}
    signature = sign_header(header, key)
    header["signature"] = {"alg": "hmac-sha256", "key_id": key_id, "value": signature}
    check(Contract.MODEL_SNAPSHOT, header)
    value = orjson.dumps(header)
    if len(value) > budget:
        raise ValueError(f"header alone is {len(value)} bytes; the budget is {budget}")
    messages = [*chunks, (model.encode(), value)]
    if previous_version is not None:
        messages += [(chunk_key(model, previous_version, i), None) for i in range(previous_chunks)]
    return messages


def _chunks(
    model: str, version: int, model_bytes: bytes, size: int
) -> list[tuple[bytes, bytes | None]]:
    """Binary chunk messages of at most ``size`` bytes each, keyed ``<model>/<version>/<i>``."""
    starts = range(0, len(model_bytes), size)
    return [(chunk_key(model, version, i), model_bytes[s : s + size]) for i, s in enumerate(starts)]


def _inline_size(header: dict[str, Any], payload_len: int) -> int:
    """Encoded size of ``header`` once signature and inline payload are added (an upper bound)."""
    signature = {"alg": "hmac-sha256", "key_id": "k" * 64, "value": "0" * 64}
    skeleton = orjson.dumps({**header, "signature": signature, "payload_b64": ""})
    return len(skeleton) + 4 * -(-payload_len // 3)


class SnapshotAssembler:
    """Turns the snapshots topic, fed message by message in order, into verified models.

    ``keys`` maps key_id to HMAC key; several entries let publishers rotate keys without a
    gap. ``model`` restricts the assembler to one model (others are ignored). Chunks are
    buffered until their header arrives; buffers of versions not newer than the newest
    authentic header are dropped, and the total is capped at ``max_buffered_bytes``.
    Bad input never raises: it comes back as ``Rejected``.
    """

    def __init__(
        self,
        keys: Mapping[str, bytes],
        model: str | None = None,
        *,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
    ) -> None:
        self._keys = dict(keys)
        self._model = model
        self._max_buffered = max_buffered_bytes
        self._buffers: dict[tuple[str, int], dict[int, bytes]] = {}
        self._buffered = 0
        self._newest_header: dict[str, int] = {}
        self._loaded: dict[str, int] = {}

    @property
    def buffered_bytes(self) -> int:
        """Chunk bytes currently held while waiting for their header."""
        return self._buffered

    def newest_version(self, model: str) -> int | None:
        """The newest version of ``model`` seen in an authentic header (loaded or not)."""
        return self._newest_header.get(model)

    def loaded_version(self, model: str) -> int | None:
        """The last version of ``model`` returned as ``Loaded``, if any."""
        return self._loaded.get(model)

    def feed(self, key: bytes | None, value: bytes | None) -> Loaded | Rejected | None:
        """Consume one message; return ``Loaded``/``Rejected`` for headers, else ``None``."""
        if key is None:
            return None if value is None else Rejected("malformed", "message has no key", None)
        text = key.decode("utf-8", "replace")  # a mangled key then fails the checks below
        if "/" in text:
            return self._chunk(text, value)
        if value is None or (self._model is not None and text != self._model):
            return None
        return self._header(text, value)

    def _chunk(self, text: str, value: bytes | None) -> Rejected | None:
        """Buffer a chunk (or forget it on a tombstone) unless its version is already past."""
        model, _, rest = text.partition("/")
        version_s, _, index_s = rest.partition("/")
        if not (version_s.isdecimal() and index_s.isdecimal()):
            return Rejected("malformed", f"chunk key {text!r} is not <model>/<version>/<i>", None)
        version, index = int(version_s), int(index_s)
        if self._model is not None and model != self._model:
            return None
        buffer = self._buffers.pop((model, version), {})
        self._buffered -= len(buffer.pop(index, b""))  # a re-sent chunk replaces the old one
        if buffer:
            self._buffers[(model, version)] = buffer
        if value is None or version <= self._newest_header.get(model, 0):
            return None
        if self._buffered + len(value) > self._max_buffered:
            self._drop(model, lambda v: v == version)
            return Rejected(
                "buffer_full",
                f"chunk {text} would exceed {self._max_buffered} buffered bytes; "
                "dropped this version's chunks",
                version,
            )
        self._buffers.setdefault((model, version), buffer)[index] = value
        self._buffered += len(value)
        return None

    def _header(self, model: str, value: bytes) -> Loaded | Rejected:
        """Verify a header in order: contract, signature, freshness, then the payload."""
        header = _parse_header(model, value)
        if isinstance(header, Rejected):
            return header
        version: int = header["version"]
        signature = header["signature"]
        secret = self._keys.get(signature["key_id"])
        if secret is None:
            return Rejected("unknown_key", f"key_id {signature['key_id']!r} is unknown", version)
        if not hmac.compare_digest(sign_header(header, secret), signature["value"]):
            return Rejected("bad_signature", "HMAC does not match the header", version)
        self._newest_header[model] = max(version, self._newest_header.get(model, 0))
        result = self._accept(header)
        self._drop(model, lambda v: v <= self._newest_header[model])
        return result

    def _accept(self, header: dict[str, Any]) -> Loaded | Rejected:
        """Load an authentic header if it is newer than the loaded one and its payload checks.

        Freshness comes before the payload: an old header whose chunks compaction removed is
        stale, not incomplete.
        """
        model, version = header["model"], header["version"]
        loaded = self._loaded.get(model, 0)
        if version <= loaded:
            return Rejected("stale_version", f"version {version} <= loaded {loaded}", version)
        payload = self._payload(header)
        if isinstance(payload, Rejected):
            return payload
        self._loaded[model] = version
        header.pop("payload_b64", None)
        return Loaded(header, payload)

    def _payload(self, header: dict[str, Any]) -> bytes | Rejected:
        """The model bytes (inline or reassembled), checked against size and SHA-256."""
        version: int = header["version"]
        if "payload_b64" in header:
            try:
                data = base64.b64decode(header["payload_b64"], validate=True)
            except binascii.Error as exc:
                return Rejected("malformed", f"payload_b64 is not base64: {exc}", version)
        else:
            parts = self._buffers.get((header["model"], version), {})
            missing = [i for i in range(header["chunks"]["count"]) if i not in parts]
            if missing:
                detail = f"{len(missing)} of {header['chunks']['count']} chunks missing"
                return Rejected("incomplete", f"{detail}, first {missing[0]}", version)
            data = b"".join(parts[i] for i in range(header["chunks"]["count"]))
        if len(data) != header["size_bytes"]:
            detail = f"{len(data)} bytes, header says {header['size_bytes']}"
            return Rejected("checksum_mismatch", detail, version)
        if hashlib.sha256(data).hexdigest() != header["sha256"]:
            return Rejected("checksum_mismatch", "SHA-256 of the model bytes differs", version)
        return data

    def _drop(self, model: str, doomed: Callable[[int], bool]) -> None:
        """Forget the chunk buffers of ``model`` whose version satisfies ``doomed``."""
        for buf_key in [k for k in self._buffers if k[0] == model and doomed(k[1])]:
            self._buffered -= sum(map(len, self._buffers.pop(buf_key).values()))


def _parse_header(model: str, value: bytes) -> dict[str, Any] | Rejected:
    """Decode and contract-check a header; the Kafka key must name its model."""
    try:
        header = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejected("malformed", f"header is not JSON: {exc}", None)
    if not isinstance(header, dict):
        return Rejected("malformed", f"header is a {type(header).__name__}, not an object", None)
    try:
        check(Contract.MODEL_SNAPSHOT, header)
    except ContractError as exc:
        return Rejected("malformed", str(exc), None)
    if header["model"] != model:
        return Rejected("malformed", f"key {model!r} but model {header['model']!r}", None)
    if ("payload_b64" in header) == ("chunks" in header):
        return Rejected("malformed", "exactly one of payload_b64 and chunks", header["version"])
    return header
