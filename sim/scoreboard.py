"""What a simulation measured, per query and in summary (pure).

Every query is scored for the learned policy and for each static baseline on the same query,
by the click model's expected reward of what each would have shown (``sim/clicks.py``), so the
comparison carries no click noise:

- ``learned``: what ``/search`` showed (the bandit's logged decision, exploration included);
- one baseline per single-strategy plan (``lexical``, ``semantic``, ...);
- ``union``: every strategy at once, sharing the same total candidate budget;
- ``uniform``: a plan drawn uniformly at random (its exact expectation: the mean over plans);
- ``oracle``: for each query kind, the one plan that did best on that kind over the whole
  run (best fixed plan per kind in hindsight; needs the whole run, so it is computed here).

Recall@budget is the share of a query's relevant entities in the candidate set a policy
retrieved (the union of its strategies' budgeted candidates), before ranking cuts it to k.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

LEARNED, UNION, UNIFORM, ORACLE = "learned", "union", "uniform", "oracle"


@dataclass(frozen=True, slots=True)
class Step:
    """One simulated query."""

    kind: str
    plan: str  # the learned policy's chosen plan
    model_version: int
    learned: float  # expected reward of what was shown
    realized: float  # reward of the sampled actions
    learned_recall: float
    plans: Sequence[float]  # expected reward per plan id (Scoreboard.plan_ids order)
    recalls: Sequence[float]  # recall@budget per plan id


@dataclass
class Scoreboard:
    plan_ids: list[str]  # configured plans, then extra ones (the union)
    singles: dict[str, str]  # baseline name -> plan id
    union_id: str | None
    configured: int  # how many of plan_ids are the policy's own plans
    steps: list[Step] = field(default_factory=list)

    def add(self, step: Step) -> None:
        self.steps.append(step)

    def __len__(self) -> int:
        return len(self.steps)

    # ---- per-query series ------------------------------------------------------------------
    def oracle_plans(self, steps: Sequence[Step] | None = None) -> dict[str, str]:
        """Best configured plan per kind in hindsight over ``steps`` (default: all)."""
        steps = self.steps if steps is None else steps
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * self.configured)
        for s in steps:
            row = sums[s.kind]
            for i in range(self.configured):
                row[i] += s.plans[i]
        return {
            kind: self.plan_ids[max(range(self.configured), key=lambda i: (row[i], -i))]
            for kind, row in sums.items()
        }

    def series(self) -> dict[str, list[float]]:
        """Expected reward per query, per policy."""
        index = {p: i for i, p in enumerate(self.plan_ids)}
        oracle = {k: index[p] for k, p in self.oracle_plans().items()}
        out: dict[str, list[float]] = {LEARNED: [s.learned for s in self.steps]}
        for name, plan_id in self.singles.items():
            out[name] = [s.plans[index[plan_id]] for s in self.steps]
        if self.union_id is not None:
            out[UNION] = [s.plans[index[self.union_id]] for s in self.steps]
        out[UNIFORM] = [sum(s.plans[: self.configured]) / self.configured for s in self.steps]
        out[ORACLE] = [s.plans[oracle[s.kind]] for s in self.steps]
        return out

    def recall_series(self) -> dict[str, list[float]]:
        index = {p: i for i, p in enumerate(self.plan_ids)}
        oracle = {k: index[p] for k, p in self.oracle_plans().items()}
        out: dict[str, list[float]] = {LEARNED: [s.learned_recall for s in self.steps]}
        for name, plan_id in self.singles.items():
            out[name] = [s.recalls[index[plan_id]] for s in self.steps]
        if self.union_id is not None:
            out[UNION] = [s.recalls[index[self.union_id]] for s in self.steps]
        out[UNIFORM] = [sum(s.recalls[: self.configured]) / self.configured for s in self.steps]
        out[ORACLE] = [s.recalls[oracle[s.kind]] for s in self.steps]
        return out

    # ---- summary ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Cumulative reward, regret, last-quarter ratios, recall and plan mix (JSON-able)."""
        n = len(self.steps)
        if n == 0:
            return {"queries": 0}
        series = self.series()
        recalls = self.recall_series()
        quarter = max(1, n // 4)
        cumulative = {name: sum(values) for name, values in series.items()}
        last = {name: sum(values[-quarter:]) / quarter for name, values in series.items()}
        static = [name for name in series if name not in (LEARNED, ORACLE)]
        best_static = max(static, key=lambda name: cumulative[name])
        kinds = sorted({s.kind for s in self.steps})
        half = self.steps[n // 2 :]
        mix: dict[str, dict[str, float]] = {}
        for kind in kinds:
            chosen = Counter(s.plan for s in half if s.kind == kind)
            total = sum(chosen.values()) or 1
            mix[kind] = {p: round(c / total, 4) for p, c in chosen.most_common()}
        per_kind = {}
        for kind in kinds:
            idx = [i for i, s in enumerate(self.steps) if s.kind == kind]
            per_kind[kind] = {
                "queries": len(idx),
                **{name: round(sum(v[i] for i in idx) / len(idx), 4) for name, v in series.items()},
            }
        return {
            "queries": n,
            "mean_reward": {k: round(v / n, 4) for k, v in cumulative.items()},
            "cumulative_reward": {k: round(v, 3) for k, v in cumulative.items()},
            "regret_vs": {
                k: round(v - cumulative[LEARNED], 3) for k, v in cumulative.items() if k != LEARNED
            },
            "best_static_baseline": best_static,
            "beats_every_static_baseline": all(
                cumulative[LEARNED] > cumulative[name] for name in static
            ),
            "last_quarter_mean_reward": {k: round(v, 4) for k, v in last.items()},
            "last_quarter_learned_over_oracle": round(last[LEARNED] / last[ORACLE], 4)
            if last[ORACLE] > 0
            else None,
            "realized_mean_reward": round(sum(s.realized for s in self.steps) / n, 4),
            "recall_at_budget": {k: round(sum(v) / n, 4) for k, v in recalls.items()},
            "oracle_plan_by_kind": self.oracle_plans(),
            "learned_plan_mix_by_kind_second_half": mix,
            "per_kind_mean_reward": per_kind,
            "final_model_version": self.steps[-1].model_version,
        }


def recall_at_budget(
    budgets: Mapping[str, int], strategies: Mapping[str, Sequence[str]], relevant: Mapping[str, Any]
) -> float:
    """Share of ``relevant`` in the union of each strategy's first ``budget`` candidates."""
    if not relevant:
        return 1.0
    found = {e for name, b in budgets.items() for e in strategies.get(name, ())[:b]}
    return sum(1 for e in relevant if e in found) / len(relevant)
