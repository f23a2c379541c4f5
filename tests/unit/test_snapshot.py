"""ModelSnapshot v1 wire format: signing, chunking, tombstones and the consumer's assembler."""

from __future__ import annotations

import base64
import os
from typing import Any

import orjson
import pytest
import vowpal_wabbit_next as vw
from hypothesis import given
from hypothesis import strategies as st

from ltrr.schemas.contracts import Contract
from ltrr.schemas.snapshot import (
    SAFETY_MARGIN_BYTES,
    Loaded,
    Rejected,
    SnapshotAssembler,
    encode_snapshot,
    sign_header,
)
from ltrr.schemas.validation import check

VW_ARGS = ["--cb_explore_adf", "--quiet"]
KEY = b"k1-secret"
KEYS = {"k1": KEY}
MIB = 1024 * 1024
Messages = list[tuple[bytes, bytes | None]]


def _encode(model_bytes: bytes, version: int = 1, **kw: Any) -> Messages:
    args: dict[str, Any] = {
        "model": "plans",
        "version": version,
        "vw_args": VW_ARGS,
        "model_bytes": model_bytes,
        "examples_learned": 10 * version,
        "offsets": [{"topic": "ltrr.rewards", "partition": 0, "offset": 42}],
        "created_ms": 1_700_000_000_000,
        "key_id": "k1",
        "key": KEY,
        "max_message_bytes": 8 * MIB,
    }
    return encode_snapshot(**(args | kw))


def _feed(assembler: SnapshotAssembler, messages: Messages) -> list[Loaded | Rejected]:
    results = [assembler.feed(k, v) for k, v in messages]
    return [r for r in results if r is not None]


def _header(messages: Messages) -> dict[str, Any]:
    value = next(v for k, v in messages if k == b"plans")
    assert value is not None
    header: dict[str, Any] = orjson.loads(value)
    return header


def _resign(messages: Messages, **changes: Any) -> Messages:
    """Replace the header with a modified one, re-signed with the real key."""
    header = _header(messages) | changes
    header["signature"]["value"] = sign_header(header, KEY)
    return [(k, orjson.dumps(header) if k == b"plans" else v) for k, v in messages]


def _trained_model(args: list[str], examples: int = 50, features: int = 1) -> bytes:
    """A cb_explore_adf model; every example brings ``features`` new shared features."""
    ws = vw.Workspace(args)
    parser = vw.TextFormatParser(ws)
    for i in range(examples):
        shared = " ".join(f"u{i}_{j}" for j in range(features))
        label = f"0:{-1.0 if i % 2 else 0.0}:0.5"
        lines = [f"shared | q=love {shared}", f"{label} | plan=lexical", "| plan=embedding"]
        ws.learn_one([parser.parse_line(line) for line in lines])
    return ws.serialize()


def _predict(args: list[str], model_bytes: bytes) -> object:
    ws = vw.Workspace(args, model_data=model_bytes)
    parser = vw.TextFormatParser(ws)
    lines = ["shared | q=love", "| plan=lexical", "| plan=embedding"]
    return ws.predict_one([parser.parse_line(line) for line in lines])


def test_inline_round_trip_of_a_real_vw_model() -> None:
    model_bytes = _trained_model(VW_ARGS)
    messages = _encode(model_bytes)
    assert len(messages) == 1 and messages[0][0] == b"plans"
    header = _header(messages)
    check(Contract.MODEL_SNAPSHOT, header)
    assert "payload_b64" in header and "chunks" not in header
    [result] = _feed(SnapshotAssembler(KEYS), messages)
    assert isinstance(result, Loaded)
    assert result.model_bytes == model_bytes
    assert "payload_b64" not in result.header and result.header["version"] == 1
    assert _predict(VW_ARGS, result.model_bytes) == _predict(VW_ARGS, model_bytes)


def test_chunked_round_trip_of_a_large_real_vw_model() -> None:
    args = [*VW_ARGS, "-b", "22"]
    model_bytes = _trained_model(args, examples=8000, features=20)
    assert len(model_bytes) > 2 * MIB
    messages = _encode(model_bytes, vw_args=args, max_message_bytes=MIB)
    *chunks, (header_key, header_value) = messages
    assert header_key == b"plans" and header_value is not None
    assert [k for k, _ in chunks] == [f"plans/1/{i}".encode() for i in range(len(chunks))]
    assert len(chunks) == 3
    for key, value in messages:
        assert value is not None and len(key) + len(value) <= MIB
    header = _header(messages)
    check(Contract.MODEL_SNAPSHOT, header)
    assert header["chunks"] == {"count": 3, "chunk_bytes": MIB - SAFETY_MARGIN_BYTES}
    assert "payload_b64" not in header
    assembler = SnapshotAssembler(KEYS)
    [result] = _feed(assembler, messages)
    assert isinstance(result, Loaded) and result.model_bytes == model_bytes
    assert assembler.buffered_bytes == 0
    assert _predict(args, result.model_bytes) == _predict(args, model_bytes)


def test_tampered_chunk_is_refused_and_never_buffered() -> None:
    messages = _encode(os.urandom(3 * MIB), max_message_bytes=MIB)
    key, value = messages[1]
    assert value is not None
    messages[1] = (key, value[:100] + bytes([value[100] ^ 1]) + value[101:])
    assembler = SnapshotAssembler(KEYS)
    chunk, header = _feed(assembler, messages)
    assert isinstance(chunk, Rejected) and chunk.reason == "bad_signature"
    assert isinstance(header, Rejected) and header.reason == "incomplete"
    assert header.version == 1 and assembler.buffered_bytes == 0


def test_chunk_sha256_still_guards_a_key_holders_mixup() -> None:
    """Chunks signed right but from another model's bytes: the header's SHA-256 refuses."""
    messages = _encode(os.urandom(3 * MIB), max_message_bytes=MIB)
    other = _encode(os.urandom(3 * MIB), max_message_bytes=MIB)
    messages[1] = other[1]
    [result] = _feed(SnapshotAssembler(KEYS), messages)
    assert isinstance(result, Rejected) and result.reason == "checksum_mismatch"


def test_tampered_inline_payload_is_checksum_mismatch() -> None:
    messages = _encode(b"model-bytes")
    header = _header(messages)
    header["payload_b64"] = base64.b64encode(b"model-bytez").decode()
    [result] = _feed(SnapshotAssembler(KEYS), [(b"plans", orjson.dumps(header))])
    assert isinstance(result, Rejected) and result.reason == "checksum_mismatch"


def test_tampered_header_field_is_bad_signature() -> None:
    header = _header(_encode(b"model-bytes"))
    header["examples_learned"] += 1
    [result] = _feed(SnapshotAssembler(KEYS), [(b"plans", orjson.dumps(header))])
    assert isinstance(result, Rejected) and result.reason == "bad_signature"


def test_tampered_chunk_metadata_is_bad_signature() -> None:
    messages = _encode(os.urandom(2 * MIB), max_message_bytes=MIB)
    header = _header(messages)
    header["chunks"]["count"] = 5
    messages[-1] = (b"plans", orjson.dumps(header))
    [result] = _feed(SnapshotAssembler(KEYS), messages)
    assert isinstance(result, Rejected) and result.reason == "bad_signature"


def test_unknown_key_id() -> None:
    messages = _encode(b"model-bytes", key_id="k9", key=b"other")
    [result] = _feed(SnapshotAssembler(KEYS), messages)
    assert isinstance(result, Rejected) and result.reason == "unknown_key"


def test_missing_chunk_is_incomplete() -> None:
    messages = _encode(os.urandom(3 * MIB), max_message_bytes=MIB)
    del messages[1]
    assembler = SnapshotAssembler(KEYS)
    [result] = _feed(assembler, messages)
    assert isinstance(result, Rejected) and result.reason == "incomplete"
    assert assembler.buffered_bytes == 0


@pytest.mark.parametrize("old", [1, 2])
def test_older_or_equal_version_is_stale(old: int) -> None:
    assembler = SnapshotAssembler(KEYS)
    [first] = _feed(assembler, _encode(b"v2", version=2))
    assert isinstance(first, Loaded)
    [result] = _feed(assembler, _encode(b"old", version=old))
    assert isinstance(result, Rejected) and result.reason == "stale_version"
    assert result.version == old and assembler.loaded_version("plans") == 2


def test_key_rotation_accepts_both_keys() -> None:
    assembler = SnapshotAssembler({"k1": KEY, "k2": b"k2-secret"})
    first = _feed(assembler, _encode(b"v1", version=1))
    second = _feed(assembler, _encode(b"v2", version=2, key_id="k2", key=b"k2-secret"))
    assert [type(r) for r in first + second] == [Loaded, Loaded]
    wrong = _feed(assembler, _encode(b"v3", version=3, key_id="k2", key=KEY))
    assert isinstance(wrong[0], Rejected) and wrong[0].reason == "bad_signature"


def test_tombstones_for_previous_chunks_follow_the_header() -> None:
    v1 = _encode(os.urandom(2 * MIB), version=1, max_message_bytes=MIB)
    v2 = _encode(
        os.urandom(2 * MIB), version=2, max_message_bytes=MIB, previous_version=1, previous_chunks=3
    )
    header_at = [k for k, _ in v2].index(b"plans")
    assert v2[header_at + 1 :] == [(f"plans/1/{i}".encode(), None) for i in range(3)]
    assert all(v is not None for _, v in v2[: header_at + 1])
    assembler = SnapshotAssembler(KEYS)
    results = _feed(assembler, v1 + v2)
    assert [type(r) for r in results] == [Loaded, Loaded]
    assert [r.header["version"] for r in results if isinstance(r, Loaded)] == [1, 2]
    assert assembler.buffered_bytes == 0


def test_inline_snapshot_also_tombstones_previous_chunks() -> None:
    messages = _encode(b"small", version=4, previous_version=3, previous_chunks=2)
    assert [v is None for _, v in messages] == [False, True, True]


def test_buffer_cap_rejects_and_frees() -> None:
    messages = _encode(os.urandom(2 * MIB), max_message_bytes=MIB)
    assembler = SnapshotAssembler(KEYS, max_buffered_bytes=MIB)
    results = _feed(assembler, messages)
    assert [r.reason for r in results if isinstance(r, Rejected)] == ["buffer_full", "incomplete"]
    assert assembler.buffered_bytes == 0


def test_other_models_are_ignored_when_filtered() -> None:
    messages = _encode(b"x", model="other")
    assert _feed(SnapshotAssembler(KEYS, model="plans"), messages) == []
    assert isinstance(_feed(SnapshotAssembler(KEYS), messages)[0], Loaded)


def test_key_must_name_the_model() -> None:
    _, value = _encode(b"x")[0]
    [result] = _feed(SnapshotAssembler(KEYS), [(b"plans2", value)])
    assert isinstance(result, Rejected) and result.reason == "malformed"


@pytest.mark.parametrize(
    "value",
    [b"\xff\xfe not json", b"[1, 2]", b"{}", b'{"schema_version": 1}', b"null", b'"x"'],
)
def test_malformed_header_values(value: bytes) -> None:
    [result] = _feed(SnapshotAssembler(KEYS), [(b"plans", value)])
    assert isinstance(result, Rejected) and result.reason == "malformed"


def test_bad_inline_base64_is_malformed() -> None:
    messages = _resign(_encode(b"model"), payload_b64="!!!not base64!!!")
    [result] = _feed(SnapshotAssembler(KEYS), messages)
    assert isinstance(result, Rejected) and result.reason == "malformed"


@given(key=st.one_of(st.none(), st.binary(max_size=40)), value=st.one_of(st.none(), st.binary()))
def test_random_messages_never_raise(key: bytes | None, value: bytes | None) -> None:
    result = SnapshotAssembler(KEYS).feed(key, value)
    assert result is None or isinstance(result, Rejected)


def test_encoder_refuses_impossible_arguments() -> None:
    with pytest.raises(ValueError, match="max_message_bytes"):
        _encode(b"x", max_message_bytes=SAFETY_MARGIN_BYTES)
    with pytest.raises(ValueError, match="not older"):
        _encode(b"x", version=2, previous_version=2, previous_chunks=1)


# -- hostile input on the snapshots topic (issue 15) ----------------------------------------


def test_a_chunk_key_with_thousands_of_digits_is_refused_not_raised() -> None:
    """``int()`` of 5,000 digits raises in Python; the key is refused before that."""
    assembler = SnapshotAssembler(KEYS)
    [result] = [assembler.feed(b"default/" + b"9" * 5000 + b"/0", b"x" * 5000)]
    assert isinstance(result, Rejected) and result.reason == "malformed"
    result = assembler.feed(b"default/" + b"9" * 40 + b"/0", b"x")
    assert isinstance(result, Rejected) and result.reason == "malformed"


def test_unsigned_chunks_at_future_versions_are_never_buffered() -> None:
    """256 x 1 MiB unsigned chunks: nothing is held, and a real snapshot still loads."""
    assembler = SnapshotAssembler(KEYS, max_buffered_bytes=8 * MIB)
    junk = os.urandom(MIB)
    refused = [assembler.feed(f"plans/{v}/0".encode(), junk) for v in range(2, 258)]
    assert all(isinstance(r, Rejected) and r.reason == "malformed" for r in refused)
    forged = _encode(junk, version=300, max_message_bytes=MIB, key=b"not-the-key")
    reasons = [r.reason for r in _feed(assembler, forged[:-1]) if isinstance(r, Rejected)]
    assert reasons == ["bad_signature"] * (len(forged) - 1) and reasons
    assert assembler.buffered_bytes == 0
    model = os.urandom(3 * MIB)
    [result] = _feed(assembler, _encode(model, version=2, max_message_bytes=MIB))
    assert isinstance(result, Loaded) and result.model_bytes == model


def test_chunk_count_must_match_the_size_before_anything_is_allocated() -> None:
    messages = _resign(
        _encode(os.urandom(2 * MIB), max_message_bytes=MIB),
        chunks={"count": 10**8, "chunk_bytes": MIB - SAFETY_MARGIN_BYTES},
    )
    [result] = _feed(SnapshotAssembler(KEYS), messages)
    assert isinstance(result, Rejected) and result.reason == "malformed"
    assert "chunks.count" in result.detail


def test_a_model_beyond_max_model_bytes_is_too_large() -> None:
    messages = _encode(os.urandom(3 * MIB), max_message_bytes=MIB)
    assembler = SnapshotAssembler(KEYS, max_model_bytes=2 * MIB)
    results = _feed(assembler, messages)
    assert [r.reason for r in results if isinstance(r, Rejected)] == ["too_large"]
    assert assembler.buffered_bytes == 0


def test_a_version_is_consumed_only_when_committed() -> None:
    """A loader that could not load v100 does not commit it: v50 still loads after it."""
    assembler = SnapshotAssembler(KEYS, commit=False)
    [v100] = _feed(assembler, _encode(b"unloadable", version=100))
    assert isinstance(v100, Loaded) and assembler.loaded_version("plans") is None
    [v50] = _feed(assembler, _encode(b"good", version=50))
    assert isinstance(v50, Loaded)
    assembler.commit("plans", (0, 50))
    [stale] = _feed(assembler, _encode(b"older", version=49))
    assert isinstance(stale, Rejected) and stale.reason == "stale_version"


def test_a_new_epoch_supersedes_any_version_of_the_old_one() -> None:
    assembler = SnapshotAssembler(KEYS)
    [top] = _feed(assembler, _encode(b"top", version=2**53 - 1))
    assert isinstance(top, Loaded)
    [stuck] = _feed(assembler, _encode(b"next", version=2))
    assert isinstance(stuck, Rejected) and stuck.reason == "stale_version"
    model = os.urandom(2 * MIB)
    messages = _encode(model, version=1, epoch=1, max_message_bytes=MIB)
    assert messages[0][0] == b"plans/1-1/0"
    [rolled] = _feed(assembler, messages)
    assert isinstance(rolled, Loaded) and rolled.model_bytes == model
    assert assembler.newest("plans") == (1, 1)
    tombstones = _encode(b"v2", version=2, epoch=1, previous_version=1, previous_chunks=3)
    assert [k for k, v in tombstones if v is None] == [
        b"plans/1-1/0",
        b"plans/1-1/1",
        b"plans/1-1/2",
    ]


@given(
    key=st.one_of(
        st.binary(max_size=200),
        st.from_regex(rb"\Aplans/([0-9]{1,30}-)?[0-9]{1,30}/[0-9]{1,12}\Z"),
    ),
    value=st.one_of(st.none(), st.binary(max_size=2000)),
)
def test_random_chunk_keys_and_values_never_raise_or_buffer(
    key: bytes, value: bytes | None
) -> None:
    assembler = SnapshotAssembler(KEYS)
    result = assembler.feed(key, value)
    assert result is None or isinstance(result, Rejected)
    assert assembler.buffered_bytes == 0


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@given(changes=st.dictionaries(st.sampled_from(sorted(_header(_encode(b"m")))), _JSON, max_size=4))
def test_headers_with_any_field_values_never_raise(changes: dict[str, Any]) -> None:
    """Any field of a real header replaced by any JSON value (signed or not): refused or
    loaded, never an exception."""
    header = _header(_encode(b"model")) | changes
    unsigned = orjson.dumps(header)
    if "signature" not in changes:
        header["signature"] = {"alg": "hmac-sha256", "key_id": "k1", "value": ""}
        header["signature"]["value"] = sign_header(header, KEY)
    for value in (unsigned, orjson.dumps(header)):
        result = SnapshotAssembler(KEYS).feed(b"plans", value)
        assert result is None or isinstance(result, Loaded | Rejected)
