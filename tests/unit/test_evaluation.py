"""Counterfactual evaluation: estimators recover a known policy value on a synthetic bandit with
honest intervals, the log reader round-trips reward lines, the VW candidates score and learn
exactly as ltrr does, and ``ltrr eval`` prints a usable report."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import random
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import orjson
import pytest
import vowpal_wabbit_next as vw

from ltrr.agents.learning import DEFAULT_VW_ARGS, learn_lines
from ltrr.cli import main
from ltrr.evaluation import (
    EvaluationError,
    FunctionPolicy,
    Greedy,
    LoggedRow,
    Report,
    RewardModel,
    VWModel,
    VWTrainer,
    estimate,
    greedy,
    read_file,
    read_lines,
)
from ltrr.evaluation import estimators as est
from ltrr.schemas.dsjson import reward_event
from ltrr.schemas.records import SearchImpression
from ltrr.state.store import MemoryStore
from tests.events import impression

ROOT = Path(__file__).resolve().parents[2]

# --- a synthetic contextual bandit whose policy values are known exactly ---------------------

#: Mean (Bernoulli) reward of action j in context k, and how often each context occurs.
MU = np.array([[0.1, 0.5, 0.3, 0.7], [0.6, 0.2, 0.4, 0.1], [0.3, 0.3, 0.9, 0.2]])
P_CONTEXT = np.array([0.5, 0.3, 0.2])
#: Logging policy: epsilon-greedy around a poor favourite (weights up to 1 / 0.075 = 13.3).
EPSILON, LOGGER_FAVOURITE = 0.3, (1, 0, 0)
#: Target policy: a fixed stochastic policy per context.
TARGET = np.array([[0.0, 0.0, 0.2, 0.8], [0.9, 0.0, 0.1, 0.0], [0.0, 0.0, 1.0, 0.0]])
TRUE_VALUE = float((P_CONTEXT[:, None] * TARGET * MU).sum())  # 0.664
LOGGING_VALUE = float(
    sum(
        P_CONTEXT[k] * (MU[k].mean() * EPSILON + MU[k, f] * (1 - EPSILON))
        for k, f in enumerate(LOGGER_FAVOURITE)
    )
)
EXAMPLES = [
    orjson.dumps(
        {"c": {"k": f"k{k}"}, "_multi": [{"p": {"a": f"a{j}"}} for j in range(4)]}
    ).decode()
    for k in range(3)
]


def logging_pmf(k: int) -> np.ndarray:
    pmf = np.full(4, EPSILON / 4)
    pmf[LOGGER_FAVOURITE[k]] += 1 - EPSILON
    return pmf


def context_of(row: LoggedRow) -> int:
    return int(row.namespaces()["c"]["k"][1:])


def target(row: LoggedRow) -> np.ndarray:
    return TARGET[context_of(row)]


def simulate(seed: int, n: int) -> list[LoggedRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = int(rng.choice(3, p=P_CONTEXT))
        pmf = logging_pmf(k)
        a = int(rng.choice(4, p=pmf))
        reward = float(rng.random() < MU[k, a])
        rows.append(LoggedRow(f"e{i}", EXAMPLES[k], 4, a, float(pmf[a]), reward, tuple(pmf)))
    return rows


@cache
def seed_reports() -> tuple[Report, ...]:
    """One report per seed (50 seeds, 800 rows each), shared by the coverage tests."""
    return tuple(estimate(simulate(seed, 800), target) for seed in range(50))


def test_the_synthetic_truth() -> None:
    assert pytest.approx(0.664) == TRUE_VALUE
    assert LOGGING_VALUE < TRUE_VALUE


@cache
def large_report() -> Report:
    return estimate(simulate(1000, 5000), target)


@pytest.mark.parametrize("name", ["ips", "snips", "dr"])
def test_estimates_are_close_to_the_true_value(name: str) -> None:
    report = large_report()
    value = getattr(report, name)
    assert value.value == pytest.approx(TRUE_VALUE, abs=0.04)
    assert value.low < value.value < value.high
    assert report.logging.value == pytest.approx(LOGGING_VALUE, abs=0.03)
    assert report.n == 5000


@pytest.mark.parametrize("name", ["ips", "snips", "dr"])
def test_intervals_cover_the_true_value_over_seeds(name: str) -> None:
    covered = [getattr(r, name).low <= TRUE_VALUE <= getattr(r, name).high for r in seed_reports()]
    assert sum(covered) / len(covered) >= 0.88, f"{name} covered {sum(covered)} of {len(covered)}"


def test_the_logging_interval_covers_the_logging_value_over_seeds() -> None:
    covered = [r.logging.low <= LOGGING_VALUE <= r.logging.high for r in seed_reports()]
    assert sum(covered) / len(covered) >= 0.88


def test_doubly_robust_is_less_variable_than_ips_with_a_decent_reward_model() -> None:
    reports = seed_reports()
    ips_values = np.array([r.ips.value for r in reports])
    dr_values = np.array([r.dr.value for r in reports if r.dr is not None])
    assert dr_values.std() < 0.8 * ips_values.std()
    assert np.mean([r.dr.se for r in reports if r.dr]) < np.mean([r.ips.se for r in reports])


def test_reward_model_is_decent_and_cross_fitted() -> None:
    rows = simulate(7, 4000)
    predicted = RewardModel()(rows)
    errors = [abs(p - MU[context_of(r)]).max() for p, r in zip(predicted, rows, strict=True)]
    assert max(errors) < 0.2
    assert np.mean(errors) < 0.12
    # A row's prediction comes from the fold it is not in: changing its own reward changes
    # nothing in it (it changes the model of the other fold, which predicts other rows).
    flipped = list(rows)
    flipped[0] = dataclasses.replace(rows[0], reward=1.0 - rows[0].reward)
    again = RewardModel()(flipped)
    np.testing.assert_array_equal(again[0], predicted[0])
    assert any(not np.array_equal(a, b) for a, b in zip(again[1:], predicted[1:], strict=True))


def test_an_oracle_reward_model_makes_dr_nearly_exact() -> None:
    rows = simulate(3, 2000)
    oracle = lambda rows: [MU[context_of(r)] for r in rows]  # noqa: E731
    report = estimate(rows, target, reward_model=oracle)
    assert report.dm is not None and report.dr is not None
    assert report.dm.value == pytest.approx(
        sum(TARGET[context_of(r)] @ MU[context_of(r)] for r in rows) / len(rows)
    )
    assert report.dr.se < 0.6 * report.ips.se


def test_greedy_is_deterministic_with_ties_to_the_lowest_index() -> None:
    np.testing.assert_array_equal(greedy([0.2, 0.4, 0.4]), [0.0, 1.0, 0.0])
    best = lambda row: MU[context_of(row)]  # noqa: E731  (not a pmf: its argmax is the best)
    rows = simulate(5, 3000)
    report = estimate(rows, Greedy(FunctionPolicy(lambda r: best(r) / best(r).sum())), dr=False)
    optimum = float(sum(P_CONTEXT[k] * MU[k].max() for k in range(3)))
    for value in (report.ips, report.snips):
        assert abs(value.value - optimum) < 3 * value.se
    assert report.candidate.startswith("greedy")
    assert report.dr is None and report.dm is None


def test_estimators_by_hand() -> None:
    r = np.array([1.0, 0.0, 1.0, 0.5])
    p = np.array([0.5, 0.25, 0.8, 0.5])
    pi = np.array([1.0, 0.5, 0.2, 0.0])
    w = pi / p
    z = est.z_value(0.95)
    assert z == pytest.approx(1.959964, abs=1e-6)
    ips = est.ips(r, p, pi)
    assert ips.value == pytest.approx(np.mean(w * r))
    assert ips.se == pytest.approx(np.std(w * r, ddof=1) / 2)
    assert (ips.low, ips.high) == pytest.approx((ips.value - z * ips.se, ips.value + z * ips.se))
    snips = est.snips(r, p, pi)
    assert snips.value == pytest.approx((w * r).sum() / w.sum())
    influence = w * (r - snips.value) / w.mean()
    assert snips.se == pytest.approx(math.sqrt((influence**2).sum() / 3) / 2)
    actions = np.array([0, 1, 0, 1])
    pmf = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8], [1.0, 0.0]])
    rhat = np.array([[0.9, 0.1], [0.3, 0.2], [0.5, 0.5], [0.4, 0.6]])
    rows = np.arange(4)
    w_dr = pmf[rows, actions] / p
    terms = (pmf * rhat).sum(axis=1) + w_dr * (r - rhat[rows, actions])
    dr = est.doubly_robust(r, p, actions, pmf, rhat)
    assert dr.value == pytest.approx(terms.mean())
    clipped = est.ips(r, p, pi, clip=1.5)
    assert clipped.value == pytest.approx(np.mean(np.minimum(w, 1.5) * r))
    d = est.diagnostics(p, pi, clip=1.5)
    assert d.ess == pytest.approx(np.minimum(w, 1.5).sum() ** 2 / (np.minimum(w, 1.5) ** 2).sum())
    assert (d.max_weight, d.zero_support_share, d.clipped_share) == (2.0, 0.25, 0.5)
    with pytest.raises(ValueError):
        est.z_value(1.0)
    with pytest.raises(ValueError):
        est.ips(r, np.zeros(4), pi)


def test_the_logging_policy_evaluated_on_its_own_logs() -> None:
    rows = simulate(11, 1000)
    report = estimate(rows, lambda row: np.array(row.pmf), dr=False)
    assert report.ips.value == pytest.approx(report.logging.value)
    assert report.snips.value == pytest.approx(report.logging.value)
    d = report.diagnostics
    assert d.ess == pytest.approx(1000) and d.mean_weight == pytest.approx(1.0)
    assert d.zero_support_share == 0 and d.unsupported_mass == 0


def test_clipping_caps_the_weights() -> None:
    rows = simulate(2, 1000)
    clipped = estimate(rows, target, clip=2.0, dr=False)
    plain = estimate(rows, target, dr=False)
    assert clipped.diagnostics.clipped_share > 0
    assert clipped.ips.value < plain.ips.value  # non-negative rewards: clipping biases down
    assert clipped.ips.se < plain.ips.se
    assert clipped.to_dict()["clip"] == 2.0


def test_unsupported_actions_are_reported() -> None:
    rows = [
        LoggedRow("a", EXAMPLES[0], 4, 0, 1.0, 1.0, (1.0, 0.0, 0.0, 0.0)),
        LoggedRow("b", EXAMPLES[0], 4, 0, 1.0, 0.0, (1.0, 0.0, 0.0, 0.0)),
    ]
    report = estimate(rows, lambda row: [0.5, 0.5, 0.0, 0.0], dr=False)
    assert report.diagnostics.unsupported_mass == pytest.approx(0.5)


def test_bad_candidates_are_refused() -> None:
    rows = simulate(0, 10)
    with pytest.raises(EvaluationError, match="shape"):
        estimate(rows, lambda row: [1.0, 0.0], dr=False)
    with pytest.raises(EvaluationError, match="sums to"):
        estimate(rows, lambda row: [0.5, 0.5, 0.5, 0.5], dr=False)
    with pytest.raises(EvaluationError, match="no usable rows"):
        estimate([], target)


# --- the log reader ---------------------------------------------------------------------------


def reward_lines(n: int, seed: int = 0, *, epsilon: float = 0.2) -> list[bytes]:
    """Reward v1 lines of a 5-plan bandit: the best plan depends on the query kind."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        kind = rng.choice(["exact", "mood", "typo"])
        favourite = {"exact": 0, "mood": 1, "typo": 2}[kind]
        pmf = [epsilon / 5 + (1 - epsilon if j == 0 else 0.0) for j in range(5)]
        chosen = rng.choices(range(5), pmf)[0]
        ctx = {"c": {"kind": kind, "qlen": rng.randint(1, 5)}}
        imp = impression(f"imp-{seed}-{i}", chosen=chosen, pmf=pmf, context=ctx)
        reward = 1.0 if rng.random() < (0.8 if chosen == favourite else 0.2) else 0.0
        lines.append(orjson.dumps(reward_event(SearchImpression.from_dict(imp), reward)))
    return lines


def test_reader_round_trips_reward_lines() -> None:
    imp = impression("imp-7", chosen=3, pmf=[0.1, 0.1, 0.2, 0.5, 0.1])
    event = reward_event(SearchImpression.from_dict(imp), 2.5)
    logs = read_lines([orjson.dumps(event)])
    (row,) = logs.rows
    assert (row.event_id, row.n_actions, row.action) == ("imp-7", 5, 3)
    assert (row.probability, row.reward) == (0.5, 2.5)
    assert row.pmf == (0.1, 0.1, 0.2, 0.5, 0.1)
    assert row.model == "default" and row.source == "line 1"
    assert row.namespaces() == event["c"]
    # The example is what serving scored: VW's JSON parser makes the shared + plan examples.
    ws = vw.Workspace([*DEFAULT_VW_ARGS, "--quiet"])
    assert len(vw.JsonFormatParser(ws).parse_json(row.example)) == 1 + 5
    # And the line rebuilt for learning carries the same label fields.
    rebuilt = orjson.loads(row.dsjson())
    for key in ("_label_cost", "_label_probability", "_label_Action", "_labelIndex", "a", "p"):
        assert rebuilt[key] == event[key]
    assert rebuilt["c"] == event["c"]


def test_reader_skips_late_rewards_and_duplicates_and_reports_malformed_lines() -> None:
    first = orjson.loads(reward_lines(1, seed=1)[0])
    duplicate = {**first, "_label_cost": -9.0}
    late = {**orjson.loads(reward_lines(1, seed=2)[0]), "_skipLearn": True}
    other = orjson.loads(reward_lines(1, seed=3)[0])
    bad_probability = {**other, "EventId": "x1", "_label_probability": 0.0}
    inconsistent = {**other, "EventId": "x2", "_label_probability": 0.5}
    missing = {k: v for k, v in other.items() if k != "c"}
    short_pmf = {**other, "EventId": "x3", "a": [1, 2], "p": [0.5, 0.5]}
    lines = [
        orjson.dumps(first),
        b"{not json",
        orjson.dumps(duplicate),
        b"",
        orjson.dumps(late),
        orjson.dumps(bad_probability),
        orjson.dumps(inconsistent),
        orjson.dumps(missing),
        orjson.dumps(short_pmf),
        b"[1, 2]",
        orjson.dumps(other),
    ]
    logs = read_lines(lines, source="test")
    assert [r.event_id for r in logs.rows] == [first["EventId"], other["EventId"]]
    assert logs.rows[0].reward == -first["_label_cost"]  # the first of the duplicates counts
    assert dict(logs.skipped) == {"duplicate": 1, "skip_learn": 1, "malformed": 6}
    assert [(e.source, e.reason) for e in logs.errors] == [
        ("line 2", "not_json"),
        ("line 6", "invalid_value"),
        ("line 7", "invalid_value"),
        ("line 8", "missing_field"),
        ("line 9", "invalid_value"),
        ("line 10", "not_object"),
    ]
    assert "differs from p" in logs.errors[2].detail
    assert logs.summary() == "2 rows from test (skipped: 1 duplicate, 6 malformed, 1 skip_learn)"


def test_reader_filters_by_model_and_reads_gzip(tmp_path: Path) -> None:
    lines = reward_lines(4)
    events = [orjson.loads(line) for line in lines]
    events[1]["ltrr"]["model"] = "market-se"
    path = tmp_path / "rewards.json.gz"
    path.write_bytes(gzip.compress(b"\n".join(orjson.dumps(e) for e in events) + b"\n"))
    assert len(read_file(path).rows) == 4
    logs = read_file(path, model="market-se")
    assert [r.event_id for r in logs.rows] == [events[1]["EventId"]]
    assert logs.skipped["other_model"] == 3
    with pytest.raises(EvaluationError, match="cannot read"):
        read_file(tmp_path / "missing.json")


# --- VW candidates ----------------------------------------------------------------------------


def test_train_args_candidate_learns_exactly_as_the_learner() -> None:
    """Progressive IPS of ``VWTrainer`` is the learner's progressive loss, and it ends with
    the learner's model, byte for byte."""
    lines = reward_lines(300, seed=4)
    rows = read_lines(lines).rows
    trainer = VWTrainer(DEFAULT_VW_ARGS)
    report = estimate(rows, trainer, dr=False)
    learners = learn_lines(lines, MemoryStore(), DEFAULT_VW_ARGS)
    assert report.ips.value == pytest.approx(-learners.average_loss("default"), rel=1e-6)
    assert trainer.model_bytes == learners.model_bytes("default")


def test_model_candidate_scores_as_vw_does(tmp_path: Path) -> None:
    lines = reward_lines(400, seed=5)
    learners = learn_lines(lines, MemoryStore(), DEFAULT_VW_ARGS)
    path = tmp_path / "model.vw"
    path.write_bytes(learners.model_bytes("default"))
    rows = read_lines(reward_lines(50, seed=6)).rows
    model = VWModel.from_file(path, DEFAULT_VW_ARGS)
    pmfs = model.pmfs(rows)
    ws = vw.Workspace([*DEFAULT_VW_ARGS, "--quiet"], model_data=path.read_bytes())
    parser = vw.DSJsonFormatParser(ws)
    for pmf, line in zip(pmfs, reward_lines(50, seed=6), strict=True):
        expected = dict(ws.predict_one(parser.parse_json(line.decode())))
        np.testing.assert_allclose(pmf, [expected[i] for i in range(5)], rtol=1e-6)
        assert pmf.sum() == pytest.approx(1.0)
    greedy_pmfs = Greedy(model).pmfs(rows)
    assert all(sorted(p) == [0, 0, 0, 0, 1] for p in greedy_pmfs)
    with pytest.raises(EvaluationError, match="refused"):
        VWModel(b"not a model", DEFAULT_VW_ARGS)


# --- the command ------------------------------------------------------------------------------


def _rewards_file(tmp_path: Path, n: int = 300, extra: list[bytes] | None = None) -> Path:
    path = tmp_path / "rewards.json"
    path.write_bytes(b"\n".join([*reward_lines(n, seed=8), *(extra or [])]) + b"\n")
    return path


def test_ltrr_eval_json_in_a_subprocess(tmp_path: Path) -> None:
    path = _rewards_file(tmp_path, extra=[b"garbage"])
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ltrr.cli",
            "eval",
            "--rewards",
            str(path),
            "--train-args=--cb_explore_adf --epsilon 0.05 -q cp -q cr",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(out.stdout)
    assert report["n"] == 300 and report["skipped"] == {"malformed": 1}
    assert report["malformed"][0]["where"] == "line 301"
    assert "1 malformed line(s) skipped: line 301: not_json" in out.stderr
    estimates = report["estimates"]
    assert set(estimates) == {"ips", "snips", "dr", "dm"}
    assert math.isfinite(estimates["dm"]["value"]) and estimates["dm"]["low"] is None
    for value in [report["logging"], estimates["ips"], estimates["snips"], estimates["dr"]]:
        assert set(value) == {"value", "low", "high", "se"}
        assert all(math.isfinite(v) for v in value.values())
        assert value["low"] <= value["value"] <= value["high"]
    diagnostics = report["diagnostics"]
    assert 0 < diagnostics["ess"] <= 300 and math.isfinite(diagnostics["max_weight"])
    assert report["candidate"].startswith("VW trained progressively (--cb_explore_adf")
    assert report["confidence"] == 0.95 and report["clip"] is None


def test_ltrr_eval_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _rewards_file(tmp_path, n=200)
    learners = learn_lines(reward_lines(300, seed=9), MemoryStore(), DEFAULT_VW_ARGS)
    model = tmp_path / "model.vw"
    model.write_bytes(learners.model_bytes("default"))
    argv = ["eval", "--rewards", str(path), "--model", str(model), "--greedy"]
    assert main([*argv, "--clip", "10", "--confidence", "0.9", "--no-dr"]) == 0
    out = capsys.readouterr().out
    assert "rows:          200 from" in out
    assert f"candidate:     greedy VW model {model}" in out
    for name in ("logging policy (on-policy)", "IPS", "SNIPS", "90% low", "ESS"):
        assert name in out
    assert "DR" not in out.split("ESS")[0].split("SNIPS")[1]


def test_ltrr_eval_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"{}\n")
    assert main(["eval", "--rewards", str(empty), "--train-args=--cb_explore_adf"]) == 2
    err = capsys.readouterr().err
    assert "no usable rows to evaluate: 0 rows from" in err and "1 malformed" in err
    path = _rewards_file(tmp_path, n=10)
    assert main(["eval", "--rewards", str(path), "--train-args=--no_such_flag"]) == 2
    assert "Vowpal Wabbit refused" in capsys.readouterr().err
    assert main(["eval", "--rewards", str(path), "--model", str(tmp_path / "nope.vw")]) == 2
    assert "cannot read model file" in capsys.readouterr().err
