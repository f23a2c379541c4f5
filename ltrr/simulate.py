"""``ltrr simulate`` and ``ltrr demo``: simulated users against the real loop, and a report.

Without ``--url`` both start the whole stack on this machine — the embedded broker, the
learning worker (``ltrr worker``) and the retrieval worker (``ltrr serve``) — as child
processes; with ``--url`` they drive an ``ltrr serve`` you run (and ``--broker`` lets them
publish new releases to its catalog topic). The simulated users search through HTTP
``/search`` and report what they did through ``/actions``; the worker joins, rewards, learns
and publishes snapshots that the retrieval worker hot-loads. ``ltrr demo`` is ``ltrr simulate``
on the music world with settings that finish in a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import shutil
import signal
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ltrr.processes import ServeProcess, WorkerProcess
from ltrr.schemas.exceptions import LtrrError
from ltrr.schemas.vw_args import DEFAULT_VW_ARGS, check_vw_args, parse_vw_args
from ltrr.sim.beir import BeirWorld
from ltrr.sim.report import headroom_text
from ltrr.sim.runner import HttpBackend, SimConfig, Simulation, World
from ltrr.sim.scoreboard import LEARNED, ORACLE, QUERY_ORACLE, UNION, Scoreboard
from ltrr.sim.world import DEFAULT_MIX, KINDS, MusicWorld, WorldConfig
from ltrr.streams.scrape import scrape, total

#: Short windows and frequent snapshots, so a few-minute run learns many times over.
LOOP_FLAGS = (
    "--reward-window-s",
    "1",
    "--join-tick-s",
    "0.2",
    "--checkpoint-interval-s",
    "1",
    "--snapshot-interval-s",
    "1",
    "--snapshot-every",
    "200",
)
STRATEGIES = "lexical,semantic,memory,popular,fresh"
#: How long the retrieval worker may take to start: its first start on a catalog embeds every
#: entity (lisa's 6,000 documents took over 600 s on a busy 2-core machine).
SERVE_START_TIMEOUT_S = 1800.0
#: The learner's arguments: the worker's default (SquareCB exploration, which stops paying for
#: plans it has learned are bad), named here because ``--vw-args`` prints it.
SIM_VW_ARGS: tuple[str, ...] = DEFAULT_VW_ARGS


def simulation_plans(strategies: list[str], total: int = 100) -> str:
    """The plans ``ltrr simulate`` serves: every strategy alone, every pair (budget split
    evenly), and every strategy at once (the union), so the policy can always fall back to
    what the union baseline shows."""
    share = max(1, total // max(1, len(strategies)))
    specs = [f"{a}:{total}" for a in strategies]
    specs += [
        f"{a}:{total // 2}+{b}:{total // 2}" for a, b in itertools.combinations(strategies, 2)
    ]
    if len(strategies) > 2:
        specs.append("+".join(f"{a}:{share}" for a in strategies))
    return ";".join(specs)


def say(text: str = "") -> None:
    print(text, file=sys.stderr, flush=True)


def add_parsers(sub: Any, epilog: str) -> None:
    """Register ``demo`` (first: where a newcomer starts) and ``simulate`` on the CLI's
    subparsers."""
    demo = sub.add_parser(
        "demo",
        help="start here: the whole loop on simulated music search, live, with a report",
        description=textwrap.fill(
            "Start the embedded broker, the learning worker and the retrieval worker, then "
            "let simulated users search a generated music catalog. The bandit learns which "
            "retrieval plan (lexical, semantic, memory, popular, fresh, a pair of them, or all "
            "at once) to "
            "use per query; live progress compares its reward with static baselines on the "
            "same queries, and a report (Markdown + PNG plots + summary.json) shows cumulative "
            "reward, regret, recall@budget and the plans learned per query kind. Ctrl-C stops "
            "cleanly and still writes it.",
            width=92,
        ),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_flags(demo, queries=5000)

    simulate = sub.add_parser(
        "simulate",
        help="simulated users against the real loop; compare with static baselines",
        description=(__doc__ or "").replace("``", ""),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_flags(simulate, queries=3000)
    world = simulate.add_argument_group("world")
    world.add_argument(
        "--beir",
        type=Path,
        metavar="DIR",
        help="use an IR test collection in BEIR layout (corpus.jsonl, queries.jsonl, "
        "qrels/SPLIT.tsv) as catalog and queries instead of the music world",
    )
    world.add_argument(
        "--beir-split", default="test", metavar="NAME", help="qrels split to use (test)"
    )
    target = simulate.add_argument_group("target (default: start everything here)")
    target.add_argument(
        "--url",
        metavar="URL",
        help="drive this running ltrr serve (http://HOST:PORT) instead of starting one",
    )
    target.add_argument(
        "--broker",
        metavar="HOST:PORT[,...]",
        help="with --url: bootstrap servers, to publish new releases to the catalog",
    )
    target.add_argument(
        "--topic-prefix", default="ltrr.", metavar="TEXT", help="with --url: topic prefix (ltrr.)"
    )
    target.add_argument(
        "--strategies",
        default=STRATEGIES,
        metavar="LIST",
        help=f"with --url: the strategies that serve runs, for the union baseline ({STRATEGIES})",
    )
    target.add_argument(
        "--plan-total-budget",
        type=int,
        default=100,
        metavar="N",
        help="with --url: the candidate budget its plans share, for the union baseline (100)",
    )


def _add_run_flags(parser: argparse.ArgumentParser, *, queries: int) -> None:
    run = parser.add_argument_group("run")
    run.add_argument(
        "--queries", type=int, default=queries, metavar="N", help=f"queries to simulate ({queries})"
    )
    run.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="X",
        help="queries per second (0: as fast as served; 0)",
    )
    run.add_argument(
        "--seed", type=int, default=7, metavar="N", help="world, users and clicks seed (7)"
    )
    run.add_argument("--k", type=int, default=10, metavar="N", help="results shown per query (10)")
    run.add_argument(
        "--entities", type=int, default=2000, metavar="N", help="music world: catalog size (2000)"
    )
    run.add_argument(
        "--mix",
        metavar="SPEC",
        help="music world: query kinds and weights, e.g. exact=0.25,describe=0.2,misspell=0.2,"
        "head=0.15,fresh=0.2 (that is the default)",
    )
    run.add_argument(
        "--release-every",
        type=int,
        default=25,
        metavar="N",
        help="music world: release a new entity every N queries (25; 0: never)",
    )
    run.add_argument(
        "--broken-share",
        type=float,
        default=0.02,
        metavar="X",
        help="without --url: broken events to send straight into the topics, as a share of "
        "--queries, to show them dead-lettered with their reason (0.02)",
    )
    loop = parser.add_argument_group("learning (without --url)")
    loop.add_argument(
        "--plans",
        default="",
        metavar="SPEC",
        help="plans to serve, e.g. 'lexical:100;semantic:100;lexical:50+semantic:50' (empty: "
        "each strategy alone, every pair, and every strategy at once)",
    )
    loop.add_argument(
        "--vw-args",
        default=" ".join(SIM_VW_ARGS),
        metavar="ARGS",
        help=f"Vowpal Wabbit arguments of the learner ({' '.join(SIM_VW_ARGS)})",
    )
    loop.add_argument(
        "--default-plan",
        default=None,
        metavar="ID",
        help="plan served (1 - 0.2 of the time) before the first snapshot (default: every "
        "strategy at once; '' explores uniformly)",
    )
    loop.add_argument(
        "--history-features",
        action="store_true",
        help="add the query-strategy history features to the retrieval worker's decisions "
        "(off by default; see docs/simulation.md)",
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="without --url: the worker and serve logs (OUT/worker.log, OUT/serve.log) also get "
        "what the Kafka client libraries and Faust say",
    )
    run.add_argument(
        "--serve-start-timeout-s",
        type=float,
        default=SERVE_START_TIMEOUT_S,
        metavar="SECONDS",
        help="without --url: seconds the retrieval worker may take to start; its first start "
        f"on a catalog embeds every entity ({SERVE_START_TIMEOUT_S:g})",
    )
    run.add_argument(
        "--vector-cache-dir",
        type=Path,
        metavar="DIR",
        help="without --url: where the semantic strategy caches item vectors, so runs on the "
        "same catalog embed it once (OUT/cache)",
    )
    run.add_argument(
        "--out",
        type=Path,
        default=Path("ltrr-report"),
        metavar="DIR",
        help="where the report (report.md, PNGs, summary.json), logs and state go (./ltrr-report)",
    )


def parse_mix(spec: str | None) -> dict[str, float]:
    if not spec:
        return dict(DEFAULT_MIX)
    mix = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, weight = part.partition("=")
        if kind not in KINDS:
            raise LtrrError(f"--mix: unknown query kind {kind!r}; kinds: {', '.join(KINDS)}")
        try:
            mix[kind] = float(weight)
        except ValueError as exc:
            raise LtrrError(f"--mix: {part!r} is not KIND=WEIGHT") from exc
    if not any(v > 0 for v in mix.values()):
        raise LtrrError("--mix: give at least one kind a positive weight")
    return mix


def build_world(args: argparse.Namespace, now_ms: int) -> World:
    if getattr(args, "beir", None):
        return BeirWorld(args.beir, split=args.beir_split, seed=args.seed)
    config = WorldConfig(entities=args.entities, seed=args.seed, mix=parse_mix(args.mix))
    return MusicWorld(config, now_ms=now_ms)


def _plan_ids(spec: str) -> list[str]:
    return ["+".join(p.split(":")[0] for p in plan.split("+")) for plan in spec.split(";") if plan]


@dataclass
class Stack:
    """What runs the loop: the serve URL, a catalog publisher, and the local processes."""

    url: str
    publish: Callable[[Mapping[str, Any]], None] | None
    worker: WorkerProcess | None = None
    serve: ServeProcess | None = None
    #: Send raw bytes to a topic (by suffix: impressions, actions, ...) of the embedded broker.
    produce: Callable[[str, bytes, bytes], None] | None = None


@contextmanager
def embedded_stack(
    world: World,
    out: Path,
    cache: Path | None = None,
    *,
    plans: str = "",
    vw_args: str = "",
    default_plan: str | None = None,
    history: bool = False,
    verbose: bool = False,
    serve_start_timeout_s: float = SERVE_START_TIMEOUT_S,
) -> Iterator[Stack]:
    """Broker, learning worker and retrieval worker on this machine, stopped on exit;
    ``verbose``: their logs get what the client libraries say too; ``serve_start_timeout_s``:
    how long the retrieval worker may take to start (its first start embeds the catalog)."""
    from kafka import KafkaProducer

    from ltrr.streams.admin import create_topics
    from ltrr.streams.settings import Settings
    from ltrr.streams.topics import Topics
    from ltrr.testing.tansu import TansuBroker

    # The embedded broker keeps nothing between runs, so neither may the worker: state from a
    # previous run in the same --out would hold offsets of topics that no longer exist.
    shutil.rmtree(out / "state", ignore_errors=True)
    catalog_path = out / "catalog.jsonl"
    entities = world.catalog()
    catalog_path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in entities))
    with ExitStack() as stack:
        broker = stack.enter_context(TansuBroker())
        say(f"  broker    tansu on {broker.bootstrap}")
        settings = Settings(broker=broker.bootstrap, partitions=2)
        topics = Topics.from_settings(settings)
        create_topics(broker.bootstrap, topics.all())
        producer = KafkaProducer(
            bootstrap_servers=[broker.bootstrap], linger_ms=20, allow_auto_create_topics=False
        )
        stack.callback(producer.close)

        def publish(entity: Mapping[str, Any]) -> None:
            key = str(entity["id"]).encode()
            producer.send(topics.catalog.name, key=key, value=orjson.dumps(entity))

        for entity in entities:  # the worker's Q2E cold start reads the catalog topic
            publish(entity)
        producer.flush()

        common = ("--broker", broker.bootstrap, "--partitions", "2", *(("-v",) if verbose else ()))
        # A signing key of this run only, shared by its worker and serve (there is no
        # built-in key; the children do not inherit the caller's LTRR_* settings).
        keyed = {"LTRR_SNAPSHOT_KEY": secrets.token_hex(32)}
        names = STRATEGIES.split(",")
        plans = plans or simulation_plans(names)
        if default_plan is None:
            default_plan = "+".join(names) if "+".join(names) in _plan_ids(plans) else ""
        say("  worker    starting the learning loop (joins its consumer group)...")
        worker = WorkerProcess(
            *LOOP_FLAGS,
            *(("--vw-args", vw_args) if vw_args else ()),
            *common,
            "--data-dir",
            str(out / "state"),
            "--app-id",
            "ltrr-sim",
            log_path=out / "worker.log",
            env=keyed,
            inherit_settings=False,
        )
        stack.enter_context(worker)
        say(f"  worker    ready: {worker.url}/metrics (log {worker.log_path})")
        say(f"  serve     indexing {len(entities)} entities (embeds them once; cached after)...")
        serve = ServeProcess(
            *common,
            "--catalog-path",
            str(catalog_path),
            "--vector-cache-dir",
            str(cache or out / "cache"),
            "--strategies",
            STRATEGIES,
            "--plans",
            plans,
            *(("--default-plan", default_plan) if default_plan else ()),
            *(("--history-features", "true") if history else ()),
            log_path=out / "serve.log",
            ready_timeout_s=serve_start_timeout_s,
            env=keyed,
            inherit_settings=False,
        )
        try:
            stack.enter_context(serve)
        except LtrrError as exc:
            if "not ready within" not in str(exc):
                raise
            raise LtrrError(
                f"{exc}\nIts first start embeds all {len(entities)} entities (kept in "
                f"{cache or out / 'cache'} once that completes; an interrupted start keeps "
                f"nothing). On a busy machine that can take longer than "
                f"{serve_start_timeout_s:g} s: raise --serve-start-timeout-s, or run when the "
                "machine is quieter."
            ) from None
        say(f"  serve     ready: {serve.url}/search (log {serve.log_path})")

        def produce(suffix: str, key: bytes, value: bytes) -> None:
            producer.send(settings.topic_prefix + suffix, key=key, value=value)
            producer.flush()

        yield Stack(serve.url, publish, worker, serve, produce)


@contextmanager
def remote_stack(args: argparse.Namespace) -> Iterator[Stack]:
    if not args.broker:
        yield Stack(args.url, None)
        return
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=args.broker.split(","), linger_ms=20, allow_auto_create_topics=False
    )
    topic = args.topic_prefix + "catalog"

    def publish(entity: Mapping[str, Any]) -> None:
        producer.send(topic, key=entity["id"].encode(), value=orjson.dumps(entity))

    try:
        yield Stack(args.url, publish)
    finally:
        producer.close()


class Progress:
    """One live status line, and a plan-mix line every quarter of the run."""

    def __init__(self, queries: int, stack: Stack) -> None:
        self.queries = queries
        self.stack = stack
        self.quarter = 0
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.printed = 0

    def __call__(self, sim: Simulation) -> None:
        board = sim.board
        if board is None or not board.steps:
            return
        n = len(board)
        window = board.steps[-300:]
        recent = Scoreboard(board.plan_ids, board.singles, board.union_id, board.configured)
        recent.steps = list(window)
        means = {k: sum(v) / len(v) for k, v in recent.series().items()}
        singles = {k: v for k, v in means.items() if k in board.singles}
        best = max(singles, key=lambda k: singles[k]) if singles else LEARNED
        _, gap_recent = recent.gap_closed(recent.series())
        _, gap_run = board.gap_closed(board.series())
        rate = n / max(1e-9, time.monotonic() - self.started)
        line = (
            f"  {n:5d}/{self.queries} {rate:4.1f} q/s | reward/query, last {len(window)}: "
            f"learned {means[LEARNED]:.3f}  union {means.get(UNION, 0):.3f}  "
            f"{best} {means[best]:.3f}  oracle kind {means[ORACLE]:.3f} query "
            f"{means[QUERY_ORACLE]:.3f} | gap closed {_gap(gap_recent)} (run {_gap(gap_run)})"
            f" | model v{window[-1].model_version}"
        )
        if self.tty:
            width = shutil.get_terminal_size((120, 24)).columns - 1
            sys.stderr.write("\r" + line[:width] + "\x1b[K")
            sys.stderr.flush()
        elif n - self.printed >= max(1, self.queries // 20) or n == self.queries:
            self.printed = n
            say(line)
        if n * 4 // self.queries > self.quarter:
            self.quarter = n * 4 // self.queries
            if self.tty:
                sys.stderr.write("\n")
            for kind in sorted({s.kind for s in window}):
                chosen = Counter(s.plan for s in window if s.kind == kind)
                top = ", ".join(
                    f"{p} {c / sum(chosen.values()):.0%}" for p, c in chosen.most_common(2)
                )
                say(f"      {kind:9s} -> {top}")


def _gap(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, *, title: str) -> int:
    """Run a simulation and write its report; returns the exit code. SIGTERM is treated as
    Ctrl-C: the loop stops cleanly and the report is still written."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args, title=title)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, *, title: str) -> int:
    if args.queries < 1 or args.rate < 0 or args.k < 1 or not 0 <= args.broken_share <= 1:
        raise LtrrError("--queries and --k must be >= 1, --rate >= 0, --broken-share in [0, 1]")
    if not getattr(args, "serve_start_timeout_s", 1.0) > 0:
        raise LtrrError("--serve-start-timeout-s must be > 0")
    if getattr(args, "vw_args", ""):  # refused here, not by the worker once the stack runs
        check_vw_args(parse_vw_args(args.vw_args))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    now_ms = time.time_ns() // 1_000_000
    world = build_world(args, now_ms)
    url = getattr(args, "url", None)
    say(f"{title}: {args.queries} queries on the {world.name} world, seed {args.seed}")
    strategies = (getattr(args, "strategies", None) or STRATEGIES).split(",")
    budget = getattr(args, "plan_total_budget", 100)
    cache = getattr(args, "vector_cache_dir", None)
    with ExitStack() as stack:
        try:
            starting = (
                remote_stack(args)
                if url
                else embedded_stack(
                    world,
                    out,
                    cache,
                    plans=getattr(args, "plans", ""),
                    vw_args=getattr(args, "vw_args", ""),
                    default_plan=getattr(args, "default_plan", None),
                    history=getattr(args, "history_features", False),
                    verbose=getattr(args, "verbose", False),
                    serve_start_timeout_s=getattr(
                        args, "serve_start_timeout_s", SERVE_START_TIMEOUT_S
                    ),
                )
            )
            running = stack.enter_context(starting)
        except KeyboardInterrupt:
            say("\ninterrupted while starting: stopped")
            return 130
        broken = _send_broken(running, args) if running.produce is not None else Counter()
        backend = HttpBackend(running.url, running.publish)
        sim = Simulation(
            world,
            backend,
            strategies=[s.strip() for s in strategies if s.strip()],
            total_budget=budget,
            config=SimConfig(
                queries=args.queries,
                k=args.k,
                rate=args.rate,
                release_every=args.release_every,
                seed=args.seed,
            ),
        )
        say("  users     searching; live: expected reward per query of each policy")
        board = sim.run(Progress(args.queries, running))
        say("")
        if sim.stopped_early:
            say("interrupted: stopping the loop cleanly and writing the report")
        searches = len(board) if board is not None else 0
        pipeline: dict[str, Any] = {}
        if running.worker is not None:
            try:
                pipeline = _pipeline(running, broken, searches)
            except KeyboardInterrupt:
                say("interrupted again: skipping the loop's final accounting")
    if board is None:
        say("no query was simulated; nothing to report")
        return 1
    facts = {
        "world": world.name,
        "seed": args.seed,
        "wall_seconds": round(time.monotonic() - started, 1),
        "stopped_early": sim.stopped_early,
        **pipeline,
    }
    summary = write_report_safely(board, out, title, facts)
    _print_summary(summary, out)
    return 0 if summary.get("every_event_accounted_for", True) else 1


def write_report_safely(
    board: Scoreboard, out: Path, title: str, facts: Mapping[str, Any]
) -> dict[str, Any]:
    from ltrr.sim.report import write_report

    return write_report(board, out, title=title, facts=facts)


def _send_broken(stack: Stack, args: argparse.Namespace) -> Counter[str]:
    """Deliberately broken events (and the actions of broken impressions, which can never
    join), straight into the topics: the loop must dead-letter each with its reason."""
    from ltrr.sim.traffic import traffic

    share = getattr(args, "broken_share", 0.0)
    count = round(args.queries * share)
    expected: Counter[str] = Counter()
    if count <= 0 or stack.produce is None:
        return expected
    for message in traffic(count, seed=args.seed, broken_share=1.0):
        stack.produce(message.topic, message.key, message.value)
        expected[message.broken or "ok"] += 1
    return expected


def _pipeline(stack: Stack, broken: Counter[str], searches: int) -> dict[str, Any]:
    """Wait for the loop to reward every impression it was sent and dead-letter every broken
    event; report its counters (what a production dashboard shows)."""
    assert stack.worker is not None and stack.serve is not None
    deadline = time.monotonic() + 30
    served, samples = 0.0, scrape(stack.worker.url)
    while time.monotonic() < deadline:
        # The retrieval worker sends impressions in the background: read its count each time.
        served = total(scrape(stack.serve.url), "ltrr_impressions_logged_total", outcome="sent")
        samples = scrape(stack.worker.url)
        if (
            served >= searches
            and total(samples, "ltrr_rewards_total") >= served
            and total(samples, "ltrr_learner_examples_total", verdict="learned") >= served
            and total(samples, "ltrr_dlq_events_total") >= broken.total()
        ):
            break
        time.sleep(0.5)
    by_reason = {
        labels["reason"]: int(v) for name, labels, v in samples if name == "ltrr_dlq_events_total"
    }
    rewards = int(total(samples, "ltrr_rewards_total"))
    learned = int(total(samples, "ltrr_learner_examples_total", verdict="learned"))
    return {
        "impressions_logged": int(served),
        "rewards_joined": rewards,
        "examples_learned": learned,
        # Actions after their impression's window closed: kept as late rewards (not learned).
        "late_actions": int(total(samples, "ltrr_late_actions_total")),
        "broken_events_sent": dict(broken),
        "dead_lettered": by_reason,
        # ``served`` may exceed ``searches`` by one after Ctrl-C (a search answered, its step
        # not recorded); what must hold is one reward and one learned example per impression.
        "every_event_accounted_for": served >= searches
        and rewards == served
        and learned == served
        and by_reason == {k: v for k, v in broken.items() if v},
        "model_version_published": int(total(samples, "ltrr_model_version")),
    }


def _print_summary(summary: Mapping[str, Any], out: Path) -> None:
    mean, regret = summary["mean_reward"], summary["regret_vs"]
    say("summary (expected reward per query, same queries for every policy)")
    for name, value in mean.items():
        extra = "" if name == LEARNED else f"   regret of learned vs. it {regret[name]:+8.1f}"
        say(f"  {name:10s} {value:.4f}{extra}")
    say(
        f"  learned beats every static baseline: "
        f"{'yes' if summary['beats_every_static_baseline'] else 'NO'}; gap closed to the "
        f"per-query oracle: {_gap(summary['gap_closed'])} whole run, "
        f"{_gap(summary['last_quarter_gap_closed'])} last quarter, of a gap of "
        f"{headroom_text(summary.get('gap_headroom'))} / "
        f"{headroom_text(summary.get('last_quarter_gap_headroom'))} "
        f"(best static baseline "
        f"{summary['best_static_baseline']}; learned/per-kind oracle in the last quarter: "
        f"{summary['last_quarter_learned_over_oracle']})"
    )
    if "impressions_logged" in summary:
        dead = summary["dead_lettered"]
        say(
            f"  loop: {summary['impressions_logged']} impressions logged, "
            f"{summary['rewards_joined']} rewards joined, {summary['examples_learned']} learned, "
            f"{summary['late_actions']} late actions, model v{summary['model_version_published']}; "
            f"{sum(dead.values())} broken events dead-lettered "
            f"({', '.join(f'{k} {v}' for k, v in sorted(dead.items())) or 'none'})"
        )
        say(
            "  every event accounted for"
            if summary["every_event_accounted_for"]
            else "  MISMATCH between events sent and rewarded/dead-lettered: see worker.log"
        )
    say(f"  wall time {summary['wall_seconds']} s; report: {out / 'report.md'}")
