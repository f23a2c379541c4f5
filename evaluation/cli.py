"""``ltrr eval``: the command-line front end of the counterfactual evaluation.

``ltrr/cli.py`` calls ``add_parser`` to declare the sub-command and ``run`` to execute it with
the settings it loaded (flags, then ``LTRR_*``, then the TOML file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from typing import TextIO

from ltrr.evaluation.candidates import Candidate, Greedy, VWModel, VWTrainer, latest_snapshot
from ltrr.evaluation.evaluate import Report, estimate
from ltrr.evaluation.exceptions import EvaluationError
from ltrr.evaluation.logs import read_file, read_topic
from ltrr.evaluation.reward_model import DEFAULT_REWARD_MODEL_ARGS, RewardModel
from ltrr.schemas.vw_args import parse_vw_args
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics

DESCRIPTION = """\
Counterfactual (off-policy) evaluation: estimate the average reward a candidate policy would
have earned on the logged traffic, without deploying it, from the rewards the learning loop
logged (each carries the probability with which the logging policy chose its plan).

Logged data: a rewards file (--rewards, one Reward/DSJSON line each, .gz accepted) or the
rewards topic (--from-topic, read from the beginning to its current end). Late rewards
(_skipLearn), repeated EventIds and, from the topic, messages under a Kafka key other than
their model (the learner refuses those: bad_key) are skipped; malformed lines are counted and
listed.

Candidate (one of):
  --model-file FILE     a VW model file (e.g. from `ltrr learn-offline -o`), run with
                        --model-args, scoring each logged example as serving would
  --snapshot-topic      the newest verified snapshot of --model-name on the snapshots topic
  --train-args ARGS     VW arguments trained progressively over the logs: each row is
                        predicted BEFORE it is learned. This estimates the value of the
                        learning process (a fresh learner learning as the logs arrive),
                        not of the model it ends with.
  --greedy makes any of them deterministic: all mass on its most probable plan.

Estimators (w = π(logged plan | x) / logged probability, the importance weight):
  logging   the logging policy's own value: the mean logged reward (on-policy).
  IPS       inverse propensity scoring, mean(w·r). Unbiased if the logging policy could take
            every plan the candidate takes; noisy when weights are large.
  SNIPS     self-normalised IPS, Σw·r / Σw. Slightly biased, usually far less noisy.
  DR        doubly robust: a reward model's prediction for the candidate, corrected by IPS on
            the model's error. Unbiased like IPS; less noisy the better the reward model (a VW
            regression of reward on context x plan, cross-fitted on 2 folds).
  DM        the reward model alone. No interval: its error is the model's bias, which
            sampling noise does not measure. A diagnostic: DM close to DR = a good model.
Intervals are two-sided at --confidence: IPS, DR and logging by the central limit theorem
(mean ± z·sd/√n), SNIPS by the delta method. --clip X caps weights at X: less variance, but a
biased estimate (usually too low) whose interval no longer covers the true value.
Diagnostics: ESS (effective sample size of the weights, (Σw)²/Σw²; small = a few rows decide
everything), mean weight (≈ 1 when the logs cover the candidate), max weight, share of rows
where the candidate gives the logged plan no mass, candidate mass on plans the logger could
not take (p = 0; a bias only DR's model can address).

Argument values that start with '-' need '=': --train-args='--cb_explore_adf --epsilon 0.05'.
Exit status: 0 done, 2 error (no usable rows, unreadable model, unreachable broker, ...).
"""


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_common: Callable[[argparse.ArgumentParser], None],
    epilog: str,
) -> argparse.ArgumentParser:
    """Declare ``ltrr eval`` on ``sub``; ``add_common`` adds --config, --broker, ..."""
    p = sub.add_parser(
        "eval",
        help="counterfactual evaluation of a policy on logged rewards (IPS, SNIPS, DR)",
        description=DESCRIPTION,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--rewards", metavar="FILE", help="rewards file: Reward/DSJSON lines (.gz accepted)"
    )
    data.add_argument(
        "--from-topic",
        action="store_true",
        help="read the rewards topic (<prefix>rewards on --broker) from the beginning to its end",
    )
    policy = p.add_mutually_exclusive_group(required=True)
    policy.add_argument(
        "--model-file", dest="model", metavar="FILE", help="candidate: a VW model file"
    )
    # The old name of --model-file, kept working; --model is a model key in other commands.
    policy.add_argument("--model", dest="model", help=argparse.SUPPRESS)
    policy.add_argument(
        "--snapshot-topic",
        action="store_true",
        help="candidate: the newest verified snapshot of --model-name on <prefix>snapshots "
        "(verified with LTRR_SNAPSHOT_KEY and --snapshot-key-id)",
    )
    policy.add_argument(
        "--train-args",
        metavar="ARGS",
        help="candidate: VW arguments trained progressively over the logs (predict, then learn "
        "each row); write as --train-args='--cb_explore_adf ...'",
    )
    p.add_argument(
        "--model-args",
        metavar="ARGS",
        help="VW arguments the --model-file runs with (default: the vw_args setting, "
        "'--cb_explore_adf --epsilon 0.05 -q cp -q cr -q qp -q sp')",
    )
    p.add_argument(
        "--model-name",
        metavar="NAME",
        help="model key: only its rewards are evaluated (others are skipped as other_model; "
        "default: every model's), and --snapshot-topic takes its snapshot (default: "
        "LTRR_MODEL_NAME, else 'default')",
    )
    p.add_argument(
        "--snapshot-key-id",
        metavar="ID",
        help="name of the snapshot verification key (LTRR_SNAPSHOT_KEY_ID; default k1)",
    )
    p.add_argument(
        "--greedy",
        action="store_true",
        help="evaluate the candidate's deterministic version: all mass on its most probable "
        "plan (ties: lowest index)",
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        metavar="X",
        help="two-sided confidence level of the intervals, in (0, 1) (0.95)",
    )
    p.add_argument(
        "--clip",
        type=float,
        metavar="X",
        help="cap importance weights at W (> 0): lower variance, biased estimate (no clipping)",
    )
    p.add_argument("--no-dr", action="store_true", help="skip the reward model, DR and DM (faster)")
    p.add_argument(
        "--reward-model-args",
        metavar="ARGS",
        help="VW arguments of DR's reward model (a --cb_adf regression; default "
        "'--cb_adf --cb_type mtr -q cp -q cr -q sp')",
    )
    p.add_argument(
        "--reward-passes",
        type=int,
        default=2,
        metavar="N",
        help="passes of the reward model over its training folds (2)",
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the cross-fitting folds (0)"
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give up reading a topic after SECONDS (60)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_common(p)
    return p


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``ltrr eval``; ``LtrrError`` (bad input, unreachable broker) propagates."""
    from ltrr.streams.security import aiokafka_kwargs

    if not 0 < args.confidence < 1:
        raise EvaluationError(f"--confidence must be in (0, 1), got {args.confidence}")
    if args.clip is not None and args.clip <= 0:
        raise EvaluationError(f"--clip must be > 0, got {args.clip}")
    if args.reward_passes < 1:
        raise EvaluationError(f"--reward-passes must be >= 1, got {args.reward_passes}")
    topics = Topics.from_settings(settings)
    max_bytes = settings.max_message_bytes
    security = aiokafka_kwargs(settings)  # SASL/TLS of the topic reads; empty = PLAINTEXT
    vw_args = settings.model_vw_args()
    if args.rewards and not os.access(args.rewards, os.R_OK):  # local files before the broker
        raise EvaluationError(f"cannot read rewards file {args.rewards}")
    # Build the candidate first: a bad model or bad arguments fail before any reading.
    candidate: Candidate
    if args.model:
        model_args = parse_vw_args(args.model_args or "", default=vw_args)
        candidate = VWModel.from_file(args.model, model_args)
    elif args.train_args:
        candidate = VWTrainer(parse_vw_args(args.train_args, default=()))
    else:
        candidate = latest_snapshot(
            settings.broker,
            topics.snapshots.name,
            settings.model_name,
            settings.verification_keys(),
            timeout_s=args.timeout_s,
            max_bytes=max_bytes,
            security=security,
        )
    if args.greedy:
        candidate = Greedy(candidate)
    reward_model = None
    if not args.no_dr:
        reward_args = parse_vw_args(args.reward_model_args or "", DEFAULT_REWARD_MODEL_ARGS)
        reward_model = RewardModel(reward_args, passes=args.reward_passes, seed=args.seed)

    if args.rewards:
        logs = read_file(args.rewards, model=args.model_name)
    else:
        logs = read_topic(
            settings.broker,
            topics.rewards.name,
            model=args.model_name,
            timeout_s=args.timeout_s,
            max_bytes=max_bytes,
            security=security,
        )
    malformed = logs.skipped.get("malformed", 0)
    if malformed:
        shown = "; ".join(str(e) for e in logs.errors[:3]) + ("; ..." if malformed > 3 else "")
        print(f"ltrr eval: {malformed} malformed line(s) skipped: {shown}", file=sys.stderr)
    report = estimate(
        logs,
        candidate,
        confidence=args.confidence,
        clip=args.clip,
        dr=not args.no_dr,
        reward_model=reward_model,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        print_table(report, sys.stdout)
    return 0


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def print_table(report: Report, out: TextIO) -> None:
    """The report as a readable table."""
    level = f"{report.confidence:.0%}"
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items()) if n)
    print(f"rows:          {report.n} from {report.source or 'memory'}", file=out)
    print(f"skipped:       {skipped or 'none'}", file=out)
    print(f"candidate:     {report.candidate}", file=out)
    if report.reward_model:
        print(f"reward model:  {report.reward_model}", file=out)
    if report.clip is not None:
        print(f"weights clipped at {report.clip:g}", file=out)
    print(file=out)
    header = f"{'estimator':<28}{'value':>10}{level + ' low':>12}{level + ' high':>12}"
    print(header, file=out)
    print("-" * len(header), file=out)
    lines = [
        ("logging policy (on-policy)", report.logging),
        ("IPS", report.ips),
        ("SNIPS", report.snips),
        ("DR", report.dr),
        ("DM (reward model only)", report.dm),
    ]
    for name, value in lines:
        if value is not None:
            print(
                f"{name:<28}{_number(value.value):>10}{_number(value.low):>12}"
                f"{_number(value.high):>12}",
                file=out,
            )
    d = report.diagnostics
    print(file=out)
    print(
        f"weights:       ESS {d.ess:.1f} of {d.n} rows ({d.ess / d.n:.1%}), "
        f"mean {_number(d.mean_weight, 3)}, max {_number(d.max_weight, 3)}",
        file=out,
    )
    support = f"zero mass on the logged plan in {d.zero_support_share:.1%} of rows"
    if report.clip is not None:
        support += f"; clipped in {d.clipped_share:.1%} of rows"
    print(f"               {support}", file=out)
    if d.unsupported_mass:
        print(
            f"               mass on plans the logger could not take: {d.unsupported_mass:.3f} "
            "(IPS and SNIPS cannot see it)",
            file=out,
        )
    if report.errors:
        total = report.skipped.get("malformed", len(report.errors))
        print(file=out)
        print(f"malformed lines ({total}; first {len(report.errors)} shown):", file=out)
        for error in report.errors:
            print(f"  {error}", file=out)
