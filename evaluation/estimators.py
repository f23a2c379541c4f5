"""Off-policy value estimators with confidence intervals (pure numpy, no I/O).

Notation, per logged row ``i``: reward ``r_i`` of the logged action ``a_i``, logging probability
``p_i`` of that action, target-policy probability ``π(a_i|x_i)``, importance weight
``w_i = π(a_i|x_i) / p_i``, and for the doubly robust estimator a reward model ``r̂(x_i, a)``
for every action with the target's whole pmf ``π(·|x_i)``.

- **IPS** (inverse propensity scoring): ``mean(w_i r_i)``. Unbiased when the logging policy
  gave every action the target can take a positive probability; its variance grows with the
  weights.
- **SNIPS** (self-normalised IPS): ``Σ w_i r_i / Σ w_i``. Slightly biased (vanishing with n),
  usually much less variable, and invariant to a constant shift of the rewards.
- **DR** (doubly robust): ``mean(Σ_a π(a|x_i) r̂(x_i,a) + w_i (r_i - r̂(x_i,a_i)))``: the reward
  model's prediction of the target's reward, corrected by IPS on its residual. Unbiased like
  IPS whatever the reward model (if ``r̂`` on row ``i`` was not fitted on row ``i``: see
  ``reward_model.py``), and less variable the better the model predicts.
- **DM** (direct method): ``mean(Σ_a π(a|x_i) r̂(x_i,a))``, the reward model alone. Its error
  is the model's bias, which no sampling interval measures (on the unit tests' bandit a CLT
  interval around it covered the truth in 4% of seeds), so it comes without one: a
  diagnostic (DM close to DR: the model explains the rewards), not a verdict.

Intervals at ``confidence`` (two-sided, normal quantile ``z``): IPS, DR and the logging
policy's own value by the central limit theorem on the per-row terms, ``mean ± z·sd/√n``;
SNIPS by the delta method on the ratio, ``se = sd(w_i (r_i - V̂)) / (√n · mean(w))``.

**Clipping** (``clip=W``): weights above ``W`` are set to ``W`` in IPS, SNIPS and DR. That bounds
the variance a few rare, heavily up-weighted rows can cause, at the price of a bias (for
non-negative rewards, downward: the clipped rows' contribution is under-counted); the interval
then covers the clipped quantity, not the target's value. The diagnostics report how many rows
were clipped. Without clipping nothing is biased but the interval may be wide.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Estimate:
    """A value with its confidence interval ``[low, high]`` and standard error."""

    value: float
    low: float
    high: float
    se: float

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready: NaN (undefined, e.g. one row) becomes ``None``."""
        return {k: (v if math.isfinite(v) else None) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class Diagnostics:
    """How much the logs can say about the target policy.

    ``ess``: effective sample size of the (clipped) weights, ``(Σw)² / Σw²``; ``n`` when the
    target equals the logger, small when a few rows carry all the weight. ``mean_weight`` is
    about 1 when the logger covers the target (far from 1: unsupported actions or too few
    rows). ``zero_support_share``: share of rows where π gives the logged action no mass
    (they only count through SNIPS's denominator and DR's model term). ``unsupported_mass``:
    mean mass π puts on actions the logger never could take (p = 0) — a bias no estimator
    here corrects, except DR through its reward model. ``clipped_share``: rows whose weight
    was clipped.
    """

    n: int
    ess: float
    mean_weight: float
    max_weight: float
    zero_support_share: float
    clipped_share: float
    unsupported_mass: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in out.items()
        }


def z_value(confidence: float) -> float:
    """The two-sided normal quantile of ``confidence`` (1.96 for 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _vector(values: ArrayLike, name: str) -> Array:
    out = np.asarray(values, dtype=np.float64)
    if out.ndim != 1:
        raise ValueError(f"{name} must be one value per row")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} has non-finite values")
    return out


def _same_length(*arrays: Array) -> int:
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"per-row arrays differ in length: {[len(a) for a in arrays]}")
    return n


def mean_interval(terms: ArrayLike, confidence: float = 0.95) -> Estimate:
    """Mean of per-row terms with a CLT interval; NaN bounds below two rows."""
    t = _vector(terms, "terms")
    n = len(t)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan)
    value = float(t.mean())
    se = float(t.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    half = z_value(confidence) * se
    return Estimate(value, value - half, value + half, se)


def importance_weights(
    target_probability: ArrayLike, logged_probability: ArrayLike, clip: float | None = None
) -> Array:
    """``π(a_i|x_i) / p_i``, clipped at ``clip`` when given."""
    pi = _vector(target_probability, "target_probability")
    p = _vector(logged_probability, "logged_probability")
    _same_length(pi, p)
    if np.any(p <= 0) or np.any(p > 1):
        raise ValueError("logged probabilities must be in (0, 1]")
    if np.any(pi < 0) or np.any(pi > 1 + 1e-9):
        raise ValueError("target probabilities must be in [0, 1]")
    w = pi / p
    if clip is not None:
        if clip <= 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        w = np.minimum(w, clip)
    return w


def on_policy(rewards: ArrayLike, confidence: float = 0.95) -> Estimate:
    """The logging policy's value: the mean logged reward, with a CLT interval."""
    return mean_interval(_vector(rewards, "rewards"), confidence)


def ips(
    rewards: ArrayLike,
    logged_probability: ArrayLike,
    target_probability: ArrayLike,
    *,
    confidence: float = 0.95,
    clip: float | None = None,
) -> Estimate:
    """Inverse propensity scoring: ``mean(w_i r_i)``, CLT interval."""
    r = _vector(rewards, "rewards")
    w = importance_weights(target_probability, logged_probability, clip)
    _same_length(r, w)
    return mean_interval(w * r, confidence)


def snips(
    rewards: ArrayLike,
    logged_probability: ArrayLike,
    target_probability: ArrayLike,
    *,
    confidence: float = 0.95,
    clip: float | None = None,
) -> Estimate:
    """Self-normalised IPS ``Σ w r / Σ w``, delta-method interval (NaN if Σ w = 0)."""
    r = _vector(rewards, "rewards")
    w = importance_weights(target_probability, logged_probability, clip)
    n = _same_length(r, w)
    if n == 0 or w.sum() <= 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan)
    value = float((w * r).sum() / w.sum())
    if n < 2:
        return Estimate(value, math.nan, math.nan, math.nan)
    # Delta method for a ratio of means: the influence of row i is w_i (r_i - V) / mean(w).
    influence = w * (r - value) / w.mean()
    se = float(math.sqrt((influence**2).sum() / (n - 1)) / math.sqrt(n))
    half = z_value(confidence) * se
    return Estimate(value, value - half, value + half, se)


def _per_action(values: ArrayLike, n: int, name: str) -> Array:
    out = np.asarray(values, dtype=np.float64)
    if out.ndim != 2 or out.shape[0] != n:
        raise ValueError(f"{name} must have one row of per-action values per logged row")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} has non-finite values")
    return out


def direct_method(target_pmf: ArrayLike, predicted_rewards: ArrayLike) -> Estimate:
    """The reward model's value of the target, ``mean(Σ_a π(a|x_i) r̂(x_i,a))``; no interval
    (NaN bounds): its error is the model's bias, not sampling noise."""
    pi = np.asarray(target_pmf, dtype=np.float64)
    rhat = _per_action(predicted_rewards, len(pi), "predicted_rewards")
    pi = _per_action(pi, len(rhat), "target_pmf")
    value = float((pi * rhat).sum(axis=1).mean()) if len(pi) else math.nan
    return Estimate(value, math.nan, math.nan, math.nan)


def doubly_robust(
    rewards: ArrayLike,
    logged_probability: ArrayLike,
    actions: ArrayLike,
    target_pmf: ArrayLike,
    predicted_rewards: ArrayLike,
    *,
    confidence: float = 0.95,
    clip: float | None = None,
) -> Estimate:
    """Doubly robust: reward-model value plus IPS on the residual of the logged action.

    ``target_pmf`` and ``predicted_rewards`` are ``n``-by-``K`` (rows with fewer actions padded
    with zeros); ``actions`` the logged action index of each row.
    """
    r = _vector(rewards, "rewards")
    n = len(r)
    a = np.asarray(actions, dtype=np.int64)
    pi = _per_action(target_pmf, n, "target_pmf")
    rhat = _per_action(predicted_rewards, n, "predicted_rewards")
    if a.shape != (n,) or np.any(a < 0) or np.any(a >= pi.shape[1]):
        raise ValueError("actions must be one valid action index per row")
    rows = np.arange(n)
    w = importance_weights(pi[rows, a], logged_probability, clip)
    terms = (pi * rhat).sum(axis=1) + w * (r - rhat[rows, a])
    return mean_interval(terms, confidence)


def diagnostics(
    logged_probability: ArrayLike,
    target_probability: ArrayLike,
    *,
    clip: float | None = None,
    target_pmf: ArrayLike | None = None,
    logged_pmf: ArrayLike | None = None,
) -> Diagnostics:
    """Weight diagnostics; ``unsupported_mass`` needs both full pmfs (``n``-by-``K``)."""
    raw = importance_weights(target_probability, logged_probability)
    w = np.minimum(raw, clip) if clip is not None else raw
    n = len(w)
    if n == 0:
        return Diagnostics(0, 0.0, math.nan, math.nan, math.nan, math.nan)
    square = float((w**2).sum())
    unsupported = None
    if target_pmf is not None and logged_pmf is not None:
        pi = _per_action(target_pmf, n, "target_pmf")
        logged = _per_action(logged_pmf, n, "logged_pmf")
        unsupported = float((pi * (logged <= 0)).sum(axis=1).mean())
    return Diagnostics(
        n=n,
        ess=float(w.sum() ** 2 / square) if square > 0 else 0.0,
        mean_weight=float(w.mean()),
        max_weight=float(raw.max()),
        zero_support_share=float((raw <= 0).mean()),
        clipped_share=float((raw > clip).mean()) if clip is not None else 0.0,
        unsupported_mass=unsupported,
    )


def pad(rows: list[Array] | list[NDArray[Any]], width: int | None = None) -> Array:
    """Ragged per-row vectors as an ``n``-by-``K`` matrix, zero-padded (K = the longest row)."""
    k = width if width is not None else max((len(r) for r in rows), default=0)
    out = np.zeros((len(rows), k), dtype=np.float64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
