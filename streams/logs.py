"""Logging that does not flood: a failure repeated every tick is logged once per interval."""

from __future__ import annotations

import logging
import time


class ThrottledLog:
    """Log a repeating error once per ``interval_s`` per message, with how many times it
    happened since it was last logged (the first occurrence is logged at once, with its
    traceback; repeats within the interval only count)."""

    def __init__(
        self, logger: logging.Logger, interval_s: float = 30.0, level: int = logging.ERROR
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.level = level
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def report(self, message: str, exc: BaseException | None = None, *, detail: str = "") -> bool:
        """Count one occurrence; returns whether it was logged."""
        now = time.monotonic()
        self._count[message] = self._count.get(message, 0) + 1
        last = self._last.get(message)
        if last is not None and now - last < self.interval_s:
            return False
        count = self._count.pop(message)
        self._last[message] = now
        suffix = f" ({count} times in the last {self.interval_s:.0f} s)" if count > 1 else ""
        if exc is not None:
            detail = f"{type(exc).__name__}: {exc}"
        detail = f": {detail}" if detail else ""
        trace = exc if last is None and exc is not None and exc.__traceback__ else None
        self.logger.log(self.level, "%s%s%s", message, detail, suffix, exc_info=trace)
        return True


class RepeatFilter(logging.Filter):
    """Let a client library's repeating warning or error (same logger, level and message
    template) through once per ``interval_s``; the next one that passes says how many were
    held back. A broker outage then costs a few lines a minute, not thousands."""

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[str, int, str], float] = {}
        self._held: dict[tuple[str, int, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self.interval_s:.0f} s)"
        return True


#: Loggers of the Kafka client libraries, whose retries log at every attempt.
CLIENT_LOGGERS = ("aiokafka", "kafka")


def quiet_client_logs(interval_s: float = 30.0) -> RepeatFilter:
    """Install one ``RepeatFilter`` on every logger of the Kafka client libraries created so
    far (they create theirs at import, so call this after importing them)."""
    repeat = RepeatFilter(interval_s)
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name.split(".")[0] in CLIENT_LOGGERS
    ]
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(repeat)
    return repeat
