"""``check_strategy``: the contract every retrieval strategy keeps, for the built-in ones and
for your own (``package.module:Factory``); call it in your tests on a small catalog."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ltrr.retrieval.strategies.base import Strategy

#: Queries a strategy must answer without raising: ordinary, empty, hostile and odd text.
QUERIES = (
    "love",
    "love story",
    "",
    "   ",
    "(((",
    'AND OR NOT "',
    "title:x*",
    "\x00\x01",
    "\uff4c\uff4f\uff56\uff45",  # full-width "love"
    "愛",
    "x" * 2000,
)
#: The ``k`` values it must honour: none, nonsense, one, a few, more than the catalog.
KS = (0, -1, 1, 3, 1000)


class StrategyContractError(AssertionError):
    """A strategy broke the contract; the message says how, on which query and ``k``."""


def check_strategy(
    strategy: Strategy,
    queries: Sequence[str] = QUERIES,
    context: Mapping[str, Any] | None = None,
) -> None:
    """Raise ``StrategyContractError`` unless ``strategy`` has a name and, for every query
    and ``k``: returns a list of at most ``max(k, 0)`` candidates with distinct entity ids
    and finite scores, best (highest) first, without changing ``context``."""
    name = getattr(strategy, "name", None)
    if not isinstance(name, str) or not name:
        raise StrategyContractError(f"{strategy!r} has no name")
    context = dict(context or {"type": ["track", "playlist"], "user": {"id": "u1"}})
    before = copy.deepcopy(context)
    for query in queries:
        for k in KS:
            where = f"strategy {name} on query {query[:40]!r} with k={k}"
            try:
                result = strategy.retrieve(query, context, k)
            except Exception as exc:
                raise StrategyContractError(f"{where} raised {exc!r}") from exc
            _check_result(result, k, where)
            if context != before:
                raise StrategyContractError(f"{where} changed its context: {context}")


def _check_result(result: Any, k: int, where: str) -> None:
    if not isinstance(result, list):
        raise StrategyContractError(f"{where} returned {type(result).__name__}, not a list")
    if len(result) > max(k, 0):
        raise StrategyContractError(f"{where} returned {len(result)} candidates")
    ids = [c.entity_id for c in result]
    if len(set(ids)) != len(ids) or not all(isinstance(i, str) and i for i in ids):
        raise StrategyContractError(f"{where} returned repeated or empty entity ids: {ids}")
    scores = [c.score for c in result]
    if not all(isinstance(s, int | float) and math.isfinite(s) for s in scores):
        raise StrategyContractError(f"{where} returned non-finite scores: {scores}")
    if any(a < b for a, b in itertools.pairwise(scores)):
        raise StrategyContractError(f"{where} returned candidates not best first: {scores}")
