"""Logged bandit data for off-policy evaluation: Reward/DSJSON lines turned into rows.

A row is one logged decision: the VW JSON example the decision was made on (the shared context
namespaces plus ``_multi``, one entry per action, exactly as logged), which action was chosen
with which probability, the logged pmf over every action, and the reward (``-_label_cost``).

Rows come from a file (one line per reward, optionally gzip-compressed) or from the rewards
topic read from the beginning to its current end. As in the learner, a late reward
(``_skipLearn: true``) is not a sample, and an EventId seen before (per model) is a duplicate:
the first one counts. A line that is not a usable decision is counted and reported with where
it was (line number, or partition and offset) and why; it never stops the reading.
"""

from __future__ import annotations

import gzip
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ltrr.evaluation.exceptions import EvaluationError

#: Tolerance between ``_label_probability`` and the chosen action's entry in ``p``, and between
#: the sum of ``p`` and 1.
PROBABILITY_TOLERANCE = 1e-4
#: How many malformed lines are kept with their detail (all are counted).
DEFAULT_MAX_ERRORS = 20


@dataclass(frozen=True, slots=True)
class LoggedRow:
    """One logged decision and its reward.

    ``example`` is VW JSON text (context namespaces + ``_multi``) that ``vw.JsonFormatParser``
    turns into the multi-line example the logging policy scored; ``action`` is 0-based into
    ``_multi``; ``pmf[i]`` is the logged probability of action ``i``.
    """

    event_id: str
    example: str
    n_actions: int
    action: int
    probability: float
    reward: float
    pmf: tuple[float, ...]
    model: str | None = None
    source: str = ""

    def namespaces(self) -> dict[str, Any]:
        """The example as a dict (context namespaces and ``_multi``), for Python policies."""
        parsed: dict[str, Any] = orjson.loads(self.example)
        return parsed

    def dsjson(self, probability: float | None = None) -> str:
        """This decision as a DSJSON line VW can learn from (``--dsjson`` label fields).

        ``probability`` replaces the logged one in the label (the reward model passes 1 to
        learn an unweighted regression).
        """
        order = [self.action, *(i for i in range(self.n_actions) if i != self.action)]
        line = {
            "_label_cost": -self.reward,
            "_label_probability": self.probability if probability is None else probability,
            "_label_Action": self.action + 1,
            "_labelIndex": self.action,
            "a": [i + 1 for i in order],
            "p": [self.pmf[i] for i in order],
            "c": orjson.Fragment(self.example),
        }
        return orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY).decode()


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that is not a usable decision: where it was, a reason code, and the detail."""

    source: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}: {self.detail}"


@dataclass
class Logs:
    """Rows read from one source, plus what was skipped and why.

    ``skipped`` counts by reason: ``skip_learn`` (late reward), ``bad_key`` (a topic message
    under a Kafka key other than its model: the learner refuses it), ``duplicate`` (EventId
    seen before), ``other_model`` (a model key other than the one asked for), ``malformed``.
    ``errors`` keeps the first malformed lines with their detail.
    """

    source: str
    rows: list[LoggedRow] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[LineError] = field(default_factory=list)

    def summary(self) -> str:
        """One line: rows read and skipped rows by reason."""
        parts = [f"{n} {reason}" for reason, n in sorted(self.skipped.items()) if n]
        skipped = f" (skipped: {', '.join(parts)})" if parts else ""
        return f"{len(self.rows)} rows from {self.source}{skipped}"


class MalformedLine(ValueError):
    """Why a line is not a usable decision (``reason`` is a short code)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _number(event: dict[str, Any], name: str) -> float:
    if name not in event:
        raise MalformedLine("missing_field", f"{name} is missing")
    value = event[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedLine("wrong_type", f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise MalformedLine("invalid_value", f"{name} must be finite, got {value!r}")
    return float(value)


def _index(event: dict[str, Any]) -> int:
    """The 0-based chosen action from ``_labelIndex``, or ``_label_Action`` - 1."""
    index: Any = event.get("_labelIndex")
    one_based: Any = event.get("_label_Action")
    for name, value in (("_labelIndex", index), ("_label_Action", one_based)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise MalformedLine("wrong_type", f"{name} must be an integer, got {value!r}")
    if index is None and one_based is None:
        raise MalformedLine("missing_field", "_labelIndex (or _label_Action) is missing")
    if index is not None and one_based is not None and one_based != index + 1:
        raise MalformedLine(
            "invalid_value", f"_label_Action {one_based} is not _labelIndex {index} + 1"
        )
    return int(index) if index is not None else int(one_based) - 1


def parse_event(event: Any, source: str = "") -> LoggedRow:
    """The row of one decoded Reward/DSJSON object; raises ``MalformedLine``."""
    if not isinstance(event, dict):
        raise MalformedLine("not_object", f"a reward line must be a JSON object, not {event!r:.40}")
    cost = _number(event, "_label_cost")
    probability = _number(event, "_label_probability")
    if not 0 < probability <= 1:
        raise MalformedLine("invalid_value", f"_label_probability {probability} is not in (0, 1]")
    event_id = event.get("EventId")
    if not isinstance(event_id, str) or not event_id:
        raise MalformedLine("missing_field", "EventId must be a non-empty string")
    context = event.get("c")
    if not isinstance(context, dict):
        raise MalformedLine("missing_field", "c (context and _multi) must be an object")
    multi = context.get("_multi")
    if not isinstance(multi, list) or not multi or not all(isinstance(m, dict) for m in multi):
        raise MalformedLine("invalid_value", "c._multi must be a non-empty list of objects")
    n = len(multi)
    action = _index(event)
    if not 0 <= action < n:
        raise MalformedLine("invalid_value", f"chosen action {action} is outside 0..{n - 1}")
    pmf = _logged_pmf(event, n)
    if abs(pmf[action] - probability) > PROBABILITY_TOLERANCE:
        raise MalformedLine(
            "invalid_value",
            f"_label_probability {probability} differs from p of the chosen action ({pmf[action]})",
        )
    meta = event.get("ltrr")
    model = meta.get("model") if isinstance(meta, dict) else None
    return LoggedRow(
        event_id=event_id,
        example=orjson.dumps(context).decode(),
        n_actions=n,
        action=action,
        probability=probability,
        reward=-cost,
        pmf=pmf,
        model=model if isinstance(model, str) else None,
        source=source,
    )


def _logged_pmf(event: dict[str, Any], n: int) -> tuple[float, ...]:
    """The logged pmf indexed by action, from ``a`` (1-based ids) and ``p`` (aligned)."""
    ids, probs = event.get("a"), event.get("p")
    if not isinstance(ids, list) or not isinstance(probs, list):
        raise MalformedLine("missing_field", "a and p (logged actions and pmf) must be lists")
    if len(ids) != n or len(probs) != n:
        raise MalformedLine(
            "invalid_value", f"a and p have {len(ids)} and {len(probs)} entries for {n} actions"
        )
    if sorted(i for i in ids if isinstance(i, int) and not isinstance(i, bool)) != list(
        range(1, n + 1)
    ):
        raise MalformedLine("invalid_value", f"a must list the action ids 1..{n} once each")
    pmf = [0.0] * n
    for i, p in zip(ids, probs, strict=True):
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise MalformedLine("invalid_value", f"p entries must be in [0, 1], got {p!r}")
        pmf[i - 1] = float(p)
    if abs(sum(pmf) - 1.0) > PROBABILITY_TOLERANCE:
        raise MalformedLine("invalid_value", f"p sums to {sum(pmf)}, not 1")
    return tuple(pmf)


class _NoKey:
    """The key of a line read from a file: there is no Kafka key to check."""


NO_KEY = _NoKey()


class LogCollector:
    """Turns raw lines or messages, fed in order, into ``Logs`` (pure: no I/O)."""

    def __init__(
        self, source: str, *, model: str | None = None, max_errors: int = DEFAULT_MAX_ERRORS
    ) -> None:
        self.logs = Logs(source)
        self.model = model
        self.max_errors = max_errors
        self._seen: set[tuple[str | None, str]] = set()

    def add(self, raw: bytes, where: str, key: bytes | _NoKey | None = NO_KEY) -> LoggedRow | None:
        """Read one line; the row if it is a new usable decision, else ``None`` (counted).
        ``key``: its Kafka key when it came from the rewards topic; a line under a key other
        than its model's is skipped as ``bad_key``, as the learner refuses to learn it."""
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.reject(where, "not_json", str(exc))
            return None
        try:
            row = parse_event(event, where)
        except MalformedLine as exc:
            self.reject(where, exc.reason, exc.detail)
            return None
        skipped = self._skip_reason(event, row, key)
        if skipped:
            self.logs.skipped[skipped] += 1
            return None
        self._seen.add((row.model, row.event_id))
        self.logs.rows.append(row)
        return row

    def _skip_reason(
        self, event: dict[str, Any], row: LoggedRow, key: bytes | _NoKey | None
    ) -> str | None:
        if event.get("_skipLearn") is True:
            return "skip_learn"
        if not isinstance(key, _NoKey) and key != (row.model or "").encode():
            return "bad_key"
        if self.model is not None and row.model != self.model:
            return "other_model"
        if (row.model, row.event_id) in self._seen:
            return "duplicate"
        return None

    def reject(self, where: str, reason: str, detail: str) -> None:
        """Count a malformed line (and keep its detail while under ``max_errors``)."""
        self.logs.skipped["malformed"] += 1
        if len(self.logs.errors) < self.max_errors:
            self.logs.errors.append(LineError(where, reason, detail))


def read_lines(
    lines: Iterable[bytes],
    *,
    source: str = "lines",
    model: str | None = None,
    max_errors: int = DEFAULT_MAX_ERRORS,
) -> Logs:
    """Rows of Reward/DSJSON ``lines`` (numbered from 1; blank lines are ignored)."""
    collector = LogCollector(source, model=model, max_errors=max_errors)
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped:
            collector.add(stripped, f"line {number}")
    return collector.logs


def _open_lines(path: Path) -> Iterator[bytes]:
    """The file's lines; gzip is recognised by its magic bytes, whatever the file's name."""
    try:
        with path.open("rb") as probe:
            compressed = probe.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if compressed else path.open("rb") as handle:
            yield from handle
    except (OSError, EOFError) as exc:  # gzip raises BadGzipFile (an OSError) or EOFError
        raise EvaluationError(f"cannot read rewards file {path}: {exc}") from exc


def read_file(
    path: str | Path, *, model: str | None = None, max_errors: int = DEFAULT_MAX_ERRORS
) -> Logs:
    """Rows of a rewards file: one Reward/DSJSON line each, plain or gzip-compressed."""
    path = Path(path)
    return read_lines(_open_lines(path), source=str(path), model=model, max_errors=max_errors)


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    model: str | None = None,
    max_errors: int = DEFAULT_MAX_ERRORS,
    timeout_s: float = 60.0,
    max_bytes: int = 8 * 1024 * 1024,
    security: Mapping[str, Any] | None = None,
) -> Logs:
    """Rows of the rewards ``topic``, from the beginning to its end offsets at the start.

    Records are taken partition by partition in offset order: a model's rewards share one
    partition (they are keyed by model), so each model's rows come in the order it learned.
    """
    from ltrr.streams.follow import read_records

    collector = LogCollector(f"topic {topic}", model=model, max_errors=max_errors)
    records = read_records(
        bootstrap, topic, timeout_s=timeout_s, max_bytes=max_bytes, security=security
    )
    for record in records:
        where = f"partition {record.partition} offset {record.offset}"
        if record.value is None:
            collector.reject(where, "not_json", "empty message (tombstone)")
        else:
            collector.add(record.value, where, record.key)
    return collector.logs
