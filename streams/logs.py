"""Logging that does not flood: a failure repeated every tick is logged once per interval."""

from __future__ import annotations

import logging
import time


class ThrottledLog:
    """Log a repeating error once per ``interval_s`` per message, with how many times it
    happened since it was last logged (the first occurrence is logged at once, with its
    traceback; repeats within the interval only count)."""

    def __init__(self, logger: logging.Logger, interval_s: float = 30.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def report(self, message: str, exc: BaseException | None = None) -> bool:
        """Count one occurrence; returns whether it was logged."""
        now = time.monotonic()
        self._count[message] = self._count.get(message, 0) + 1
        last = self._last.get(message)
        if last is not None and now - last < self.interval_s:
            return False
        count = self._count.pop(message)
        self._last[message] = now
        suffix = f" ({count} times in the last {self.interval_s:.0f} s)" if count > 1 else ""
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        first = last is None
        self.logger.error(
            "%s%s%s", message, detail, suffix, exc_info=exc if first and exc is not None else None
        )
        return True
