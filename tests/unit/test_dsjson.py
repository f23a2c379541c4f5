"""Reward v1 events are valid DSJSON lines that Vowpal Wabbit parses and learns from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
import vowpal_wabbit_next as vw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltrr.schemas.contracts import Contract
from ltrr.schemas.dsjson import iso_timestamp, reward_event
from ltrr.schemas.records import SearchImpression, UserAction
from ltrr.schemas.validation import check, decode
from tests.events import action, impression

VW_ARGS = ["--cb_explore_adf", "-q", "cp", "--quiet", "--random_seed", "1"]


def _workspace() -> vw.Workspace:
    return vw.Workspace(VW_ARGS)


def _reward(imp: dict, reward: float = 1.0, **kw: object) -> dict:
    return reward_event(
        SearchImpression.from_dict(imp), reward, [UserAction.from_dict(action())], **kw
    )  # type: ignore[arg-type]


def test_reward_satisfies_its_contract() -> None:
    event = _reward(impression())
    check(Contract.REWARD, event)
    decoded = decode(Contract.REWARD, orjson.dumps(event))
    assert decoded == event


def test_reward_carries_the_logged_decision() -> None:
    imp = impression(chosen=3, pmf=[0.1, 0.1, 0.2, 0.5, 0.1])
    event = _reward(imp, 2.0)
    assert event["_label_cost"] == -2.0
    assert event["_label_probability"] == 0.5
    assert (event["_label_Action"], event["_labelIndex"]) == (4, 3)
    assert event["a"] == [4, 1, 2, 3, 5]
    assert event["p"] == [0.5, 0.1, 0.1, 0.2, 0.1]
    assert event["c"]["c"] == imp["context"]["c"]
    assert event["c"]["_multi"] == [p["features"] for p in imp["plans"]]
    assert event["EventId"] == imp["impression_id"]
    assert event["ltrr"]["plan_id"] == imp["plans"][3]["id"]
    assert event["ltrr"]["shown"] == ["track-1", "track-2"]


def test_dsjson_line_parses_and_trains_cb_explore_adf() -> None:
    ws = _workspace()
    parser = vw.DSJsonFormatParser(ws)
    imp = impression(chosen=2)
    examples = parser.parse_json(orjson.dumps(_reward(imp, 1.0)).decode())
    assert len(examples) == 1 + len(imp["plans"])  # shared example + one per plan
    before = ws.predict_one(examples)
    for _ in range(20):
        ws.learn_one(parser.parse_json(orjson.dumps(_reward(imp, 1.0)).decode()))
    after = dict(ws.predict_one(parser.parse_json(orjson.dumps(_reward(imp, 1.0)).decode())))
    assert dict(before)[2] == pytest.approx(1 / 5)
    # Rewarding plan 2 makes the exploring policy put the exploit mass on it.
    assert max(after, key=after.get) == 2
    assert after[2] > 0.9


def test_ltrr_part_is_invisible_to_vw() -> None:
    """The same decisions learned with and without ltrr's own keys give identical weights."""
    with_meta, bare = _workspace(), _workspace()
    p1, p2 = vw.DSJsonFormatParser(with_meta), vw.DSJsonFormatParser(bare)
    for i in range(30):
        event = _reward(impression(f"imp-{i}", chosen=i % 5), float(i % 3))
        stripped = {k: v for k, v in event.items() if k not in ("ltrr", "schema_version")}
        with_meta.learn_one(p1.parse_json(orjson.dumps(event).decode()))
        bare.learn_one(p2.parse_json(orjson.dumps(stripped).decode()))
    assert np.array_equal(with_meta.weights(), bare.weights())
    assert with_meta.weights().any()


def _cli_model(tmp_path: Path, name: str, events: list[dict]) -> bytes:
    data = tmp_path / f"{name}.json"
    data.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    model = tmp_path / f"{name}.vw"
    vw.run_cli_driver(["--dsjson", *VW_ARGS, "-d", str(data), "-f", str(model)])
    return model.read_bytes()


def test_late_reward_is_skipped_by_vw_dsjson(tmp_path: Path) -> None:
    """``vw --dsjson`` over the rewards topic learns nothing from a late (_skipLearn) reward."""
    on_time = _reward(impression("imp-1"), 1.0)
    late = _reward(impression("imp-2", chosen=3), 5.0, late=True)
    assert late["_skipLearn"] is True
    check(Contract.REWARD, late)
    only_on_time = _cli_model(tmp_path, "a", [on_time])
    with_late = _cli_model(tmp_path, "b", [on_time, late])
    with_late_learned = _cli_model(tmp_path, "c", [on_time, {**late, "_skipLearn": False}])
    assert with_late == only_on_time
    assert with_late_learned != only_on_time


def test_iso_timestamp() -> None:
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert iso_timestamp(1_795_000_000_123) == "2026-11-18T11:06:40.123Z"


features = st.dictionaries(
    st.text("abcxyz_é", min_size=1, max_size=6).filter(lambda k: not k.startswith("_")),
    st.integers(-1000, 1000)
    | st.floats(-1e3, 1e3, allow_nan=False)
    | st.text(max_size=6)
    | st.booleans(),
    max_size=4,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    n_plans=st.integers(1, 8),
    data=st.data(),
    reward=st.floats(-1, 5, allow_nan=False),
    ctx=features,
)
def test_generated_rewards_parse_in_vw(
    n_plans: int, data: st.DataObject, reward: float, ctx: dict
) -> None:
    chosen = data.draw(st.integers(0, n_plans - 1))
    weights = data.draw(st.lists(st.integers(1, 100), min_size=n_plans, max_size=n_plans))
    pmf = [w / sum(weights) for w in weights]
    pmf[-1] = 1.0 - sum(pmf[:-1])
    imp = impression(n_plans=n_plans, chosen=chosen, pmf=pmf, context={"c": ctx})
    event = _reward(imp, reward)
    check(Contract.REWARD, event)
    ws = _workspace()
    examples = vw.DSJsonFormatParser(ws).parse_json(orjson.dumps(event).decode())
    assert len(examples) == 1 + n_plans
    ws.learn_one(examples)
    assert len(ws.predict_one(examples)) == n_plans
