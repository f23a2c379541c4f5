"""The serving-side bandit policy: pmf from the current model, a seeded draw, a logged decision.

The model is swapped atomically (one reference assignment) by the snapshot loader; a request
reads the reference once, so it sees one whole model. Before any snapshot the policy explores
uniformly, or, with a default plan, gives it ``1 - epsilon`` and spreads ``epsilon``.
Exploration beyond that comes from the model's own VW arguments (``--epsilon``, ``--squarecb``,
...), i.e. the learner's ``vw_args``. A request may offer only some of the configured plans
(the searcher leaves out plans that copy another one for that query): the policy scores those,
and the impression logs those, so the learner sees the decision as it was made.

The VW example is built from exactly the namespaces that the impression logs, and parsed by
VW's JSON parser: the learner later parses the same namespaces from the reward's DSJSON ``c``
object, so serving and learning see identical features.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
import vowpal_wabbit_next as vw

from ltrr.retrieval import metrics as m
from ltrr.schemas.exceptions import LtrrError
from ltrr.schemas.vw_args import VWArgsError, check_vw_args
from ltrr.streams.logs import ThrottledLog

_fallback_log = ThrottledLog(logging.getLogger(__name__), level=logging.WARNING)

Namespaces = dict[str, dict[str, Any]]


class PolicyError(LtrrError):
    """The model could not score the plans."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    version: int
    workspace: vw.Workspace
    parser: vw.JsonFormatParser
    created_ms: int
    vw_args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    pmf: tuple[float, ...]
    chosen: int
    seed: int
    model_version: int

    @property
    def probability(self) -> float:
        return self.pmf[self.chosen]


#: A canned decision (context namespaces, one namespace dict per plan) that a model must
#: score before it is served.
Probe = tuple[Namespaces, Sequence[Namespaces]]


def load_model(
    version: int,
    vw_args: Sequence[str],
    model_bytes: bytes,
    created_ms: int,
    probe: Probe | None = None,
) -> LoadedModel:
    """A VW workspace for serving (quiet, no learning needed), checked before it is served.

    Refused with ``PolicyError``: ``vw_args`` outside the allow-list (``schemas/vw_args.py``:
    never file or output options), a model that is not ``cb_explore_adf``, a model whose
    bytes VW reads only in part (a truncated file loads with fewer weights; serialized again
    it is shorter), and a model that cannot score ``probe`` into a probability per plan.
    """
    try:
        check_vw_args(vw_args)
    except VWArgsError as exc:
        raise PolicyError(f"snapshot v{version} refused: {exc}") from exc
    args = [*vw_args, "--quiet"] if "--quiet" not in vw_args else list(vw_args)
    try:
        ws = vw.Workspace(args, model_data=model_bytes)
    except Exception as exc:  # VW raises RuntimeError with its own message
        raise PolicyError(f"Vowpal Wabbit cannot load snapshot v{version}: {exc}") from exc
    if ws.prediction_type != vw.PredictionType.ActionProbs or not ws.multiline:
        raise PolicyError(
            f"snapshot v{version} is a {ws.prediction_type.name} model, not cb_explore_adf"
        )
    if len(ws.serialize()) != len(model_bytes):
        raise PolicyError(f"snapshot v{version}: VW read only part of the model bytes")
    model = LoadedModel(version, ws, vw.JsonFormatParser(ws), created_ms, tuple(vw_args))
    if probe is not None:
        context, plans = probe
        pmf = _score(model, context, plans)
        if len(pmf) != len(plans) or not math.isclose(sum(pmf), 1.0, abs_tol=1e-3):
            raise PolicyError(
                f"snapshot v{version} scored the probe as {pmf!r}, not one probability per plan"
            )
    return model


#: A probability this far below 0 is rounding; lower, the model gives no distribution.
NEGATIVE_ZERO = 1e-6


def _score(model: LoadedModel, context: Namespaces, plans: Sequence[Namespaces]) -> list[float]:
    """The model's probability of each plan (0 for plans it did not score)."""
    example = {**context, "_multi": list(plans)}
    try:
        parsed = model.parser.parse_json(orjson.dumps(example).decode())
        scored = cast(list[tuple[int, float]], model.workspace.predict_one(parsed))
    except Exception as exc:
        raise PolicyError(f"model v{model.version} could not score plans: {exc}") from exc
    probs = [0.0] * len(plans)
    for index, prob in scored:
        if not 0 <= index < len(plans) or not math.isfinite(prob) or prob < -NEGATIVE_ZERO:
            raise PolicyError(f"model v{model.version} scored plan {index} as {prob}")
        probs[index] = max(0.0, float(prob))  # -1e-9 from rounding is 0
    return probs


class Policy:
    """Decides a plan for each request from the current model (or the cold-start rule)."""

    def __init__(self, *, epsilon: float = 0.2, default_plan: int | None = None) -> None:
        self.epsilon = epsilon
        self.default_plan = default_plan
        self.model: LoadedModel | None = None
        self._lock = threading.Lock()  # VW workspaces are not safe for concurrent use

    def swap(self, model: LoadedModel) -> None:
        self.model = model

    def pmf(
        self,
        context: Namespaces,
        plan_features: Sequence[Namespaces],
        offered: Sequence[int] | None = None,
    ) -> tuple[tuple[float, ...], int]:
        """The probability of each plan, and the model version that gave it (0: none).
        ``offered``: when ``plan_features`` are some of the configured plans only, their
        indices among them (so the default plan is found)."""
        n = len(plan_features)
        default = self.default_plan
        if offered is not None:
            default = offered.index(default) if default in offered else None
        model = self.model
        if model is None:
            return self._cold_pmf(n, default), 0
        try:
            with self._lock:
                probs = _score(model, context, plan_features)
        except PolicyError as exc:  # the request is served by the cold-start rule, counted
            m.POLICY_FALLBACKS.inc()
            _fallback_log.report(
                f"model v{model.version} gave no probability distribution; such requests use "
                "the cold-start rule",
                detail=str(exc),
            )
            return self._cold_pmf(n, default), 0
        total = sum(probs)
        pmf = tuple(p / total for p in probs) if total > 0 else self._cold_pmf(n, default)
        return pmf, model.version

    def _cold_pmf(self, n: int, default: int | None) -> tuple[float, ...]:
        if default is None or not 0 <= default < n or n == 1:
            return tuple([1.0 / n] * n)
        rest = self.epsilon / (n - 1)
        return tuple(1.0 - self.epsilon if i == default else rest for i in range(n))

    def decide(
        self,
        context: Namespaces,
        plan_features: Sequence[Namespaces],
        seed: int,
        offered: Sequence[int] | None = None,
    ) -> Decision:
        pmf, version = self.pmf(context, plan_features, offered)
        return Decision(pmf, sample(pmf, seed), seed, version)


def sample(pmf: Sequence[float], seed: int) -> int:
    """Draw an index from ``pmf`` with an RNG seeded by ``seed`` (replayable); never an index
    of probability 0."""
    draw = random.Random(seed).random() * sum(pmf)
    cumulative = 0.0
    last = 0
    for index, prob in enumerate(pmf):
        if prob <= 0:
            continue
        cumulative += prob
        last = index
        if draw < cumulative:
            return index
    return last
