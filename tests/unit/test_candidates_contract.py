"""Every evaluation candidate keeps the same contract (``check_candidate``): one pmf per row,
over that row's actions, non-negative, summing to 1, whatever the number of actions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import orjson
import pytest

from ltrr.evaluation.candidates import (
    Candidate,
    FunctionPolicy,
    Greedy,
    VWModel,
    VWTrainer,
    check_candidate,
    workspace,
)
from ltrr.evaluation.exceptions import EvaluationError
from ltrr.evaluation.logs import LoggedRow
from ltrr.schemas.vw_args import DEFAULT_VW_ARGS

CB_ADF = ("--cb_adf", "-q", "cp")


def rows() -> list[LoggedRow]:
    """Rows with 1 to 6 actions, each logged uniformly at random."""
    out = []
    for i in range(30):
        n = 1 + i % 6
        example = {"c": {"k": f"k{i % 3}"}, "_multi": [{"p": {"a": f"a{j}"}} for j in range(n)]}
        pmf = tuple([1 / n] * n)
        reward = float(i % 4 == 0)
        out.append(LoggedRow(f"e{i}", orjson.dumps(example).decode(), n, i % n, 1 / n, reward, pmf))
    return out


def uniform(row: LoggedRow) -> np.ndarray:
    return np.full(row.n_actions, 1 / row.n_actions)


def untrained(args: tuple[str, ...]) -> VWModel:
    return VWModel(bytes(workspace(args).serialize()), args)


CANDIDATES: dict[str, Callable[[], Candidate]] = {
    "python function": lambda: FunctionPolicy(uniform),
    "greedy python function": lambda: Greedy(FunctionPolicy(uniform)),
    "VW model (cb_explore_adf)": lambda: untrained(DEFAULT_VW_ARGS),
    "VW model (cb_adf, deterministic)": lambda: untrained(CB_ADF),
    "VW trained progressively": lambda: VWTrainer(DEFAULT_VW_ARGS),
    "VW trained progressively (cb_adf)": lambda: VWTrainer(CB_ADF),
    "greedy VW trainer": lambda: Greedy(VWTrainer(("--cb_explore_adf", "--squarecb"))),
}


@pytest.mark.parametrize("make", CANDIDATES.values(), ids=CANDIDATES.keys())
def test_every_candidate_keeps_the_contract(make: Callable[[], Candidate]) -> None:
    logged = rows()
    pmfs = check_candidate(make(), logged)
    assert [len(p) for p in pmfs] == [row.n_actions for row in logged]
    assert all(abs(p.sum() - 1) < 1e-9 and (p >= 0).all() for p in pmfs)


class Broken:
    description = "a candidate that forgets the last action"

    def pmfs(self, rows: list[LoggedRow]) -> list[np.ndarray]:
        return [np.full(row.n_actions - 1, 1 / max(1, row.n_actions - 1)) for row in rows]


def test_a_candidate_that_breaks_it_is_named_with_the_row() -> None:
    with pytest.raises(EvaluationError, match=r"forgets the last action on e0: pmf has shape"):
        check_candidate(Broken(), rows())
