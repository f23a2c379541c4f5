"""Logging that does not flood: a failure repeated every tick is logged once per interval."""

from __future__ import annotations

import logging
import logging.config
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


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


#: Loggers of the Kafka client libraries and the stream framework: their retries log at every
#: attempt, so the console shows them only with ``--verbose``.
CLIENT_LOGGERS = ("aiokafka", "kafka", "faust", "mode")

#: The console's line format (``prefix`` goes after the level, e.g. ``[worker 1] ``).
FORMAT = "[%(asctime)s] [%(levelname)s] {prefix}%(name)s: %(message)s"

_held = 0
_held_lock = threading.Lock()


def is_client_record(record: logging.LogRecord) -> bool:
    return record.name.split(".")[0] in CLIENT_LOGGERS


class ConsoleFilter(logging.Filter):
    """What of the client libraries reaches the console: with ``verbose`` everything; else
    their warnings and errors only, each repeating one once per ``interval_s``
    (``RepeatFilter``), and none while ``hold_client_logs`` is active. ltrr's own records
    always pass (at the configured level)."""

    def __init__(self, verbose: bool = False, interval_s: float = 30.0) -> None:
        super().__init__()
        self.verbose = verbose
        self.repeat = RepeatFilter(interval_s)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose or not is_client_record(record):
            return True
        if record.levelno < logging.WARNING or _held:
            return False
        return self.repeat.filter(record)


@contextmanager
def hold_client_logs() -> Iterator[None]:
    """Keep the client libraries' records off the console (without ``--verbose``) while a
    caller collects them itself, e.g. the admin client's bootstrap: its caller says in one
    line what failed instead of the library's line per retry."""
    global _held
    with _held_lock:
        _held += 1
    try:
        yield
    finally:
        with _held_lock:
            _held -= 1


class StderrHandler(logging.StreamHandler):
    """A handler on the process's own stderr (``sys.__stderr__``): Faust's worker replaces
    ``sys.stderr`` by a proxy that logs what is written to it, and a test's captured
    ``sys.stderr`` is closed when the test ends."""

    def __init__(self) -> None:
        super().__init__(sys.__stderr__)


def logging_config(level: str, *, verbose: bool = False, prefix: str = "") -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of every ltrr process: one stderr handler at
    ``level`` behind a ``ConsoleFilter`` (also handed to Faust's worker, which would otherwise
    install its own)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"console": {"()": ConsoleFilter, "verbose": verbose}},
        "formatters": {"plain": {"format": FORMAT.format(prefix=prefix)}},
        "handlers": {
            "console": {
                "()": StderrHandler,
                "filters": ["console"],
                "formatter": "plain",
            }
        },
        "root": {"level": level.upper(), "handlers": ["console"]},
    }


def setup_logging(level: str, *, verbose: bool = False, prefix: str = "") -> None:
    """Configure the process's logging (see ``logging_config``)."""
    logging.config.dictConfig(logging_config(level, verbose=verbose, prefix=prefix))
