"""Candidate (target) policies: what gives ``π(·|x)`` for every logged row.

A candidate is any object with ``pmfs(rows) -> list of arrays`` (one pmf over the row's actions
per row, in row order) and a ``description``. Three kinds:

- ``VWModel``: a trained VW model (a file written by ``ltrr learn-offline``, or the latest
  snapshot from the snapshots topic) scoring each row's logged example, as a retrieval worker
  serving that model would. With ``cb_explore_adf`` that pmf includes the model's exploration.
- ``VWTrainer``: VW arguments to train. A fresh workspace walks the rows in order, predicting
  ``π(·|x_i)`` *before* learning row ``i``, then learning it (progressive validation). Its
  estimate is the value of *the learning process* — the policy that starts empty and learns as
  the logs arrive — not of the model it ends with.
- ``FunctionPolicy``: a Python callable mapping a row to a pmf (tests, the simulator).

``Greedy`` wraps any candidate into its deterministic version: all mass on the most probable
action, ties going to the lowest index.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
import vowpal_wabbit_next as vw
from numpy.typing import ArrayLike, NDArray

from ltrr.evaluation.exceptions import EvaluationError
from ltrr.evaluation.logs import LoggedRow

Pmf = NDArray[np.float64]
#: How far a pmf's sum may be from 1 before it is refused (VW's pmfs are float32).
PMF_TOLERANCE = 1e-3


@runtime_checkable
class Candidate(Protocol):
    """A target policy: one pmf per row, over that row's actions."""

    description: str

    def pmfs(self, rows: Sequence[LoggedRow]) -> list[Pmf]: ...


def check_pmf(values: ArrayLike, row: LoggedRow, who: str) -> Pmf:
    """``values`` as a pmf over ``row``'s actions (renormalised), or ``EvaluationError``."""
    pmf = np.asarray(values, dtype=np.float64)
    where = f"{who} on {row.source or row.event_id}"
    if pmf.shape != (row.n_actions,):
        raise EvaluationError(f"{where}: pmf has shape {pmf.shape}, expected ({row.n_actions},)")
    if not np.all(np.isfinite(pmf)) or np.any(pmf < 0):
        raise EvaluationError(f"{where}: pmf has negative or non-finite entries: {pmf}")
    total = float(pmf.sum())
    if abs(total - 1.0) > PMF_TOLERANCE:
        raise EvaluationError(f"{where}: pmf sums to {total}, not 1")
    return pmf / total


def check_candidate(candidate: Candidate, rows: Sequence[LoggedRow]) -> list[Pmf]:
    """The contract every candidate keeps (plugin authors can call this on theirs): a
    description, and one pmf per row over that row's actions, finite, non-negative, summing
    to 1. Returns the pmfs; ``EvaluationError`` names the first row that breaks it."""
    who = getattr(candidate, "description", None)
    if not isinstance(who, str) or not who:
        raise EvaluationError(f"{candidate!r} has no description")
    pmfs = candidate.pmfs(rows)
    if len(pmfs) != len(rows):
        raise EvaluationError(f"{who}: {len(pmfs)} pmfs for {len(rows)} rows")
    return [check_pmf(pmf, row, who) for pmf, row in zip(pmfs, rows, strict=True)]


def greedy(pmf: ArrayLike) -> Pmf:
    """All mass on the most probable action; ties go to the lowest index."""
    values = np.asarray(pmf, dtype=np.float64)
    out = np.zeros_like(values)
    out[int(np.argmax(values))] = 1.0  # argmax returns the first maximum
    return out


class Greedy:
    """The deterministic version of ``candidate`` (argmax of its pmf, lowest index on ties)."""

    def __init__(self, candidate: Candidate) -> None:
        self.candidate = candidate
        self.description = f"greedy {candidate.description}"

    def pmfs(self, rows: Sequence[LoggedRow]) -> list[Pmf]:
        return [greedy(p) for p in self.candidate.pmfs(rows)]


class FunctionPolicy:
    """A Python callable ``row -> pmf`` as a candidate."""

    def __init__(
        self, function: Callable[[LoggedRow], ArrayLike], description: str | None = None
    ) -> None:
        self.function = function
        self.description: str = description or str(getattr(function, "__name__", "python policy"))

    def pmfs(self, rows: Sequence[LoggedRow]) -> list[Pmf]:
        return [check_pmf(self.function(row), row, self.description) for row in rows]


def as_candidate(candidate: Candidate | Callable[[LoggedRow], ArrayLike]) -> Candidate:
    """A candidate as is; a plain callable wrapped in ``FunctionPolicy``."""
    if isinstance(candidate, Candidate):
        return candidate
    if callable(candidate):
        return FunctionPolicy(candidate)
    raise TypeError(f"not a candidate policy: {candidate!r}")


def workspace(vw_args: Sequence[str], model: bytes | None = None) -> vw.Workspace:
    """A quiet VW workspace, optionally loaded from model bytes; ``EvaluationError`` if VW
    refuses the arguments or the model."""
    args = list(vw_args) if "--quiet" in vw_args else [*vw_args, "--quiet"]
    try:
        return vw.Workspace(args, model_data=model) if model else vw.Workspace(args)
    except Exception as exc:  # VW raises RuntimeError / CLIError with its own message
        what = "the model with " if model else ""
        raise EvaluationError(f"Vowpal Wabbit refused {what}{shlex.join(args)}: {exc}") from exc


def prediction_to_pmf(ws: vw.Workspace, prediction: Any, row: LoggedRow, who: str) -> Pmf:
    """A VW multi-line prediction as a pmf over ``row``'s actions.

    ``cb_explore_adf`` predicts action probabilities: used as they are. ``cb_adf`` predicts
    action scores (costs, lowest first): the policy it serves is deterministic, all mass on
    the lowest-cost action.
    """
    scored = cast(list[tuple[int, float]], prediction)
    kind = ws.prediction_type
    if kind == vw.PredictionType.ActionScores:
        values = np.zeros(row.n_actions)
        values[min(scored, key=lambda pair: (pair[1], pair[0]))[0]] = 1.0
        return values
    if kind != vw.PredictionType.ActionProbs:
        raise EvaluationError(
            f"{who} predicts {kind}; a candidate must be a --cb_explore_adf or --cb_adf model"
        )
    values = np.zeros(row.n_actions)
    for index, prob in scored:
        if not 0 <= index < row.n_actions:
            raise EvaluationError(f"{who} scored action {index} of {row.n_actions}")
        values[index] = prob
    return check_pmf(values, row, who)


class VWModel:
    """A trained VW model (bytes + the arguments it runs with) scoring each row's example."""

    def __init__(self, model_bytes: bytes, vw_args: Sequence[str], description: str = "") -> None:
        self.vw_args = tuple(vw_args)
        self.model_bytes = model_bytes
        self.description = description or f"VW model ({shlex.join(self.vw_args)})"
        self._ws = workspace(self.vw_args, model_bytes)
        self._parser = vw.JsonFormatParser(self._ws)

    @classmethod
    def from_file(cls, path: str | Path, vw_args: Sequence[str]) -> VWModel:
        """A model file, e.g. written by ``ltrr learn-offline -o``."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise EvaluationError(f"cannot read model file {path}: {exc}") from exc
        return cls(data, vw_args, f"VW model {path} ({shlex.join(vw_args)})")

    @classmethod
    def from_snapshot(cls, header: dict[str, Any], model_bytes: bytes) -> VWModel:
        """A verified snapshot (``ltrr.schemas.snapshot.Loaded``): its own VW arguments."""
        return cls(
            model_bytes,
            header["vw_args"],
            f"snapshot {header['model']} v{header['version']} "
            f"({header['examples_learned']} examples; {shlex.join(header['vw_args'])})",
        )

    def pmfs(self, rows: Sequence[LoggedRow]) -> list[Pmf]:
        out = []
        for row in rows:
            try:
                prediction = self._ws.predict_one(self._parser.parse_json(row.example))
            except Exception as exc:  # VW's parser raises RuntimeError with a position
                raise EvaluationError(
                    f"{self.description} cannot score {row.source or row.event_id}: {exc}"
                ) from exc
            out.append(prediction_to_pmf(self._ws, prediction, row, self.description))
        return out


class VWTrainer:
    """VW arguments trained progressively over the rows: predict row ``i``, then learn it.

    The estimate of this candidate is the value of the learning process over these logs
    (what a fresh learner with these arguments would have earned as it learned), not of the
    final model. Each call of ``pmfs`` starts from a fresh workspace.
    """

    def __init__(self, vw_args: Sequence[str]) -> None:
        self.vw_args = tuple(vw_args)
        workspace(self.vw_args)  # fail fast on bad arguments
        self.description = f"VW trained progressively ({shlex.join(self.vw_args)})"
        self.model_bytes: bytes | None = None

    def pmfs(self, rows: Sequence[LoggedRow]) -> list[Pmf]:
        ws = workspace(self.vw_args)
        parser = vw.DSJsonFormatParser(ws)
        out = []
        for row in rows:
            try:
                examples = parser.parse_json(row.dsjson())
            except Exception as exc:
                raise EvaluationError(
                    f"Vowpal Wabbit cannot parse {row.source or row.event_id}: {exc}"
                ) from exc
            # One pass: the prediction returned is the one made before learning this row.
            prediction = ws.predict_then_learn_one(examples)
            out.append(prediction_to_pmf(ws, prediction, row, self.description))
        self.model_bytes = bytes(ws.serialize())
        return out


def latest_snapshot(
    bootstrap: str,
    topic: str,
    model: str,
    keys: dict[str, bytes],
    *,
    timeout_s: float = 60.0,
    max_bytes: int = 8 * 1024 * 1024,
    security: Mapping[str, Any] | None = None,
) -> VWModel:
    """The newest verified snapshot of ``model`` on the snapshots ``topic``, as a candidate.

    Snapshots are checked as a retrieval worker checks them (signature with ``keys``,
    checksum, version); refused ones are counted in the error when no snapshot is usable.
    """
    from ltrr.schemas.snapshot import Loaded, Rejected, SnapshotAssembler
    from ltrr.streams.follow import read_records

    assembler = SnapshotAssembler(keys, model)
    loaded: Loaded | None = None
    refused: dict[str, int] = {}
    records = read_records(
        bootstrap, topic, timeout_s=timeout_s, max_bytes=max_bytes, security=security
    )
    for record in records:
        result = assembler.feed(record.key, record.value)
        if isinstance(result, Loaded):
            loaded = result
        elif isinstance(result, Rejected):
            refused[result.reason] = refused.get(result.reason, 0) + 1
    if loaded is None:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(refused.items()))
        raise EvaluationError(
            f"no usable snapshot of model {model!r} on {topic}"
            + (f" (refused: {why}; is LTRR_SNAPSHOT_KEY right?)" if why else "")
        )
    return VWModel.from_snapshot(loaded.header, loaded.model_bytes)
