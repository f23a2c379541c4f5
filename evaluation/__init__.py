"""Counterfactual (off-policy) evaluation of bandit policies on ltrr's logged rewards.

``estimate(rows, candidate)`` answers "what reward would this policy have earned on the
traffic we logged?" with IPS, SNIPS and doubly robust estimates and their confidence
intervals, next to the logging policy's own value. Rows come from ``read_file`` /
``read_topic``; candidates are ``VWModel``, ``VWTrainer``, ``Greedy`` or any callable
``row -> pmf``. ``ltrr eval`` is the command-line front end (``evaluation/cli.py``).
"""

from ltrr.evaluation.candidates import (
    Candidate,
    FunctionPolicy,
    Greedy,
    VWModel,
    VWTrainer,
    greedy,
    latest_snapshot,
)
from ltrr.evaluation.estimators import Diagnostics, Estimate
from ltrr.evaluation.evaluate import Report, estimate
from ltrr.evaluation.exceptions import EvaluationError
from ltrr.evaluation.logs import LineError, LoggedRow, Logs, read_file, read_lines, read_topic
from ltrr.evaluation.reward_model import RewardModel

__all__ = [
    "Candidate",
    "Diagnostics",
    "Estimate",
    "EvaluationError",
    "FunctionPolicy",
    "Greedy",
    "LineError",
    "LoggedRow",
    "Logs",
    "Report",
    "RewardModel",
    "VWModel",
    "VWTrainer",
    "estimate",
    "greedy",
    "latest_snapshot",
    "read_file",
    "read_lines",
    "read_topic",
]
