"""Features of a retrieval decision, as Vowpal Wabbit namespaces (pure).

Context namespace ``c``: query length in tokens and characters, token shape, digits, a script /
language guess, locale, device, hour of day and day of week (UTC unless the caller sends
``hour``/``weekday``), query-understanding slots sent by the caller (``slots``: name -> value),
and numeric user aggregates sent by the caller (``user``: name -> number).

Query namespace ``q``: the query's words (lower case, at most 12), so plan value can depend on
what was asked ("new", "songs for", a name that keeps being misspelled).

Strategy namespace ``s`` (shared): every strategy's signals for this query, the same three as
in ``r`` below, so a plan's value can depend on what the *other* strategies found (with ``-q
sp``: "lexical found an exact title, so the lexical plan wins"; "lexical found nothing close, so
semantic").

Per-plan namespaces: ``p`` the plan id and its strategy indicators; ``r`` per strategy in the
plan, its result count relative to its budget, its top score for this query (min-max
scaled across strategies so scales compare) and how far its best hit stands out from the
second (``_gap``). Feature names are sanitized to what the
contracts accept (no leading ``_``, no whitespace, ``|`` or ``:``)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ltrr.retrieval.plans import PlanSpec
from ltrr.retrieval.strategies.base import Candidate

Namespace = dict[str, float | str | bool]
_BAD = re.compile(r"[\s|:]+")
_WORD = re.compile(r"\w+")


def clean(name: str) -> str:
    """A feature name the contracts and VW accept."""
    out = _BAD.sub("_", name.strip())[:128].lstrip("_")
    return out or "x"


def _script(query: str) -> str:
    letters = [c for c in query if c.isalpha()]
    if not letters:
        return "none"
    latin = sum(1 for c in letters if "LATIN" in unicodedata.name(c, ""))
    return "latin" if latin >= 0.8 * len(letters) else "other"


def _shape(token: str) -> str:
    if token.isdigit():
        return "d"
    if token.isupper():
        return "X"
    if token[:1].isupper():
        return "Xx"
    return "x" if token.isalpha() else "mixed"


def _whole(value: Any, default: int) -> int:
    """``value`` if it is a whole number (an int, or a float without fraction), else
    ``default``: a caller's odd ``hour`` must not fail the search (the HTTP API refuses it
    before it gets here)."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default


def context_features(query: str, context: Mapping[str, Any], now_ms: int) -> dict[str, Namespace]:
    tokens = query.split()
    moment = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    c: Namespace = {
        "qlen": float(min(len(tokens), 20)),
        "qchars": float(min(len(query), 200)) / 10.0,
        "shape": "-".join(_shape(t) for t in tokens[:4]) or "empty",
        "digits": any(ch.isdigit() for ch in query),
        "script": _script(query),
        "hour": f"h{_whole(context.get('hour'), moment.hour) % 24}",
        "weekday": f"d{_whole(context.get('weekday'), moment.weekday()) % 7}",
    }
    if len(tokens) == 1:
        c["single_token"] = True
    for key in ("locale", "device", "market", "surface"):
        value = context.get(key)
        if isinstance(value, str) and value:
            c[clean(key)] = clean(value)[:32]
    slots = context.get("slots")
    if isinstance(slots, Mapping):
        for name, value in list(slots.items())[:16]:
            c[clean(f"slot_{name}")] = clean(str(value))[:32] if value is not None else True
    user = context.get("user")
    if isinstance(user, Mapping):
        for name, value in list(user.items())[:16]:
            if isinstance(value, int | float) and not isinstance(value, bool):
                c[clean(f"user_{name}")] = float(value)
    q: Namespace = {clean(t.lower())[:32]: True for t in _WORD.findall(query)[:12]}
    return {"c": c, "q": q} if q else {"c": c}


@dataclass(frozen=True, slots=True)
class Signal:
    """What one strategy found for this query: result count, top score (min-max scaled across
    the query's strategies, so scales compare) and best-hit gap (``_gap``)."""

    count: int
    top: float
    gap: float


_NOTHING = Signal(0, 0.0, 0.0)


def void_strategies(
    results: Mapping[str, Sequence[Candidate]], budgets: Mapping[str, int] | None = None
) -> frozenset[str]:
    """The strategies whose candidates rank nothing for this query: none found, none with a
    positive score, or a full list (``budgets[name]`` candidates, at least two) all scored
    alike, an arbitrary pick (``popular`` in a catalog where every popularity is 0 returns 0s;
    ``fresh`` returns nothing when every entity is older than its horizon). A plan that draws
    from such a strategy shows what the plan without it shows (``plans.offered_plans``)."""
    budgets = budgets or {}
    # Each scan over the candidates runs only when its O(1) necessary condition holds (the
    # first score is not positive; the first and last scores are equal): this runs on every
    # search, over every strategy's full list.
    return frozenset(
        name
        for name, found in results.items()
        if not found
        or (found[0].score <= 0 and max(c.score for c in found) <= 0)
        or (
            len(found) >= max(2, budgets.get(name, len(found) + 1))
            and found[0].score == found[-1].score
            and all(c.score == found[0].score for c in found)
        )
    )


def strategy_signals(results: Mapping[str, Sequence[Candidate]]) -> dict[str, Signal]:
    """Each strategy's signals, computed once per search for the ``s`` and ``r`` namespaces."""
    tops = {name: (cands[0].score if cands else 0.0) for name, cands in results.items()}
    lo, hi = min(tops.values(), default=0.0), max(tops.values(), default=0.0)
    span = hi - lo
    return {
        name: Signal(
            len(found),
            round((tops[name] - lo) / span, 4) if span > 0 else (1.0 if tops[name] > 0 else 0.0),
            _gap(found),
        )
        for name, found in results.items()
    }


def _put(ns: Namespace, name: str, signal: Signal, budget: int) -> None:
    ns[f"{name}_n"] = round(min(signal.count, budget) / budget, 4)
    ns[f"{name}_top"] = signal.top
    ns[f"{name}_gap"] = signal.gap


def strategy_features(
    signals: Mapping[str, Signal], budgets: Mapping[str, int]
) -> dict[str, Namespace]:
    """The shared ``s`` namespace: every strategy's signals, its count relative to its largest
    budget."""
    s: Namespace = {}
    for name, signal in signals.items():
        _put(s, name, signal, max(budgets.get(name, 1), 1))
    return {"s": s} if s else {}


def plan_features(
    plans: Sequence[PlanSpec], signals: Mapping[str, Signal]
) -> list[dict[str, Namespace]]:
    """Per-plan namespaces: the plan's strategies and their signals, counts relative to the
    plan's budgets."""
    out = []
    for plan in plans:
        p: Namespace = {name: True for name in plan.strategies}
        p["plan"] = clean(plan.id)
        r: Namespace = {}
        for name, budget in plan.budgets.items():
            _put(r, name, signals.get(name, _NOTHING), budget)
        out.append({"p": p, "r": r})
    return out


def _gap(found: Sequence[Candidate]) -> float:
    """How far the strategy's best hit stands out: ``(s1 - s2) / s1`` (1 for a lone hit, 0
    for none). An exact title match stands out; an ambiguous head word does not."""
    if not found or found[0].score <= 0:
        return 0.0
    second = found[1].score if len(found) > 1 else 0.0
    return round(max(0.0, found[0].score - second) / found[0].score, 4)
