"""Errors of the state layer."""

from __future__ import annotations

from ltrr.schemas.exceptions import LtrrError


class StateError(LtrrError):
    """State could not be opened, read or written; the message names the directory."""
