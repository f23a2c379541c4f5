"""Readiness: named checks that each say what is wrong, or nothing. ``/readyz`` runs them."""

from __future__ import annotations

from collections.abc import Callable

#: A check returns a sentence saying why the worker is not ready, or None.
Check = Callable[[], str | None]


class Health:
    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def problems(self) -> dict[str, str]:
        out = {}
        for name, check in self._checks.items():
            try:
                problem = check()
            except Exception as exc:  # a broken check is itself a reason not to be ready
                problem = f"check failed: {type(exc).__name__}: {exc}"
            if problem:
                out[name] = problem
        return out
