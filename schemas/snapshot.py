"""ModelSnapshot v1 on the wire: sign, split into Kafka messages, reassemble and verify.

Pure functions and one small state machine, no Kafka I/O: the learner produces what
``encode_snapshot`` returns, in order; retrieval workers ``feed`` every message of the
snapshots topic to a ``SnapshotAssembler`` and hot-load what comes out as ``Loaded``.

A model that fits in one message travels inline (``payload_b64``). A larger one is split into
chunk messages keyed ``<model>/<version>/<i>`` (``<model>/<epoch>-<version>/<i>`` from epoch 1
on) that precede the header (keyed by the model name), so a consumer has every chunk in hand
when the header arrives. Compaction keeps the relative order of the records it retains, so this
holds after compaction too.

The HMAC covers every header field except ``signature`` and ``payload_b64`` (``chunks``
included); the payload itself is covered through ``sha256`` and ``size_bytes``. Every chunk is
signed too (``CHUNK_MAGIC``, key id, HMAC of its key and bytes, then the bytes), so a consumer
buffers only chunks a key holder wrote: junk on the topic cannot fill its memory or push real
chunks out.

Newer means a greater ``(epoch, version)``. The learner counts versions within an epoch; an
operator starts a new epoch (``ltrr model publish --new-epoch``) to supersede every version of
the old one, e.g. after a version was published that nothing could follow.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
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
#: Default cap on the size of one model (``size_bytes``), checked before anything is
#: allocated for it.
DEFAULT_MAX_MODEL_BYTES = 256 * 1024 * 1024
#: Largest version and epoch (JSON-safe integers).
MAX_VERSION = 2**53 - 1
MAX_EPOCH = 2**31 - 1
#: First bytes of every chunk value; then the key id's length (one byte), the key id, the
#: 32-byte HMAC-SHA256 of ``chunk key + b"\n" + bytes``, and the bytes.
CHUNK_MAGIC = b"LTRRCHK1"
_UNSIGNED_FIELDS = frozenset({"signature", "payload_b64"})
#: Longest Kafka key looked at (a model name is at most 64 characters).
_MAX_KEY_BYTES = 128
_CHUNK_KEY = re.compile(
    r"(?P<model>[A-Za-z0-9._-]{1,64})/(?:(?P<epoch>[0-9]{1,10})-)?"
    r"(?P<version>[0-9]{1,16})/(?P<index>[0-9]{1,7})"
)
Stamp = tuple[int, int]  # (epoch, version): greater is newer


@dataclass(frozen=True, slots=True)
class Loaded:
    """A verified snapshot: its header (without ``payload_b64``) and the model bytes."""

    header: dict[str, Any]
    model_bytes: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a snapshot (or a chunk) was refused: ``reason`` code, human ``detail``, version.

    Reasons: ``malformed``, ``unknown_key``, ``bad_signature``, ``stale_version``,
    ``incomplete``, ``checksum_mismatch``, ``buffer_full``, ``too_large``.
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


def chunk_key(model: str, version: int, index: int, epoch: int = 0) -> bytes:
    """Kafka key of chunk ``index`` of ``model`` at ``version`` (of ``epoch``)."""
    stamp = f"{epoch}-{version}" if epoch else str(version)
    return f"{model}/{stamp}/{index}".encode()


def sign_chunk(key: bytes, key_id: str, chunk_key_bytes: bytes, data: bytes) -> bytes:
    """The value of a chunk message: magic, key id, HMAC of key and bytes, then the bytes."""
    kid = key_id.encode()
    mac = hmac.new(key, chunk_key_bytes + b"\n" + data, hashlib.sha256).digest()
    return CHUNK_MAGIC + bytes([len(kid)]) + kid + mac + data


def stamp_of(header: Mapping[str, Any]) -> Stamp:
    """``(epoch, version)`` of a header (epoch 0 when absent)."""
    return int(header.get("epoch", 0)), int(header["version"])


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
    epoch: int = 0,
    previous_epoch: int | None = None,
) -> list[tuple[bytes, bytes | None]]:
    """The (key, value) messages to produce, in order, to publish one snapshot.

    Chunks first, then the header, then tombstones for the previous version's chunk keys
    (``previous_epoch`` defaults to ``epoch``).
    The tombstones matter: compaction keeps the newest record *per key*, and every chunk key
    is new, so without them a compacted topic would keep every chunk of every version forever.
    Raises ``ContractError`` if the header breaks the contract, ``ValueError`` on bad sizes.
    """
    if not key:
        raise ValueError("no signing key: set LTRR_SNAPSHOT_KEY")
    budget = max_message_bytes - SAFETY_MARGIN_BYTES
    if budget <= 0:
        raise ValueError(f"max_message_bytes must exceed {SAFETY_MARGIN_BYTES}")
    previous_epoch = epoch if previous_epoch is None else previous_epoch
    if previous_version is not None and (previous_epoch, previous_version) >= (epoch, version):
        raise ValueError(
            f"previous {previous_epoch}-{previous_version} is not older than {epoch}-{version}"
        )
    header: dict[str, Any] = {
        "schema_version": Contract.MODEL_SNAPSHOT.version,
        "model": model,
        "epoch": epoch,
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
        chunks = _chunks(model, (epoch, version), model_bytes, budget, key_id, key)
        header["chunks"] = {"count": len(chunks), "chunk_bytes": budget}
    signature = sign_header(header, key)
    header["signature"] = {"alg": "hmac-sha256", "key_id": key_id, "value": signature}
    check(Contract.MODEL_SNAPSHOT, header)
    value = orjson.dumps(header)
    if len(value) > budget:
        raise ValueError(f"header alone is {len(value)} bytes; the budget is {budget}")
    messages = [*chunks, (model.encode(), value)]
    if previous_version is not None:
        messages += [
            (chunk_key(model, previous_version, i, previous_epoch), None)
            for i in range(previous_chunks)
        ]
    return messages


def _chunks(
    model: str, stamp: Stamp, model_bytes: bytes, size: int, key_id: str, key: bytes
) -> list[tuple[bytes, bytes | None]]:
    """Signed chunk messages of at most ``size`` model bytes each (plus the signature
    prefix, which ``SAFETY_MARGIN_BYTES`` leaves room for)."""
    out: list[tuple[bytes, bytes | None]] = []
    for i, start in enumerate(range(0, len(model_bytes), size)):
        ck = chunk_key(model, stamp[1], i, stamp[0])
        out.append((ck, sign_chunk(key, key_id, ck, model_bytes[start : start + size])))
    return out


def _inline_size(header: dict[str, Any], payload_len: int) -> int:
    """Encoded size of ``header`` once signature and inline payload are added (an upper bound)."""
    signature = {"alg": "hmac-sha256", "key_id": "k" * 64, "value": "0" * 64}
    skeleton = orjson.dumps({**header, "signature": signature, "payload_b64": ""})
    return len(skeleton) + 4 * -(-payload_len // 3)


class SnapshotAssembler:
    """Turns the snapshots topic, fed message by message in order, into verified models.

    ``keys`` maps key_id to HMAC key; several entries let publishers rotate keys without a
    gap. ``model`` restricts the assembler to one model (others are ignored). Only chunks
    signed with a known key are buffered, until their header arrives; buffers of versions not
    newer than the newest authentic header are dropped, and the total is capped at
    ``max_buffered_bytes``. A header whose ``size_bytes`` exceeds ``max_model_bytes``, or whose
    chunk layout does not add up, is refused before anything is allocated for it.

    ``commit=True`` (the default) counts a version as loaded as soon as it comes back as
    ``Loaded``. A consumer that still has to load the model (a retrieval worker) passes
    ``commit=False`` and calls ``commit`` once the model loaded and passed its checks, so a
    snapshot that fails there does not consume its version. Bad input never raises: it comes
    back as ``Rejected``.
    """

    def __init__(
        self,
        keys: Mapping[str, bytes],
        model: str | None = None,
        *,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
        max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
        commit: bool = True,
    ) -> None:
        self._keys = dict(keys)
        self._model = model
        self._max_buffered = max_buffered_bytes
        self._max_model = max_model_bytes
        self._auto_commit = commit
        self._buffers: dict[tuple[str, Stamp], dict[int, bytes]] = {}
        self._buffered = 0
        self._newest_header: dict[str, Stamp] = {}
        self._loaded: dict[str, Stamp] = {}

    @property
    def buffered_bytes(self) -> int:
        """Chunk bytes currently held while waiting for their header."""
        return self._buffered

    def newest_version(self, model: str) -> int | None:
        """The version of the newest authentic header of ``model`` (loaded or not)."""
        stamp = self._newest_header.get(model)
        return None if stamp is None else stamp[1]

    def newest(self, model: str) -> Stamp | None:
        """``(epoch, version)`` of the newest authentic header of ``model`` (loaded or not)."""
        return self._newest_header.get(model)

    def loaded_version(self, model: str) -> int | None:
        """The version of the last committed ``Loaded`` of ``model``, if any."""
        stamp = self._loaded.get(model)
        return None if stamp is None else stamp[1]

    def commit(self, model: str, stamp: Stamp) -> None:
        """Count ``(epoch, version)`` of ``model`` as loaded: only newer ones load after it."""
        self._loaded[model] = max(stamp, self._loaded.get(model, (0, 0)))

    def feed(self, key: bytes | None, value: bytes | None) -> Loaded | Rejected | None:
        """Consume one message; return ``Loaded``/``Rejected`` for headers and refused
        chunks, else ``None``."""
        if key is None:
            return None if value is None else Rejected("malformed", "message has no key", None)
        if len(key) > _MAX_KEY_BYTES:
            return Rejected("malformed", f"key of {len(key)} bytes is too long", None)
        text = key.decode("utf-8", "replace")  # a mangled key then fails the checks below
        if "/" in text:
            return self._chunk(text, key, value)
        if value is None or (self._model is not None and text != self._model):
            return None
        return self._header(text, value)

    def _chunk(self, text: str, key: bytes, value: bytes | None) -> Rejected | None:
        """Buffer a signed chunk (or forget it on a tombstone) unless its version is past."""
        match = _CHUNK_KEY.fullmatch(text)
        if match is None:
            return Rejected(
                "malformed", f"chunk key {text[:80]!r} is not <model>/[<epoch>-]<version>/<i>", None
            )
        model = match["model"]
        stamp = (int(match["epoch"] or 0), int(match["version"]))
        index = int(match["index"])
        if self._model is not None and model != self._model:
            return None
        buffer = self._buffers.pop((model, stamp), {})
        if value is None:  # a tombstone: the publisher is done with this chunk
            self._buffered -= len(buffer.pop(index, b""))
            if buffer:
                self._buffers[(model, stamp)] = buffer
            return None
        if buffer:
            self._buffers[(model, stamp)] = buffer
        if stamp <= self._newest_header.get(model, (0, 0)):
            return None
        data = self._verify_chunk(key, value, stamp[1])
        if isinstance(data, Rejected):
            return data
        buffer = self._buffers.setdefault((model, stamp), {})
        self._buffered -= len(buffer.pop(index, b""))  # a re-sent chunk replaces the old one
        if self._buffered + len(data) > self._max_buffered:
            self._drop(model, lambda s: s == stamp)
            return Rejected(
                "buffer_full",
                f"chunk {text} would exceed {self._max_buffered} buffered bytes; "
                "dropped this version's chunks",
                stamp[1],
            )
        buffer[index] = data
        self._buffered += len(data)
        return None

    def _verify_chunk(self, key: bytes, value: bytes, version: int) -> bytes | Rejected:
        """The chunk's model bytes, if a known key signed them."""
        head = len(CHUNK_MAGIC)
        if not value.startswith(CHUNK_MAGIC) or len(value) < head + 1:
            return Rejected("malformed", "chunk is not a signed ltrr chunk", version)
        kid_len = value[head]
        kid_end = head + 1 + kid_len
        if len(value) < kid_end + 32:
            return Rejected("malformed", "chunk is shorter than its signature", version)
        key_id = value[head + 1 : kid_end].decode("utf-8", "replace")
        secret = self._keys.get(key_id)
        if secret is None:
            return Rejected("unknown_key", f"chunk key_id {key_id[:64]!r} is unknown", version)
        mac, data = value[kid_end : kid_end + 32], value[kid_end + 32 :]
        expected = hmac.new(secret, key + b"\n" + data, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            return Rejected("bad_signature", "chunk HMAC does not match", version)
        return data

    def _header(self, model: str, value: bytes) -> Loaded | Rejected:
        """Verify a header in order: contract, signature, bounds, freshness, then the payload."""
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
        stamp = stamp_of(header)
        newest = max(stamp, self._newest_header.get(model, (0, 0)))
        self._newest_header[model] = newest
        result = self._check_bounds(header) or self._accept(header, stamp)
        self._drop(model, lambda s: s <= newest)
        return result

    def _check_bounds(self, header: dict[str, Any]) -> Rejected | None:
        """Refuse sizes beyond the configured maximum and chunk layouts that do not add up,
        before anything is allocated or looped over."""
        version, size = header["version"], header["size_bytes"]
        if size > self._max_model:
            detail = f"model of {size} bytes exceeds max_model_bytes {self._max_model}"
            return Rejected("too_large", detail, version)
        chunks = header.get("chunks")
        if chunks is not None:
            expected = -(-size // chunks["chunk_bytes"])
            if chunks["count"] != expected:
                detail = (
                    f"chunks.count {chunks['count']} does not match size_bytes {size} in "
                    f"chunks of {chunks['chunk_bytes']} (expected {expected})"
                )
                return Rejected("malformed", detail, version)
        return None

    def _accept(self, header: dict[str, Any], stamp: Stamp) -> Loaded | Rejected:
        """Load an authentic header if it is newer than the loaded one and its payload checks.

        Freshness comes before the payload: an old header whose chunks compaction removed is
        stale, not incomplete.
        """
        model, version = header["model"], header["version"]
        loaded = self._loaded.get(model, (0, 0))
        if stamp <= loaded:
            detail = f"version {_show(stamp)} <= loaded {_show(loaded)}"
            return Rejected("stale_version", detail, version)
        payload = self._payload(header, stamp)
        if isinstance(payload, Rejected):
            return payload
        if self._auto_commit:
            self.commit(model, stamp)
        header.pop("payload_b64", None)
        return Loaded(header, payload)

    def _payload(self, header: dict[str, Any], stamp: Stamp) -> bytes | Rejected:
        """The model bytes (inline or reassembled), checked against size and SHA-256."""
        version: int = header["version"]
        if "payload_b64" in header:
            try:
                data = base64.b64decode(header["payload_b64"], validate=True)
            except binascii.Error as exc:
                return Rejected("malformed", f"payload_b64 is not base64: {exc}", version)
        else:
            parts = self._buffers.get((header["model"], stamp), {})
            count = header["chunks"]["count"]
            present = sum(1 for i in parts if i < count)
            if present < count:  # O(chunks held), never O(count): count comes from the header
                first = next(i for i in range(count) if i not in parts)
                detail = f"{count - present} of {count} chunks missing"
                return Rejected("incomplete", f"{detail}, first {first}", version)
            data = b"".join(parts[i] for i in range(count))
        if len(data) != header["size_bytes"]:
            detail = f"{len(data)} bytes, header says {header['size_bytes']}"
            return Rejected("checksum_mismatch", detail, version)
        if hashlib.sha256(data).hexdigest() != header["sha256"]:
            return Rejected("checksum_mismatch", "SHA-256 of the model bytes differs", version)
        return data

    def _drop(self, model: str, doomed: Callable[[Stamp], bool]) -> None:
        """Forget the chunk buffers of ``model`` whose stamp satisfies ``doomed``."""
        for buf_key in [k for k in self._buffers if k[0] == model and doomed(k[1])]:
            self._buffered -= sum(map(len, self._buffers.pop(buf_key).values()))


def _show(stamp: Stamp) -> str:
    return f"{stamp[0]}-{stamp[1]}" if stamp[0] else str(stamp[1])


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
