from __future__ import annotations

import hashlib

from ltrr.schemas.codec import CODEC_NAME, dumps, loads, register
from ltrr.schemas.contracts import Contract
from ltrr.schemas.dead_letter import dead_letter, original_bytes
from ltrr.schemas.validation import Rejection, check


def _letter(raw: bytes, **kw: object) -> dict:
    return dead_letter(
        Rejection("wrong_type", "query must be string", "query"),
        raw,
        topic="ltrr.impressions",
        partition=2,
        offset=17,
        timestamp_ms=5,
        key=b"imp-1",
        now_ms=9,
        **kw,
    )  # type: ignore[arg-type]


def test_envelope_keeps_bytes_and_reason() -> None:
    raw = b'{"query": 5}\xff'
    letter = _letter(raw)
    check(Contract.DEAD_LETTER, letter)
    assert original_bytes(letter) == raw
    assert (letter["reason"], letter["field"]) == ("wrong_type", "query")
    assert letter["source"]["offset"] == 17
    assert letter["original_sha256"] == hashlib.sha256(raw).hexdigest()
    assert letter["original_truncated"] is False


def test_too_large_original_is_truncated_but_identified() -> None:
    raw = bytes(range(256)) * 40
    letter = _letter(raw, max_original_bytes=1000)
    check(Contract.DEAD_LETTER, letter)
    assert original_bytes(letter) == raw[:1000]
    assert letter["original_size"] == len(raw)
    assert letter["original_sha256"] == hashlib.sha256(raw).hexdigest()
    assert letter["original_truncated"] is True


def test_faust_codec_round_trip() -> None:
    from faust.serializers import codecs

    register()
    obj = {"a": [1, 2.5, "x"], "b": None}
    assert codecs.loads(CODEC_NAME, codecs.dumps(CODEC_NAME, obj)) == obj
    assert loads(dumps(obj)) == obj
