"""Errors raised by the contracts layer, and the root of every ltrr error."""

from __future__ import annotations


class LtrrError(Exception):
    """Root of all errors ltrr raises on purpose; catch this to handle any of them."""


class ContractError(LtrrError):
    """An event does not satisfy its contract (see ``schemas/*.json``).

    ``reason`` is a machine-readable code (the dead-letter reason), ``field`` the path of the
    offending field when one field is to blame.
    """

    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.field = field
