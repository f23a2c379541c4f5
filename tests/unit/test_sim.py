"""The simulator's world, click model, scoreboard, BEIR loader and report (no broker)."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from ltrr.agents.reward import RewardConfig, compute_reward
from ltrr.retrieval.strategies.tokens import STOPWORDS, terms
from ltrr.schemas.contracts import Contract
from ltrr.schemas.records import UserAction
from ltrr.schemas.validation import Rejection, decode
from ltrr.sim.beir import BeirError, BeirWorld
from ltrr.sim.clicks import ClickModel
from ltrr.sim.local import LocalStack
from ltrr.sim.report import write_report
from ltrr.sim.scoreboard import Scoreboard, Step, recall_at_budget
from ltrr.sim.world import DAY_MS, KINDS, MusicWorld, WorldConfig, misspellings

NOW = 1_750_000_000_000
BEIR = Path(__file__).parents[1] / "data" / "beir-mini"


def world(seed: int = 3, **overrides: object) -> MusicWorld:
    return MusicWorld(WorldConfig(entities=400, seed=seed, **overrides), now_ms=NOW)  # type: ignore[arg-type]


def test_world_is_reproducible_and_seed_dependent() -> None:
    a, b, c = world(3), world(3), world(4)
    assert a.catalog() == b.catalog()
    assert [a.query(NOW) for _ in range(50)] == [b.query(NOW) for _ in range(50)]
    assert a.catalog() != c.catalog()
    assert a.release(NOW) == b.release(NOW)


def test_catalog_entities_are_valid_contract_records() -> None:
    entities = world().catalog()
    assert len(entities) >= 400
    assert {e["type"] for e in entities} >= {"track", "artist", "album", "playlist", "podcast"}
    for entity in entities:
        assert not isinstance(decode(Contract.CATALOG_ENTITY, orjson.dumps(entity)), Rejection)
    popularity = sorted((e["popularity"] for e in entities), reverse=True)
    assert popularity[0] == 1.0 and popularity[9] <= 0.11  # power law: the head is steep


def test_every_kind_has_relevant_entities_in_the_catalog() -> None:
    w = world()
    ids = {e["id"] for e in w.catalog()}
    seen = set()
    for _ in range(400):
        q = w.query(NOW)
        seen.add(q.kind)
        assert q.relevant and set(q.relevant) <= ids, q
        assert all(0 < g <= 1 for g in q.relevant.values())
    assert seen == set(KINDS)


def _content(text: str) -> set[str]:
    return {t for t in terms(text) if t not in STOPWORDS}


def test_query_kinds_are_built_as_documented() -> None:
    w = world()
    entities = {e["id"]: e for e in w.catalog()}
    by_kind: dict[str, list] = {k: [] for k in KINDS}
    for _ in range(600):
        q = w.query(NOW)
        by_kind[q.kind].append(q)
    for q in by_kind["describe"]:  # no content word shared with any relevant entity
        for entity_id in q.relevant:
            e = entities[entity_id]
            text = " ".join([e["title"], e.get("artist") or "", *e["genres"], e["text"] or ""])
            assert not _content(q.text) & _content(text), (q.text, text)
    for q in by_kind["misspell"]:
        (entity_id,) = q.relevant
        assert q.text != entities[entity_id]["title"].lower()
    assert len({q.text for q in by_kind["misspell"]}) < len(by_kind["misspell"])  # repeats
    for q in by_kind["fresh"]:
        assert all(entities[e]["added_at_ms"] >= NOW - 7 * DAY_MS for e in q.relevant)
    for q in by_kind["exact"]:
        (entity_id,) = q.relevant
        assert q.text.startswith(entities[entity_id]["title"].lower())


def test_misspellings_change_the_text_deterministically() -> None:
    one = misspellings("Velora Nights", random.Random(1))
    assert one == misspellings("Velora Nights", random.Random(1))
    assert one and all(v != "velora nights" for v in one)


def test_mix_must_name_known_kinds() -> None:
    with pytest.raises(ValueError, match="query mix"):
        world(mix={"telepathy": 1.0})
    only = world(mix={"exact": 1.0})
    assert {only.query(NOW).kind for _ in range(20)} == {"exact"}


@pytest.mark.parametrize("aggregation", ["max", "sum", "earliest"])
def test_expected_reward_matches_sampled_users(aggregation: str) -> None:
    clicks, config = ClickModel(), RewardConfig(aggregation=aggregation)  # type: ignore[arg-type]
    ranked = ["a", "b", "c", "d", "e", "f"]
    relevant = {"c": 1.0, "e": 0.5}
    rng = random.Random(11)
    draws = 40_000
    mean = 0.0
    for _ in range(draws):
        actions = [
            UserAction(str(j), "i", e, t, j, v)
            for j, (e, t, v) in enumerate(clicks.sample(ranked, relevant, rng))
        ]
        mean += compute_reward(actions, config).reward / draws
    assert clicks.expected_reward(ranked, relevant, config) == pytest.approx(mean, abs=0.01)


def test_position_bias_rewards_relevant_results_ranked_higher() -> None:
    clicks, config = ClickModel(), RewardConfig()
    first = clicks.expected_reward(["x", "a", "b"], {"x": 1.0}, config)
    third = clicks.expected_reward(["a", "b", "x"], {"x": 1.0}, config)
    nothing = clicks.expected_reward(["a", "b", "c"], {"x": 1.0}, config)
    assert first > third > nothing > 0  # noise clicks are worth a little
    assert first == pytest.approx(0.9 * (0.8 * 1.0 + 0.2 * 0.5) + 0.0, abs=0.05)


def _step(kind: str, plans: list[float], learned: float, plan: str = "a") -> Step:
    return Step(kind, plan, 1, learned, learned, 1.0, plans, [1.0] * len(plans))


def test_scoreboard_oracle_regret_and_verdict() -> None:
    board = Scoreboard(["a", "b", "a:1+b:1"], {"a": "a", "b": "b"}, "a:1+b:1", configured=2)
    for _ in range(10):
        board.add(_step("x", [0.8, 0.2, 0.5], 0.7))
        board.add(_step("y", [0.1, 0.6, 0.4], 0.6, plan="b"))
    summary = board.summary()
    assert board.oracle_plans() == {"x": "a", "y": "b"}
    assert summary["mean_reward"]["oracle"] == pytest.approx(0.7)
    assert summary["mean_reward"]["uniform"] == pytest.approx((0.5 + 0.35) / 2)
    assert summary["mean_reward"]["union"] == pytest.approx(0.45)
    assert summary["regret_vs"]["oracle"] == pytest.approx(20 * 0.7 - 13.0)
    assert summary["beats_every_static_baseline"] is True
    assert summary["best_static_baseline"] == "union"
    assert summary["learned_plan_mix_by_kind_second_half"]["y"] == {"b": 1.0}
    board.add(_step("x", [0.8, 0.2, 5.0], 0.0))  # union now far ahead overall
    assert board.summary()["beats_every_static_baseline"] is False


def test_per_query_oracle_and_gap_closed_on_a_world_known_by_hand() -> None:
    # One query kind, two plans: plan a serves query 1 (0.8 vs 0.2), plan b query 2 (0.6 vs
    # 0.1). The best fixed plan (the per-kind oracle) is a, 0.45 per query; the best plan per
    # query gets 0.7; the union gets 0.5 on both. Learned 0.6 on each: half the gap closed.
    board = Scoreboard(["a", "b", "a:1+b:1"], {"a": "a", "b": "b"}, "a:1+b:1", configured=2)
    for _ in range(8):
        board.add(_step("k", [0.8, 0.2, 0.5], 0.6))
        board.add(_step("k", [0.1, 0.6, 0.5], 0.6))
    summary = board.summary()
    mean = summary["mean_reward"]
    assert mean["oracle"] == pytest.approx(0.45)
    assert mean["oracle_per_query"] == pytest.approx(0.7)
    assert summary["best_static_baseline"] == "union"
    assert summary["gap_closed"] == pytest.approx(0.5)
    assert summary["last_quarter_gap_closed"] == pytest.approx(0.5)
    assert summary["gap_headroom"] == pytest.approx(0.7 - 0.5)  # the ratio's denominator
    assert summary["last_quarter_gap_headroom"] == pytest.approx(0.2)
    assert summary["beats_every_static_baseline"] is True
    # Only the last quarter improves: the whole run closes less of the gap than it.
    for learned in ((0.6, 0.6),) * 4 + ((0.8, 0.55),) * 4:  # 32 queries: the last 8 improve
        board.add(_step("k", [0.8, 0.2, 0.5], learned[0]))
        board.add(_step("k", [0.1, 0.6, 0.5], learned[1]))
    summary = board.summary()
    assert summary["last_quarter_gap_closed"] == pytest.approx((0.675 - 0.5) / 0.2)
    assert summary["gap_closed"] == pytest.approx((0.61875 - 0.5) / 0.2, abs=1e-4)
    # Recall of the per-query oracle is that of the plan it picked on each query.
    assert board.recall_series()["oracle_per_query"] == [1.0] * len(board)


def test_gap_closed_is_negative_when_learning_loses_and_none_without_a_gap() -> None:
    board = Scoreboard(["a", "b", "a:1+b:1"], {"a": "a", "b": "b"}, "a:1+b:1", configured=2)
    board.add(_step("k", [0.8, 0.2, 0.5], 0.2))
    board.add(_step("k", [0.1, 0.6, 0.5], 0.1))
    summary = board.summary()
    assert summary["best_static_baseline"] == "union"
    assert summary["gap_closed"] == pytest.approx((0.15 - 0.5) / (0.7 - 0.5))
    flat = Scoreboard(["a", "b"], {"a": "a", "b": "b"}, None, configured=2)
    flat.add(_step("k", [0.5, 0.5], 0.5))
    assert flat.summary()["gap_closed"] is None  # the best single plan is the oracle
    assert flat.summary()["gap_headroom"] == 0.0


def test_recall_at_budget_counts_the_budgeted_candidates() -> None:
    strategies = {"lexical": ["a", "b", "c"], "semantic": ["d", "e"]}
    assert recall_at_budget({"lexical": 2}, strategies, {"c": 1.0, "d": 1.0}) == 0.0
    assert recall_at_budget({"lexical": 3, "semantic": 1}, strategies, {"c": 1, "d": 1}) == 1.0


def test_beir_world_loads_the_shipped_collection() -> None:
    w = BeirWorld(BEIR, seed=1)
    catalog = w.catalog()
    assert len(catalog) == 86 and {e["type"] for e in catalog} == {"document"}
    for entity in catalog:
        assert not isinstance(decode(Contract.CATALOG_ENTITY, orjson.dumps(entity)), Rejection)
    queries = [w.query(NOW) for _ in range(100)]
    assert {q.kind for q in queries} == {"short", "long"}
    assert max(g for q in queries for g in q.relevant.values()) == 1.0
    assert any(g == 0.5 for q in queries for g in q.relevant.values())  # graded 2 and 1
    assert w.release(NOW) is None


def test_beir_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(BeirError, match=r"corpus\.jsonl is missing"):
        BeirWorld(tmp_path)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "hello"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "hi"}\nnot json\n')
    with pytest.raises(BeirError, match=r"queries.jsonl:2: not JSON"):
        BeirWorld(tmp_path)
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "hi"}\n')
    with pytest.raises(BeirError, match="--beir-split"):
        BeirWorld(tmp_path)
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td9\t1\n")
    with pytest.raises(BeirError, match="no query"):
        BeirWorld(tmp_path)


def test_explain_ranks_every_plan_from_the_same_retrieval() -> None:
    w = world()
    stack = LocalStack(w.catalog(), strategies="lexical,memory,popular,fresh", now_ms=NOW)
    union = stack.extra_plans(["lexical:25+memory:25+popular:25+fresh:25"])
    for i in range(30):
        q = w.query(NOW)
        result = stack.search(q.text, q.context, 10, seed=i, now_ms=NOW, explain_plans=union)
        explain = result.explain
        assert explain is not None
        shown = [r.entity_id for r in result.results]
        assert explain["plans"][result.plan.id] == shown
        assert explain["plan_ids"] == [p.id for p in stack.plans]
        assert len(explain["pmf"]) == len(stack.plans)
        assert union[0].id in explain["plans"] and union[0].id not in explain["plan_ids"]
        assert explain["budgets"][result.plan.id] == dict(result.plan.budgets)


def test_report_writes_markdown_plots_and_summary(tmp_path: Path) -> None:
    board = Scoreboard(["a", "b", "u"], {"a": "a", "b": "b"}, "u", configured=2)
    rng = random.Random(2)
    for i in range(200):
        kind = "x" if i % 2 else "y"
        board.add(_step(kind, [rng.random(), rng.random(), 0.4], rng.random(), plan="a"))
    summary = write_report(board, tmp_path, title="test run", facts={"world": "unit"})
    for name in ("rewards.png", "recall.png", "plans.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "report.md").read_text()
    assert "# test run" in text and "| oracle |" in text and "world: unit" in text
    assert "| oracle_per_query |" in text and "Gap closed" in text
    assert orjson.loads((tmp_path / "summary.json").read_bytes()) == summary
    assert summary["queries"] == 200


def test_in_process_loop_learns_every_search_and_swaps_models() -> None:
    from ltrr.sim.inprocess import LocalBackend
    from ltrr.sim.runner import SimConfig, Simulation

    w = world()
    strategies = "lexical,memory,popular,fresh"
    backend = LocalBackend(w.catalog(), strategies=strategies, snapshot_every=100)
    names = strategies.split(",")
    sim = Simulation(
        w, backend, strategies=names, total_budget=100, config=SimConfig(queries=250, seed=3)
    )
    board = sim.run()
    assert board is not None and len(board) == 250
    assert backend.learned == 250 and backend.learners.examples("default") == 250
    assert board.steps[0].model_version == 0 and board.steps[-1].model_version == 2
    assert board.union_id == "lexical+memory+popular+fresh" and board.configured == 10


def test_union_among_the_configured_plans_is_the_union_baseline() -> None:
    from ltrr.sim.inprocess import LocalBackend
    from ltrr.sim.runner import SimConfig, Simulation

    w = world()
    plans = "lexical:100;memory:100;lexical:50+memory:50"
    backend = LocalBackend(w.catalog(), strategies="lexical,memory", plans=plans)
    sim = Simulation(
        w, backend, strategies=["lexical", "memory"], total_budget=100,
        config=SimConfig(queries=5, seed=1),
    )  # fmt: skip
    board = sim.run()
    assert board is not None and board.configured == 3
    assert board.union_id == "lexical+memory" and board.plan_ids[2] == "lexical+memory"
    assert set(board.series()) >= {"union", "lexical", "memory", "oracle_per_query"}


def test_simulate_serves_singles_pairs_and_the_union_with_a_warm_start() -> None:
    from ltrr.retrieval.plans import parse_plans
    from ltrr.simulate import SIM_VW_ARGS, _plan_ids, simulation_plans

    names = ["lexical", "semantic", "memory", "popular", "fresh"]
    plans = parse_plans(simulation_plans(names), names)
    assert len(plans) == 5 + 10 + 1
    assert [p.id for p in plans] == _plan_ids(simulation_plans(names))
    assert dict(plans[0].budgets) == {"lexical": 100}
    assert dict(plans[5].budgets) == {"lexical": 50, "semantic": 50}
    assert plans[-1].id == "+".join(names) and set(plans[-1].budgets.values()) == {20}
    assert "--squarecb" in SIM_VW_ARGS and "--epsilon" not in SIM_VW_ARGS
    assert len(parse_plans(simulation_plans(["lexical", "memory"]), names)) == 3  # no dup
