"""The bandit learner: Vowpal Wabbit ``cb_explore_adf`` models learned from Reward lines (pure).

It learns from the logged features and probability carried in each reward — it never
recomputes a feature — so the model learned through Kafka equals a model trained offline on the
same DSJSON lines in the same order (``ltrr learn-offline``). Both paths use this class.

Exactly-once learning: the learner remembers, per partition, the next rewards offset it has
not learned yet, and the EventIds it learned recently (a duplicate reward — e.g. resent by the
join after a crash — is not learned twice). Models, offsets and EventIds are checkpointed in
one atomic store write; after a crash the worker restarts from the checkpoint and skips
offsets already covered.

Store layout: ``model/<name>`` VW bytes, ``meta/<name>`` counters, ``offset/<partition>``
next offset, ``seen/<name>/<event id>`` sequence number of a learned EventId.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
import vowpal_wabbit_next as vw

from ltrr.agents.vwcore import DSJsonLearner
from ltrr.schemas.exceptions import LtrrError
from ltrr.schemas.vw_args import DEFAULT_VW_ARGS
from ltrr.state.store import Batch, Store

#: How many recent EventIds each model remembers for deduplication.
DEFAULT_DEDUP_WINDOW = 200_000


class LearnerError(LtrrError):
    """Vowpal Wabbit refused the arguments or a model; the message says which."""


def workspace(vw_args: Sequence[str], model: bytes | None = None) -> vw.Workspace:
    """A VW workspace (quiet), optionally loaded from serialized model bytes.

    A loaded model keeps its performance counters, so a learner resumed from a checkpoint
    serializes byte-identically to one that never stopped.
    """
    args = [*vw_args, "--quiet"] if "--quiet" not in vw_args else list(vw_args)
    if model and "--preserve_performance_counters" not in args:
        args.append("--preserve_performance_counters")
    try:
        return vw.Workspace(args, model_data=model) if model else vw.Workspace(args)
    except Exception as exc:  # VW raises RuntimeError/CLIError with its own message
        raise LearnerError(f"Vowpal Wabbit refused {' '.join(args)}: {exc}") from exc


@dataclass
class _Model:
    """One model's workspace and its dedup memory."""

    ws: vw.Workspace
    vw: DSJsonLearner
    examples: int = 0
    seen: dict[str, int] = field(default_factory=dict)
    order: deque[str] = field(default_factory=deque)
    seq: int = 0
    loss_sum: float = 0.0
    new_seen: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What happened to one reward: learned | late | duplicate | replayed | invalid; an
    invalid one carries its dead-letter ``reason`` (not_json, not_object, missing_field,
    wrong_type, invalid_value, unknown_model, bad_key) and ``field``."""

    kind: str
    model: str | None = None
    cost: float | None = None
    probability: float | None = None
    detail: str = ""
    reason: str = ""
    field: str | None = None


@dataclass(frozen=True, slots=True)
class Guard:
    """The cheap invariants a reward line must meet before it is learned. Lines come from the
    join, which validated the events they were built from; these checks stop what could only
    come from someone else writing to the rewards topic: a model outside ``models`` (or,
    without a list, beyond ``max_models`` distinct ones), a probability below
    ``min_probability``, a cost outside ``cost_range``."""

    models: frozenset[str] = frozenset()
    max_models: int = 16
    min_probability: float = 1e-4
    cost_range: tuple[float, float] = (-1.0, 1.0)


class _Part(msgspec.Struct):
    model: str


class _Head(msgspec.Struct):
    """The fields of a reward line the learner checks, decoded without building the rest:
    ``c``, ``a`` and ``p`` stay raw JSON (checked to be JSON and, by their first byte, an
    object and lists; VW parses them, and refuses a ``_labelIndex`` beyond ``c._multi``)."""

    ltrr: _Part
    EventId: str
    c: msgspec.Raw
    a: msgspec.Raw
    p: msgspec.Raw
    index: int = msgspec.field(name="_labelIndex")
    cost: float = msgspec.field(name="_label_cost")
    probability: float = msgspec.field(name="_label_probability")
    skip: Any = msgspec.field(default=None, name="_skipLearn")


_decode_head = msgspec.json.Decoder(_Head).decode
_RAW_OBJECT, _RAW_LIST = msgspec.Raw(b"{}"), msgspec.Raw(b"[]")
_OPEN_OBJECT, _OPEN_LIST = ord("{"), ord("[")


class _Unkeyed:
    """``key`` of a line that did not come from the rewards topic (a file, ``ltrr
    learn-offline``): there is no Kafka key to check."""


#: See ``_Unkeyed``.
UNKEYED = _Unkeyed()


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.field = reason, detail, field


def _field(event: dict[str, Any], name: str, kinds: tuple[type, ...]) -> Any:
    if name not in event:
        raise _Invalid("missing_field", f"a reward needs {name}", name)
    value = event[name]
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise _Invalid("wrong_type", f"{name} has the wrong type ({type(value).__name__})", name)
    return value


class Learners:
    """Every model this worker learns, with the offsets and EventIds they cover."""

    def __init__(
        self,
        store: Store,
        vw_args: Sequence[str] = DEFAULT_VW_ARGS,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        guard: Guard | None = None,
    ) -> None:
        self.store = store
        self.guard = guard or Guard()
        self.vw_args = tuple(vw_args)
        self.dedup_window = dedup_window
        workspace(self.vw_args)  # fail fast on bad arguments
        self.models: dict[str, _Model] = {}
        self.offsets: dict[int, int] = {
            int(k.split(b"/")[1]): int(v) for k, v in store.scan(b"offset/")
        }
        self._dirty_offsets: set[int] = set()
        #: Called with a reward's model name before it is learned (or skipped as replayed):
        #: where a model published elsewhere is adopted (``ltrr.agents.adoption``).
        self.before_learn: Callable[[str], object] | None = None
        for key, raw in store.scan(b"meta/"):
            self._load(key.decode().split("/", 1)[1], orjson.loads(raw))

    def _load(self, name: str, meta: dict[str, Any]) -> None:
        model = self.store.get(f"model/{name}".encode())
        ws = workspace(self.vw_args, model)
        m = _Model(
            ws,
            DSJsonLearner(ws),
            examples=meta["examples"],
            seq=meta["seq"],
            loss_sum=meta.get("loss_sum", 0.0),
        )
        entries = sorted(
            (int(v), k.decode().split("/", 2)[2])
            for k, v in self.store.scan(f"seen/{name}/".encode())
        )
        for seq, event_id in entries:
            m.seen[event_id] = seq
            m.order.append(event_id)
        self.models[name] = m

    def _model(self, name: str) -> _Model:
        m = self.models.get(name)
        if m is None:
            ws = workspace(self.vw_args)
            m = self.models[name] = _Model(ws, DSJsonLearner(ws))
        return m

    def position(self, partition: int) -> int:
        """The next rewards offset of ``partition`` not yet covered by the learned state."""
        return self.offsets.get(partition, 0)

    def learn(
        self,
        raw: bytes,
        partition: int | None = None,
        offset: int | None = None,
        key: bytes | _Unkeyed | None = UNKEYED,
    ) -> Verdict:
        """Learn one Reward v1 line, unless it is late, a duplicate or already covered;
        ``key``: its Kafka key when it came from the rewards topic (checked: ``_check_key``)."""
        problem: _Invalid | None = None
        try:
            head = self._check(raw)
            self._check_key(head, key)
        except _Invalid as exc:
            problem = exc
        else:
            if self.before_learn is not None:
                self.before_learn(head.ltrr.model)  # may adopt, moving the offsets
        if partition is not None and offset is not None:
            if offset < self.position(partition):
                return Verdict("replayed")
            self.offsets[partition] = offset + 1
            self._dirty_offsets.add(partition)
        if problem is not None:
            return Verdict(
                "invalid", detail=problem.detail, reason=problem.reason, field=problem.field
            )
        name = head.ltrr.model
        if head.skip:
            return Verdict("late", name)
        m = self._model(name)
        event_id = head.EventId
        if event_id in m.seen:
            return Verdict("duplicate", name)
        try:
            examples = m.vw.parse(raw)
        except Exception as exc:  # VW's parser raises RuntimeError with a position
            try:  # the quick check leaves the bound of _labelIndex to VW: say which field
                self._diagnose(raw)
            except _Invalid as why:
                return Verdict(
                    "invalid", name, detail=why.detail, reason=why.reason, field=why.field
                )
            return Verdict(
                "invalid",
                name,
                detail=f"Vowpal Wabbit cannot parse it: {exc}",
                reason="invalid_value",
            )
        cost, prob = head.cost, head.probability
        # predict_then_learn_one: one pass, and the prediction is the pre-learning one.
        index = head.index
        for action, p in m.vw.predict_then_learn(examples):
            if action == index:
                m.loss_sum += cost * p / prob
                break
        m.examples += 1
        self._remember(m, event_id)
        return Verdict("learned", name, cost, prob)

    def problem(self, raw: bytes, key: bytes | _Unkeyed | None = UNKEYED) -> str | None:
        """Why the learner would dead-letter reward line ``raw`` (its reason), or None if it
        meets the invariants: the Q2E memory folds in only what the learner accepts, so a
        line written into the rewards topic by someone else cannot steer the memory either."""
        try:
            self._check_key(self._check(raw), key)
        except _Invalid as exc:
            return exc.reason
        return None

    @staticmethod
    def _check_key(head: _Head, key: bytes | _Unkeyed | None) -> None:
        """The rewards topic is keyed by model, so that every reward of a model reaches the
        one worker that owns its partition and learns it. A line under another key (or none)
        lands on a partition another worker may own: learned there, it would fork the model
        into two learners. Refused (``bad_key``) wherever it lands."""
        if isinstance(key, _Unkeyed):
            return
        name = head.ltrr.model
        if key != name.encode():
            got = "no key" if key is None else f"key {key.decode('utf-8', 'replace')!r}"
            raise _Invalid(
                "bad_key",
                f"the Kafka message has {got} but ltrr.model is {name!r}: rewards are keyed "
                "by model, so that one worker learns each model",
                "ltrr.model",
            )

    def _check(self, raw: bytes) -> _Head:
        """The fields the learner uses, if the line meets the cheap invariants; raises
        ``_Invalid`` saying which one fails."""
        try:
            head = _decode_head(raw)
        except msgspec.MsgspecError:
            head = None
        if head is not None and self._passes(head):
            return head
        # Something fails (or the model is new): find what, and say so.
        return self._diagnose(raw)

    def _diagnose(self, raw: bytes) -> _Head:
        """``_check`` field by field, with a message per failure."""
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _Invalid("not_json", f"not JSON: {exc}") from None
        if not isinstance(event, dict):
            raise _Invalid("not_object", "a reward must be a JSON object")
        part = _field(event, "ltrr", (dict,))
        name = _field(part, "model", (str,))
        if not name or len(name) > 128:
            raise _Invalid("invalid_value", "ltrr.model must be 1-128 characters", "ltrr.model")
        _field(event, "EventId", (str,))
        _field(event, "c", (dict,))
        for key in ("a", "p"):
            _field(event, key, (list,))
        index = _field(event, "_labelIndex", (int,))
        cost = float(_field(event, "_label_cost", (int, float)))
        prob = float(_field(event, "_label_probability", (int, float)))
        g = self.guard
        if not (math.isfinite(prob) and g.min_probability <= prob <= 1.0):
            raise _Invalid(
                "invalid_value",
                f"_label_probability {prob!r} is outside [{g.min_probability!r}, 1] "
                "(min_probability)",
                "_label_probability",
            )
        low, high = -g.cost_range[1], -g.cost_range[0]
        if not (math.isfinite(cost) and low - 1e-9 <= cost <= high + 1e-9):
            raise _Invalid(
                "invalid_value",
                f"_label_cost {cost!r} is outside [{low}, {high}], the costs the reward "
                "configuration can produce",
                "_label_cost",
            )
        multi = event["c"].get("_multi")
        if not isinstance(multi, list) or not 0 <= index < len(multi):
            raise _Invalid(
                "invalid_value", f"_labelIndex {index} is not an index of c._multi", "_labelIndex"
            )
        if name not in self.models:
            if g.models and name not in g.models:
                raise _Invalid(
                    "unknown_model",
                    f"model {name!r} is not one of the configured models "
                    f"({', '.join(sorted(g.models))})",
                    "ltrr.model",
                )
            if not g.models and len(self.models) >= g.max_models:
                raise _Invalid(
                    "unknown_model",
                    f"model {name!r} would be model number {len(self.models) + 1}; this worker "
                    f"learns at most {g.max_models} (max_models, or list them in models)",
                    "ltrr.model",
                )
        return _Head(
            _Part(name),
            event["EventId"],
            _RAW_OBJECT,
            _RAW_LIST,
            _RAW_LIST,
            index,
            cost,
            prob,
            event.get("_skipLearn"),
        )

    def _passes(self, head: _Head) -> bool:
        """Whether ``head`` (typed by the decoder) meets every invariant ``_check`` tests, for
        a model already learned: the common case in one expression, without building
        messages. False means "not sure": ``_check`` then tests field by field."""
        g = self.guard
        name, prob, cost = head.ltrr.model, head.probability, head.cost
        return (
            0 < len(name) <= 128
            and name in self.models
            and head.index >= 0  # VW's parser refuses one beyond c._multi
            and memoryview(head.c)[0] == _OPEN_OBJECT
            and memoryview(head.a)[0] == _OPEN_LIST
            and memoryview(head.p)[0] == _OPEN_LIST
            # NaN and infinities fail these comparisons
            and g.min_probability <= prob <= 1.0
            and -g.cost_range[1] - 1e-9 <= cost <= -g.cost_range[0] + 1e-9
        )

    def _remember(self, m: _Model, event_id: str) -> None:
        m.seq += 1
        m.seen[event_id] = m.seq
        m.order.append(event_id)
        m.new_seen.append(event_id)
        while len(m.order) > self.dedup_window:
            old = m.order.popleft()
            m.seen.pop(old, None)
            m.evicted.append(old)

    def reset_position(self, partition: int, offset: int) -> None:
        """The log of ``partition`` was recreated: continue from ``offset`` of the new one."""
        self.offsets[partition] = offset
        self._dirty_offsets.add(partition)

    def checkpoint(self) -> None:
        """Persist every model, counter, offset and EventId learned since the last checkpoint
        in one atomic write."""
        batch: dict[bytes, bytes | None] = {}
        for name, m in self.models.items():
            if not m.new_seen and not m.evicted:
                continue
            batch[f"model/{name}".encode()] = m.ws.serialize()
            batch[f"meta/{name}".encode()] = orjson.dumps(
                {"examples": m.examples, "seq": m.seq, "loss_sum": m.loss_sum}
            )
            for event_id in m.new_seen:
                if event_id in m.seen:
                    batch[f"seen/{name}/{event_id}".encode()] = str(m.seen[event_id]).encode()
            for event_id in m.evicted:
                batch[f"seen/{name}/{event_id}".encode()] = None
            m.new_seen.clear()
            m.evicted.clear()
        for partition in self._dirty_offsets:
            batch[f"offset/{partition}".encode()] = str(self.offsets[partition]).encode()
        self._dirty_offsets.clear()
        if batch:
            self.store.write(batch)

    def adopt(
        self,
        name: str,
        model_bytes: bytes,
        examples: int,
        offsets: Mapping[int, int],
        extra: Batch | None = None,
    ) -> None:
        """Replace model ``name`` by ``model_bytes`` (learned from ``examples`` rewards, up to
        the rewards ``offsets`` — partition → next offset), keeping its dedup memory.

        Everything learned so far is checkpointed first; then the new model, the offsets moved
        forward (never back) and ``extra`` (the publisher's version counter) are written in
        one atomic store write. Raises ``LearnerError`` if VW cannot load the model with this
        learner's arguments; nothing changes then.
        """
        ws = workspace(self.vw_args, model_bytes)
        self.checkpoint()
        old = self.models.get(name)
        m = _Model(ws, DSJsonLearner(ws), examples=examples)
        if old is not None:
            m.seen, m.order, m.seq = old.seen, old.order, old.seq
            # Keep the running progressive loss average (the adopted model has no history).
            m.loss_sum = old.loss_sum / old.examples * examples if old.examples else 0.0
        self.models[name] = m
        batch: dict[bytes, bytes | None] = {
            f"model/{name}".encode(): bytes(ws.serialize()),
            f"meta/{name}".encode(): orjson.dumps(
                {"examples": m.examples, "seq": m.seq, "loss_sum": m.loss_sum}
            ),
        }
        for partition, offset in offsets.items():
            if offset > self.position(partition):
                self.offsets[partition] = offset
                batch[f"offset/{partition}".encode()] = str(offset).encode()
        self.store.write({**batch, **(extra or {})})

    def model_bytes(self, name: str) -> bytes:
        return bytes(self.models[name].ws.serialize())

    def examples(self, name: str) -> int:
        return self.models[name].examples

    def average_loss(self, name: str) -> float:
        """Progressive-validation average cost of the learned policy (IPS, lower is better)."""
        m = self.models[name]
        return m.loss_sum / m.examples if m.examples else 0.0


def learn_lines(
    lines: Iterable[bytes], store: Store, vw_args: Sequence[str], guard: Guard | None = None
) -> Learners:
    """Offline learning over DSJSON/Reward lines in file order (``ltrr learn-offline``)."""
    learners = Learners(store, vw_args, guard=guard)
    for line in lines:
        if line.strip():
            learners.learn(line.strip())
    return learners
