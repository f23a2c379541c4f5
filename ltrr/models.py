"""``ltrr model``: list, export, publish (roll back) and reset the models on the snapshots topic.

The snapshots topic holds the truth about each model: retrieval workers serve its newest
verified version, and learning workers adopt a version newer than their own
(``ltrr.agents.adoption``). So rolling back is publishing an earlier model — one saved with
``ltrr model export``, or trained with ``ltrr learn-offline`` — as the model's *next* version,
signed with the snapshot key; resetting is publishing an untrained model the same way. The
learner owning the model adopts it at its next reward and goes on learning from it.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ltrr.schemas.exceptions import LtrrError
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics

if TYPE_CHECKING:  # the CLI imports this module to build its parser: keep VW out of that
    from ltrr.schemas.snapshot import Loaded


class ModelCommandError(LtrrError):
    """A model command cannot do what was asked; the message says what to fix."""


@dataclass
class TopicModels:
    """What the snapshots topic holds: the newest verified snapshot of each model, the newest
    authentic version of each (which the next version must exceed), and refusals."""

    latest: dict[str, Loaded] = field(default_factory=dict)
    newest_version: dict[str, int] = field(default_factory=dict)
    #: ``(epoch, version)`` of each model's newest authentic header.
    newest: dict[str, tuple[int, int]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)


def read_models(settings: Settings, timeout_s: float = 60.0) -> TopicModels:
    """Read the whole snapshots topic and verify every snapshot as a retrieval worker does."""
    from ltrr.schemas.snapshot import Loaded, Rejected, SnapshotAssembler
    from ltrr.streams.exceptions import BrokerError
    from ltrr.streams.follow import read_records
    from ltrr.streams.security import aiokafka_kwargs

    topic = Topics.from_settings(settings).snapshots.name
    try:
        records = read_records(
            settings.broker,
            topic,
            timeout_s=timeout_s,
            max_bytes=settings.max_message_bytes + 1024 * 1024,
            security=aiokafka_kwargs(settings),
        )
    except BrokerError as exc:
        raise ModelCommandError(str(exc)) from exc
    assembler = SnapshotAssembler(
        settings.verification_keys(), max_model_bytes=settings.max_model_bytes
    )
    found = TopicModels()
    for record in records:
        result = assembler.feed(record.key, record.value)
        if isinstance(result, Loaded):
            found.latest[result.header["model"]] = result
        elif isinstance(result, Rejected) and result.reason != "stale_version":
            found.refused[result.reason] = found.refused.get(result.reason, 0) + 1
        if record.key is not None and b"/" not in record.key:
            name = record.key.decode("utf-8", "replace")
            stamp = assembler.newest(name)
            if stamp is not None:
                found.newest_version[name] = stamp[1]
                found.newest[name] = stamp
    return found


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _summary(loaded: Loaded) -> dict[str, Any]:
    h = loaded.header
    return {
        "model": h["model"],
        "version": h["version"],
        "examples_learned": h["examples_learned"],
        "created": _iso(h["created_ms"]),
        "size_bytes": h["size_bytes"],
        "sha256": h["sha256"],
        "key_id": h["signature"]["key_id"],
        "vw_args": h["vw_args"],
    }


def _refusal_hint(found: TopicModels) -> str:
    if not found.refused:
        return ""
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(found.refused.items()))
    return f" (refused: {why}; is LTRR_SNAPSHOT_KEY right?)"


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    found = read_models(settings)
    rows = [_summary(found.latest[name]) for name in sorted(found.latest)]
    if args.json:
        print(orjson.dumps({"models": rows, "refused": found.refused}).decode())
        return 0
    if not rows:
        print(f"no verified snapshot on the snapshots topic{_refusal_hint(found)}")
        return 0
    print(f"{'model':<16} {'version':>7} {'examples':>10} {'created':<20} {'bytes':>9}  sha256")
    for r in rows:
        print(
            f"{r['model']:<16} {r['version']:>7} {r['examples_learned']:>10} "
            f"{r['created']:<20} {r['size_bytes']:>9}  {r['sha256'][:16]}"
        )
    if found.refused:
        print(f"refused: {found.refused}")
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    found = read_models(settings)
    loaded = found.latest.get(args.model)
    if loaded is None:
        raise ModelCommandError(
            f"no verified snapshot of model {args.model!r}{_refusal_hint(found)}; "
            f"models found: {', '.join(sorted(found.latest)) or 'none'}"
        )
    out: Path = args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(loaded.model_bytes)
    sidecar = out.with_name(out.name + ".json")
    sidecar.write_bytes(orjson.dumps(loaded.header, option=orjson.OPT_INDENT_2))
    print(orjson.dumps({**_summary(loaded), "output": str(out), "header": str(sidecar)}).decode())
    return 0


def publish_model(
    settings: Settings,
    model: str,
    model_bytes: bytes,
    examples: int,
    *,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    security: Mapping[str, Any] | None = None,
    new_epoch: bool = False,
) -> dict[str, Any]:
    """Sign and produce ``model_bytes`` as the next version of ``model``; returns a summary.

    ``new_epoch``: publish version 1 of the next epoch instead, which every worker takes as
    newer than any version of the current epoch (for when the versions cannot go on, e.g. a
    huge version was published). The model must load in Vowpal Wabbit with the learner's
    arguments (``vw_args``), or the learner could not adopt it.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from ltrr.agents.learning import LearnerError, workspace
    from ltrr.schemas.snapshot import MAX_VERSION, encode_snapshot, stamp_of
    from ltrr.streams.security import kafka_python_kwargs

    args = settings.model_vw_args()
    try:
        workspace(args, model_bytes)
    except LearnerError as exc:
        raise ModelCommandError(
            f"the model does not load with the learner's arguments: {exc}. Give the "
            "--vw-args / LTRR_VW_ARGS the workers use"
        ) from exc
    found = read_models(settings)
    previous = found.latest.get(model)
    previous_stamp = stamp_of(previous.header) if previous else (0, 0)
    epoch, newest = max(found.newest.get(model, (0, 0)), previous_stamp)
    if new_epoch:
        epoch, newest = epoch + 1, 0
    version = newest + 1
    if version > MAX_VERSION:
        raise ModelCommandError(
            f"{model} is at version {newest}, the last one; publish with --new-epoch"
        )
    previous_chunks = previous.header.get("chunks", {}).get("count", 0) if previous else 0
    messages = encode_snapshot(
        model=model,
        version=version,
        vw_args=list(args),
        model_bytes=model_bytes,
        examples_learned=examples,
        offsets=[],  # an operator's model claims to cover no rewards
        created_ms=now_ms(),
        key_id=settings.snapshot_key_id,
        key=settings.snapshot_key.encode(),
        max_message_bytes=settings.max_message_bytes,
        previous_chunks=previous_chunks if previous else 0,
        previous_version=previous.header["version"] if previous else None,
        epoch=epoch,
        previous_epoch=previous_stamp[0],
    )
    topic = Topics.from_settings(settings).snapshots.name
    try:
        producer = KafkaProducer(
            bootstrap_servers=settings.broker,
            acks="all",
            allow_auto_create_topics=False,
            max_request_size=settings.max_message_bytes,
            **(security if security is not None else kafka_python_kwargs(settings)),
        )
        try:
            for key, value in messages:
                producer.send(topic, key=key, value=value).get(timeout=60)
        finally:
            producer.close(timeout=30)
    except KafkaError as exc:
        raise ModelCommandError(
            f"publishing to {topic} on {settings.broker} failed: {exc}"
        ) from exc
    return {
        "model": model,
        "epoch": epoch,
        "version": version,
        "replaces_version": previous.header["version"] if previous else None,
        "examples_learned": examples,
        "size_bytes": len(model_bytes),
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "key_id": settings.snapshot_key_id,
    }


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.file
    try:
        model_bytes = path.read_bytes()
    except OSError as exc:
        raise ModelCommandError(f"cannot read model file {path}: {exc}") from exc
    examples = args.examples
    sidecar = path.with_name(path.name + ".json")
    if examples is None and sidecar.exists():  # written by ltrr model export
        try:
            examples = int(orjson.loads(sidecar.read_bytes())["examples_learned"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ModelCommandError(f"{sidecar} is not an exported snapshot header: {exc}") from exc
    report = publish_model(
        settings, args.model, model_bytes, examples or 0, new_epoch=args.new_epoch
    )
    print(orjson.dumps({**report, "file": str(path)}).decode())
    return 0


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    from ltrr.agents.learning import workspace

    untrained = bytes(workspace(settings.model_vw_args()).serialize())
    report = publish_model(settings, args.model, untrained, 0, new_epoch=args.new_epoch)
    print(orjson.dumps(report).decode())
    return 0


HELP = """\
The snapshots topic holds each model's versions; retrieval workers serve the newest verified
one and the learning worker that owns a model adopts a newer version than its own at its next
reward, then goes on learning from it. So:

  ltrr model list                                what is served now
  ltrr model export --model default -o good.vw   keep a model you trust (+ good.vw.json)
  ltrr model publish --model default good.vw     roll back: republish it as the next version
  ltrr model reset --model default               start the model over (untrained, uniform)

Newer means a greater (epoch, version). publish and reset take --new-epoch to publish version 1
of the next epoch, newer than every version of the current one: for when versions cannot go on
(e.g. a huge version was signed by mistake). The learner adopts it and counts on from there.

Commands sign with LTRR_SNAPSHOT_KEY / LTRR_SNAPSHOT_KEY_ID and verify with those plus
LTRR_SNAPSHOT_KEYS_ACCEPTED, as the workers do. publish and reset check that the model loads
with the workers' Vowpal Wabbit arguments (--vw-args / LTRR_VW_ARGS).
"""


def add_parser(
    sub: Any,
    add_common: Callable[[argparse.ArgumentParser], None],
    add_security: Callable[[argparse.ArgumentParser], None],
) -> None:
    model = sub.add_parser(
        "model",
        help="list, export, roll back (publish) or reset models on the snapshots topic",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    def action(name: str, text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=text, description=text)
        add_common(p)
        p.add_argument("--snapshot-key-id", metavar="ID", help="signing/verification key name (k1)")
        add_security(p)
        return p

    listing = action("list", "the newest verified snapshot of every model")
    listing.add_argument("--json", action="store_true", help="print JSON")
    export = action("export", "write the newest verified model to a file (+ FILE.json header)")
    export.add_argument("--model", default="default", metavar="NAME", help="model key (default)")
    export.add_argument(
        "-o", "--output", type=Path, required=True, metavar="FILE", help="model file to write"
    )
    publish = action(
        "publish",
        "publish a VW model file as the model's next version (a rollback, or a model "
        "trained with ltrr learn-offline)",
    )
    publish.add_argument(
        "file", type=Path, metavar="FILE", help="VW model file (ltrr model export output)"
    )
    publish.add_argument("--model", default="default", metavar="NAME", help="model key (default)")
    publish.add_argument(
        "--examples",
        type=int,
        metavar="N",
        help="examples the model learned (default: from FILE.json if present, else 0)",
    )
    reset = action("reset", "publish an untrained model as the model's next version")
    reset.add_argument("--model", default="default", metavar="NAME", help="model key (default)")
    for p in (publish, reset):
        p.add_argument(
            "--vw-args", metavar="ARGS", help="the workers' Vowpal Wabbit arguments (LTRR_VW_ARGS)"
        )
    for p in (publish, reset):
        p.add_argument(
            "--new-epoch",
            action="store_true",
            help="publish version 1 of the next epoch: newer than any version of the current one",
        )


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "list": cmd_list,
    "export": cmd_export,
    "publish": cmd_publish,
    "reset": cmd_reset,
}


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return COMMANDS[args.model_command](args, settings)
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        return 0
