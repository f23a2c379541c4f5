"""Which Vowpal Wabbit arguments a model may carry (pure).

A snapshot's ``vw_args`` are handed to ``vowpal_wabbit_next.Workspace`` by every retrieval
worker that loads it, and the learner's ``vw_args`` setting ends up in every snapshot. VW's
command line can also read, write and truncate files (``-f``, ``-p``, ``--cache_file``,
``--readable_model``, ...), so both are checked against an allow-list of learning, exploration
and feature options; anything else is refused with the option named. The model must be a
``--cb_explore_adf`` model, and its interactions may only name the namespaces that serving
builds (``c``, ``q``, ``s``, ``p``, ``r``; see ``retrieval/features.py``) or ``:`` (any).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence

from ltrr.schemas.exceptions import LtrrError

#: The learner's arguments when the ``vw_args`` setting is empty. Context namespaces ``c``
#: (query shape, locale, device, time, slots), ``q`` (the query's words) and ``s`` (every
#: strategy's retrieval signals); per-plan namespaces ``p`` (the plan id and its strategies)
#: and ``r`` (the plan's retrieval statistics). Interactions let plan value depend on the
#: query, its context and what each strategy found. Exploration: SquareCB, whose probability
#: of a plan falls with how far its predicted reward trails the best one's, so plans it has
#: learned are bad stop costing; epsilon-greedy 0.05 (the default until 2026-12) keeps paying
#: 5 % for them (the production plan set on the music world, 4,000 queries, seeds 1 and 2:
#: learned 0.638 / 0.640 vs. 0.621 / 0.633; docs/simulation.md).
DEFAULT_VW_ARGS: tuple[str, ...] = (
    "--cb_explore_adf",
    "--squarecb",
    "-q",
    "cp",
    "-q",
    "cr",
    "-q",
    "qp",
    "-q",
    "sp",
)

#: First letters of the namespaces serving builds (context, query, strategies, plan, results).
NAMESPACES = "cqspr"
#: Largest ``-b``: 2^26 weights already make a model of several hundred MB.
MAX_BITS = 26

_FLAGS = frozenset(
    {
        "--cb_explore_adf",
        "--cb_adf",
        "--softmax",
        "--squarecb",
        "--regcb",
        "--regcbopt",
        "--synthcover",
        "--nounif",
        "--first_only",
        "--noconstant",
        "--adaptive",
        "--normalized",
        "--invariant",
        "--sgd",
        "--adax",
        "--coin",
        "--ftrl",
        "--pistol",
        "--random_weights",
        "--quiet",
    }
)
#: Options VW accepts but ltrr refuses, and why.
_REFUSED = {
    "--elim": "SquareCB with elimination gives some plans negative probabilities in this "
    "Vowpal Wabbit (as low as -23 on ltrr's rewards; the sum stays 1), so its impressions "
    "could not be learned",
}

#: Options that take a number.
_NUMBERS = frozenset(
    {
        "--epsilon",
        "--first",
        "--bag",
        "--cover",
        "--lambda",
        "--gamma_scale",
        "--gamma_exponent",
        "--mellowness",
        "--cb_min_cost",
        "--cb_max_cost",
        "--rnd",
        "--rnd_alpha",
        "--rnd_invlambda",
        "--synthcoversize",
        "--psi",
        "--bit_precision",
        "--learning_rate",
        "--power_t",
        "--initial_t",
        "--decay_learning_rate",
        "--l1",
        "--l2",
        "--ftrl_alpha",
        "--ftrl_beta",
        "--random_seed",
        "--hash_seed",
        "--initial_weight",
        "--quantile_tau",
        "--min_prediction",
        "--max_prediction",
    }
)
#: Options that take one word from a fixed set.
_CHOICES = {
    "--cb_type": frozenset({"ips", "dr", "mtr", "dm", "sm"}),
    "--loss_function": frozenset({"squared", "logistic", "hinge", "quantile", "poisson"}),
    "--hash": frozenset({"strings", "all"}),
}
#: Options that take namespace letters: (option, letters per value; 0 = two or more).
_NAMESPACE_OPTIONS = {
    "--quadratic": 2,
    "--cubic": 3,
    "--interactions": 0,
    "--ignore": 1,
    "--ignore_linear": 1,
    "--keep": 1,
}
_SHORT = {"-q": "--quadratic", "-b": "--bit_precision", "-l": "--learning_rate"}


class VWArgsError(LtrrError):
    """VW arguments outside what a model may carry."""


def parse_vw_args(text: str, default: Sequence[str] = DEFAULT_VW_ARGS) -> tuple[str, ...]:
    """VW arguments written as one shell-quoted line (the ``vw_args`` setting, ``ltrr eval``'s
    ``--model-args``, ...) as a tuple; ``default`` when ``text`` is blank. The one place VW
    arguments are parsed; ``check_vw_args`` then says whether a model may carry them."""
    if not text.strip():
        return tuple(default)
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:  # unbalanced quotes
        raise VWArgsError(f"VW arguments {text!r} do not parse: {exc}") from exc


def check_vw_args(args: Sequence[str], namespaces: str = NAMESPACES) -> tuple[str, ...]:
    """Return ``args`` unchanged if every option is allowed, else raise ``VWArgsError``
    naming the first offending one."""
    i = 0
    seen_cb = False
    while i < len(args):
        token = args[i]
        name, value = _split(token)
        if name in _REFUSED:
            raise VWArgsError(f"VW option {name} is not allowed: {_REFUSED[name]}")
        if name in _FLAGS and value is None:
            seen_cb |= name == "--cb_explore_adf"
            i += 1
            continue
        takes = name in _NUMBERS or name in _CHOICES or name in _NAMESPACE_OPTIONS
        if not takes:
            raise VWArgsError(
                f"VW option {token!r} is not allowed in a model's vw_args (file, cache and "
                f"output options never are); allowed: {', '.join(sorted(_allowed()))}"
            )
        if value is None:
            if i + 1 >= len(args):
                raise VWArgsError(f"VW option {name} needs a value")
            value = args[i + 1]
            i += 1
        _check_value(name, value, namespaces)
        i += 1
    if not seen_cb:
        raise VWArgsError("vw_args must contain --cb_explore_adf (ltrr serves plan pmfs)")
    return tuple(args)


def _split(token: str) -> tuple[str, str | None]:
    """``--opt=v`` -> (``--opt``, v); ``-qcp`` -> (``--quadratic``, cp); else (token, None)."""
    if token.startswith("--"):
        name, sep, value = token.partition("=")
        return name, value if sep else None
    if token[:2] in _SHORT:
        rest = token[2:]
        return _SHORT[token[:2]], rest or None
    return token, None


def _check_value(name: str, value: str, namespaces: str) -> None:
    if name in _CHOICES:
        if value not in _CHOICES[name]:
            raise VWArgsError(f"{name} must be one of {sorted(_CHOICES[name])}, got {value!r}")
        return
    if name in _NAMESPACE_OPTIONS:
        size = _NAMESPACE_OPTIONS[name]
        bad = [ch for ch in value if ch != ":" and ch not in namespaces]
        if bad or (size and len(value) != size) or (not size and len(value) < 2):
            raise VWArgsError(
                f"{name} {value!r} names namespaces serving does not build; use "
                f"{size or 'two or more'} of {namespaces!r} or ':' (any)"
            )
        return
    try:
        number = float(value)
    except ValueError as exc:
        raise VWArgsError(f"{name} takes a number, got {value!r}") from exc
    if not math.isfinite(number):
        raise VWArgsError(f"{name} must be finite, got {value!r}")
    if name == "--bit_precision" and not (1 <= number <= MAX_BITS and number == int(number)):
        raise VWArgsError(f"--bit_precision must be an integer from 1 to {MAX_BITS}, got {value}")


def _allowed() -> set[str]:
    return set(_FLAGS) | set(_NUMBERS) | set(_CHOICES) | set(_NAMESPACE_OPTIONS) | set(_SHORT)
