"""``estimate``: every estimator of one candidate policy's value on logged rows, in one report."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ltrr.evaluation import estimators as est
from ltrr.evaluation.candidates import Candidate, as_candidate, check_pmf
from ltrr.evaluation.exceptions import EvaluationError
from ltrr.evaluation.logs import LineError, LoggedRow, Logs
from ltrr.evaluation.reward_model import RewardModel

#: Cross-fitted predictions ``r̂(x_i, ·)`` for every row (see ``reward_model.py``).
RewardPredictor = Callable[[Sequence[LoggedRow]], Sequence[ArrayLike]]


@dataclass(frozen=True)
class Report:
    """The estimated value of ``candidate`` on ``n`` logged rows, with the logging policy's.

    ``ips``, ``snips`` and ``dr`` (``None`` without a reward model) each have ``value``,
    ``low``, ``high`` (the interval at ``confidence``) and ``se``; ``dm`` (the reward model
    alone) has only a value (NaN bounds: see ``estimators.py``).
    """

    n: int
    confidence: float
    clip: float | None
    candidate: str
    logging: est.Estimate
    ips: est.Estimate
    snips: est.Estimate
    dr: est.Estimate | None
    dm: est.Estimate | None
    diagnostics: est.Diagnostics
    reward_model: str | None = None
    source: str = ""
    skipped: Mapping[str, int] = field(default_factory=dict)
    errors: Sequence[LineError] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (undefined numbers become ``null``)."""
        return {
            "source": self.source,
            "n": self.n,
            "skipped": dict(sorted(self.skipped.items())),
            "malformed": [
                {"where": e.source, "reason": e.reason, "detail": e.detail} for e in self.errors
            ],
            "confidence": self.confidence,
            "clip": self.clip,
            "candidate": self.candidate,
            "reward_model": self.reward_model,
            "logging": self.logging.to_dict(),
            "estimates": {
                name: value.to_dict()
                for name, value in (
                    ("ips", self.ips),
                    ("snips", self.snips),
                    ("dr", self.dr),
                    ("dm", self.dm),
                )
                if value is not None
            },
            "diagnostics": self.diagnostics.to_dict(),
        }


def estimate(
    rows: Sequence[LoggedRow] | Logs,
    candidate: Candidate | Callable[[LoggedRow], ArrayLike],
    *,
    confidence: float = 0.95,
    clip: float | None = None,
    dr: bool = True,
    reward_model: RewardPredictor | None = None,
) -> Report:
    """Estimate ``candidate``'s value on the logged ``rows`` (a ``Logs`` also carries what was
    skipped into the report).

    ``candidate``: a ``Candidate`` (``VWModel``, ``VWTrainer``, ``Greedy(...)``, ...) or a plain
    callable ``row -> pmf``. ``clip``: cap on importance weights (biased, see
    ``estimators.py``). ``dr``: also fit a reward model for DR and DM — ``reward_model`` if
    given (it must return cross-fitted predictions), else the default ``RewardModel()``.
    """
    logs = rows if isinstance(rows, Logs) else None
    data: list[LoggedRow] = list(rows.rows if isinstance(rows, Logs) else rows)
    est.z_value(confidence)  # refuse a bad confidence before any work
    if clip is not None and clip <= 0:
        raise EvaluationError(f"clip must be > 0, got {clip}")
    if not data:
        why = f": {logs.summary()}" if logs is not None else ""
        raise EvaluationError(f"no usable rows to evaluate{why}")
    policy = as_candidate(candidate)
    pmfs = policy.pmfs(data)
    if len(pmfs) != len(data):
        raise EvaluationError(f"{policy.description} gave {len(pmfs)} pmfs for {len(data)} rows")
    width = max(r.n_actions for r in data)
    checked = [check_pmf(p, r, policy.description) for p, r in zip(pmfs, data, strict=True)]
    pi = est.pad(checked, width)
    logged_pmf = est.pad([np.asarray(r.pmf) for r in data], width)
    actions = np.array([r.action for r in data], dtype=np.int64)
    probability = np.array([r.probability for r in data])
    rewards = np.array([r.reward for r in data])
    chosen = pi[np.arange(len(data)), actions]

    dr_estimate = dm_estimate = None
    model_description = None
    if dr:
        predictor = reward_model if reward_model is not None else RewardModel()
        model_description = getattr(predictor, "description", None) or repr(predictor)
        predicted = list(predictor(data))
        if len(predicted) != len(data) or any(
            np.shape(p) != (r.n_actions,) for p, r in zip(predicted, data, strict=False)
        ):
            raise EvaluationError("the reward model must predict every action of every row")
        rhat = est.pad([np.asarray(p, dtype=np.float64) for p in predicted], width)
        dr_estimate = est.doubly_robust(
            rewards, probability, actions, pi, rhat, confidence=confidence, clip=clip
        )
        dm_estimate = est.direct_method(pi, rhat)

    return Report(
        n=len(data),
        confidence=confidence,
        clip=clip,
        candidate=policy.description,
        logging=est.on_policy(rewards, confidence),
        ips=est.ips(rewards, probability, chosen, confidence=confidence, clip=clip),
        snips=est.snips(rewards, probability, chosen, confidence=confidence, clip=clip),
        dr=dr_estimate,
        dm=dm_estimate,
        diagnostics=est.diagnostics(
            probability, chosen, clip=clip, target_pmf=pi, logged_pmf=logged_pmf
        ),
        reward_model=model_description,
        source=logs.source if logs is not None else "",
        skipped=dict(logs.skipped) if logs is not None else {},
        errors=tuple(logs.errors) if logs is not None else (),
    )
