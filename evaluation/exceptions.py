"""Errors of the counterfactual evaluation (``ltrr eval``)."""

from __future__ import annotations

from ltrr.schemas.exceptions import LtrrError


class EvaluationError(LtrrError):
    """The evaluation cannot run: no usable rows, an unusable candidate, an unreachable topic.

    The message says what to fix.
    """
