"""Parse and learn one DSJSON line through vowpal-wabbit-next's core (pure, no I/O).

The public ``DSJsonFormatParser.parse_json`` + ``Workspace.predict_then_learn_one`` wrap every
example of a line in a Python ``Example`` and check each one's label type against the
workspace's (a call into VW per example): with 25 plans that wrapping costs more than parsing
and learning themselves. A line parsed by the workspace's own DSJSON parser always carries the
workspace's label type, so ``DSJsonLearner`` hands the parsed examples straight back to the
same core calls the wrappers make (``_parse_line_dsjson``, ``predict_then_learn_multi_ex_one``):
the model is byte-identical to the public path's (tests compare them). vowpal-wabbit-next is
pinned; if a version lacks these names, the public path is used.
"""

from __future__ import annotations

from typing import Any, cast

import vowpal_wabbit_next as vw

try:
    from vowpal_wabbit_next import _core
except ImportError:  # pragma: no cover - depends on the installed build
    _core = None  # type: ignore[assignment]

#: Prediction of a ``cb_explore_adf`` workspace: (action index, probability) pairs.
Pmf = list[tuple[int, float]]


def _has_core(ws: vw.Workspace) -> bool:
    core = getattr(ws, "_workspace", None)
    return (
        _core is not None
        and hasattr(_core, "_parse_line_dsjson")
        and hasattr(core, "predict_then_learn_multi_ex_one")
    )


class DSJsonLearner:
    """Parses DSJSON lines for ``ws`` and learns them (prediction made before learning)."""

    def __init__(self, ws: vw.Workspace) -> None:
        self.ws = ws
        self._fast = _has_core(ws)
        self._core: Any = getattr(ws, "_workspace", None)
        self._parser = vw.DSJsonFormatParser(ws)

    def parse(self, line: bytes | str) -> list[Any]:
        """The examples of one DSJSON line (UTF-8 bytes or text); raises what VW's parser
        raises."""
        if self._fast:  # the core takes the bytes as they are: no decoding copy
            return cast(list[Any], _core._parse_line_dsjson(self._core, line))  # type: ignore[arg-type]  # pybind takes bytes for std::string
        return self._parser.parse_json(line.decode() if isinstance(line, bytes) else line)

    def predict_then_learn(self, examples: list[Any]) -> Pmf:
        """Learn ``examples`` (from ``parse``); returns the pre-learning prediction."""
        if self._fast:
            return cast(Pmf, self._core.predict_then_learn_multi_ex_one(examples))
        return cast(Pmf, self.ws.predict_then_learn_one(examples))
