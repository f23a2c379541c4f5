"""Every way an event can be wrong gets a reason code and names the field."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltrr.schemas.contracts import Contract
from ltrr.schemas.records import SearchImpression, UserAction
from ltrr.schemas.validation import Rejection, decode
from tests.events import action, impression, without

IMP = Contract.SEARCH_IMPRESSION
ACT = Contract.USER_ACTION


def _decode(contract: Contract, obj: object, **kw: object) -> dict | Rejection:
    return decode(contract, orjson.dumps(obj), **kw)  # type: ignore[arg-type]


def test_valid_impression_and_action_are_accepted() -> None:
    imp = _decode(IMP, impression(), key=b"imp-1", key_field="impression_id")
    act = _decode(ACT, action(), key=b"imp-1", key_field="impression_id")
    assert isinstance(imp, dict) and imp["impression_id"] == "imp-1"
    assert isinstance(act, dict) and act["type"] == "click"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not_json"),
        (b"\xff\xfe\x00", "not_json"),
        (b"", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"text"', "not_object"),
        (b"NaN", "not_json"),
    ],
)
def test_unparseable_bytes(raw: bytes, reason: str) -> None:
    result = decode(IMP, raw)
    assert isinstance(result, Rejection)
    assert result.reason == reason


def test_tombstone_is_rejected() -> None:
    result = decode(ACT, None)
    assert isinstance(result, Rejection) and result.reason == "not_json"


def test_oversized_is_rejected_before_parsing() -> None:
    raw = orjson.dumps(impression(query="x" * 1000))
    result = decode(IMP, raw, max_bytes=len(raw) - 1)
    assert isinstance(result, Rejection)
    assert result.reason == "oversized"
    assert str(len(raw)) in result.detail
    assert isinstance(decode(IMP, raw, max_bytes=len(raw)), dict)


@pytest.mark.parametrize("version", [2, 0, "1", None, True])
def test_wrong_schema_version(version: object) -> None:
    result = _decode(ACT, action(schema_version=version))
    assert isinstance(result, Rejection)
    assert result.reason == "unsupported_schema_version"
    assert result.field == "schema_version"


def test_missing_schema_version() -> None:
    result = _decode(ACT, without(action(), "schema_version"))
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == ("missing_field", "schema_version")


@pytest.mark.parametrize("field", ["impression_id", "query", "plans", "pmf", "model", "chosen"])
def test_missing_field_is_named(field: str) -> None:
    result = _decode(IMP, without(impression(), field))
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == ("missing_field", field)
    assert field in result.detail


def test_missing_nested_field_is_named_with_its_path() -> None:
    event = impression()
    del event["model"]["version"]
    result = _decode(IMP, event)
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == ("missing_field", "model.version")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"query": 5}, "query"),
        ({"timestamp_ms": "yesterday"}, "timestamp_ms"),
        ({"timestamp_ms": 1.5}, "timestamp_ms"),
        ({"chosen": True}, "chosen"),
        ({"pmf": "uniform"}, "pmf"),
        ({"context": {"c": {"qlen": [1, 2]}}}, "context.c.qlen"),
    ],
)
def test_wrong_type_names_the_field(overrides: dict, field: str) -> None:
    result = _decode(IMP, impression(**overrides))
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == ("wrong_type", field)


def test_wrong_type_deep_in_a_plan() -> None:
    event = impression()
    event["plans"][2]["budgets"]["lexical"] = "lots"
    result = _decode(IMP, event)
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == ("wrong_type", "plans[2].budgets.lexical")


def test_unknown_field() -> None:
    result = _decode(ACT, action(color="blue"))
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == ("unknown_field", "color")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"query": ""}, "query"),
        ({"pmf": [0.5, 0.5, 0.5, 0.5, 0.5]}, "pmf"),
        ({"pmf": [0.5, 0.5]}, "pmf"),
        ({"chosen": 9}, "chosen"),
        ({"pmf": [0.25, 0.0, 0.25, 0.25, 0.25]}, "pmf"),
        ({"model": {"name": "bad name!", "version": 0}}, "model.name"),
        # VW's JSON parser reserves names starting with "_" (_text, _label, ...).
        ({"context": {"c": {"_text": "x"}}}, "context.c"),
        ({"context": {"c": {"a b": 1}}}, "context.c"),
    ],
)
def test_invalid_values(overrides: dict, field: str) -> None:
    result = _decode(IMP, impression(**overrides))
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == ("invalid_value", field)


def test_action_type_must_be_snake_case_and_value_non_negative() -> None:
    bad_type = _decode(ACT, action(type="Click!"))
    negative = _decode(ACT, action(type="play", value=-3))
    assert isinstance(bad_type, Rejection) and bad_type.field == "type"
    assert isinstance(negative, Rejection) and negative.field == "value"
    assert isinstance(_decode(ACT, action(type="download")), dict)


@pytest.mark.parametrize("key", [None, b"imp-2"])
def test_key_must_equal_impression_id(key: bytes | None) -> None:
    result = _decode(ACT, action(), key=key, key_field="impression_id")
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == ("bad_key", "impression_id")


def test_records_round_trip() -> None:
    raw = impression()
    imp = SearchImpression.from_dict(raw)
    assert imp.to_dict() == raw
    assert imp.probability == pytest.approx(0.2)
    assert imp.chosen_plan.id == "semantic"
    raw_action = action(value=12.0)
    act = UserAction.from_dict({**raw_action, "value": 12})
    assert act.to_dict() == raw_action


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    for contract in (IMP, ACT):
        result = decode(contract, raw, key=b"k", key_field="impression_id")
        assert isinstance(result, Rejection)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(list(impression())), json_values, max_size=12))
def test_arbitrary_json_objects_are_decided(obj: dict) -> None:
    result = _decode(IMP, obj)
    assert isinstance(result, (Rejection, dict))
    if isinstance(result, Rejection):
        assert result.reason and result.detail
