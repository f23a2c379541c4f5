"""Reward v1 events: a Vowpal Wabbit DSJSON line for cb_explore_adf, plus ltrr's own part.

The learning part is built from the impression exactly as logged — context and per-plan
features are copied, never recomputed — so the learner and ``vw --dsjson`` see the decision
as the retrieval worker made it. VW ignores the top-level ``schema_version`` and ``ltrr`` keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ltrr.schemas.records import SearchImpression, UserAction


def iso_timestamp(ms: int) -> str:
    """Milliseconds since the epoch as DSJSON's ISO-8601 UTC timestamp with milliseconds."""
    moment = datetime.fromtimestamp(ms / 1000.0, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def reward_event(
    impression: SearchImpression,
    reward: float,
    actions: Sequence[UserAction] = (),
    *,
    late: bool = False,
    default_reward: bool = False,
) -> dict[str, Any]:
    """The Reward v1 object for ``impression`` with the aggregated ``reward``.

    VW minimises cost, so ``_label_cost`` is ``-reward``. ``a``/``p`` list the chosen plan first
    and then the others in plan order, each with its logged probability.
    """
    chosen = impression.chosen
    order = [chosen, *(i for i in range(len(impression.plans)) if i != chosen)]
    context: dict[str, Any] = dict(impression.context)
    context["_multi"] = [plan.features for plan in impression.plans]
    event: dict[str, Any] = {
        "schema_version": 1,
        "_label_cost": -float(reward),
        "_label_probability": impression.probability,
        "_label_Action": chosen + 1,
        "_labelIndex": chosen,
    }
    if late:
        event["_skipLearn"] = True
    event.update(
        {
            "Version": "1",
            "EventId": impression.impression_id,
            "Timestamp": iso_timestamp(impression.timestamp_ms),
            "a": [i + 1 for i in order],
            "p": [impression.pmf[i] for i in order],
            "c": context,
            "ltrr": {
                "impression_id": impression.impression_id,
                "model": impression.model_name,
                "model_version": impression.model_version,
                "plan_id": impression.chosen_plan.id,
                "query": impression.query,
                "reward": float(reward),
                "actions": [_action_part(a) for a in actions],
                "late": late,
                "default_reward": default_reward,
                "shown": [r.entity_id for r in impression.results],
            },
        }
    )
    return event


def _action_part(action: UserAction) -> dict[str, Any]:
    return {
        "action_id": action.action_id,
        "entity_id": action.entity_id,
        "type": action.type,
        "value": action.value,
        "timestamp_ms": action.timestamp_ms,
    }
