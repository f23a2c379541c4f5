"""Errors of the streaming layer: settings, topics and brokers."""

from __future__ import annotations

from ltrr.schemas.exceptions import LtrrError


class SettingsError(LtrrError):
    """A setting is missing or malformed; the message names the variable or TOML key."""


class BrokerError(LtrrError):
    """A broker could not be fetched, started or reached; the message says what to try."""
