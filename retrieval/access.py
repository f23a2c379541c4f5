"""Bearer-token access control of the HTTP API, per scope (pure).

Scopes: ``search`` (POST /search), ``actions`` (POST /actions), ``ops`` (GET /metrics).
/healthz, /readyz and /openapi.json stay open: probes cannot carry tokens and they reveal
nothing a caller could misuse. Each scope accepts several tokens at once, so a token can be
rotated without a gap (add the new one, move the clients, drop the old one). A scope with no
tokens is open; ``ltrr serve`` refuses that on a non-loopback address unless told otherwise
(``Settings.serve_exposure_problem``)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["SCOPE_OF_PATH", "Access", "Scope", "Verdict"]

Scope = Literal["search", "actions", "ops"]
Verdict = Literal["ok", "missing_token", "invalid_token"]

#: The scope guarding each protected path; paths not listed are open.
SCOPE_OF_PATH: dict[str, Scope] = {"/search": "search", "/actions": "actions", "/metrics": "ops"}


@dataclass(frozen=True, slots=True)
class Access:
    """The tokens each scope accepts (a scope missing or empty here is open)."""

    tokens: Mapping[str, Sequence[str]]

    def is_open(self, scope: Scope) -> bool:
        return not self.tokens.get(scope)

    def check(self, scope: Scope, authorization: str | None) -> Verdict:
        """Judge an ``Authorization`` header for ``scope``. The presented token is compared
        with every configured token in constant time (no early exit), so neither which token
        matched nor how much of one matched shows in the response time."""
        accepted = self.tokens.get(scope)
        if not accepted:
            return "ok"
        if not authorization:
            return "missing_token"
        kind, _, presented = authorization.strip().partition(" ")
        if kind.lower() != "bearer" or not presented.strip():
            return "missing_token"
        given = presented.strip().encode("utf-8", "replace")
        matched = False
        for token in accepted:
            matched |= hmac.compare_digest(given, token.encode())
        return "ok" if matched else "invalid_token"
