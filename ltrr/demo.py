"""``ltrr demo``: the whole pipeline on one machine with one command, no Docker.

Today it runs what exists: the embedded broker, the learning-loop worker, and seeded traffic
(a share of it deliberately broken) produced through Kafka, with live progress and a summary
that checks every event was accepted or dead-lettered with the right reason. The bandit,
retrieval worker and simulator join it as they land.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from kafka import KafkaProducer

from ltrr.processes import WorkerProcess
from schemas.exceptions import LtrrError
from sim.traffic import traffic
from streams.admin import create_topics
from streams.brokers.tansu import TansuBroker
from streams.scrape import scrape, total
from streams.settings import Settings
from streams.topics import Topics

#: Short windows and frequent snapshots so a few-minute demo shows the whole loop.
DEMO_LOOP_FLAGS = (
    "--reward-window-s",
    "2",
    "--join-tick-s",
    "0.2",
    "--checkpoint-interval-s",
    "1",
    "--snapshot-interval-s",
    "2",
)


def run_demo(events: int, rate: float, seed: int, broken_share: float, out_dir: Path) -> int:
    """Run the demo; returns the process exit code (0 when every event is accounted for)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    say(f"ltrr demo: {events} impressions at {rate:g}/s, {broken_share:.0%} broken, seed {seed}")
    with TansuBroker() as broker:
        say(f"  broker    tansu on {broker.bootstrap}")
        settings = Settings(broker=broker.bootstrap, partitions=2, data_dir=str(out_dir / "state"))
        create_topics(broker.bootstrap, Topics.from_settings(settings).all())
        worker = WorkerProcess(
            *DEMO_LOOP_FLAGS,
            "--broker",
            broker.bootstrap,
            "--partitions",
            "2",
            "--data-dir",
            settings.data_dir,
            "--app-id",
            "ltrr-demo",
            log_path=out_dir / "worker.log",
        )
        say("  worker    starting (joins its consumer group; a few seconds)...")
        with worker:
            say(f"  worker    ready; metrics at {worker.url}/metrics, log {worker.log_path}")
            expected = _produce_and_watch(
                broker.bootstrap, settings, worker, events, rate, seed, broken_share
            )
            return _report(worker, expected)


def _produce_and_watch(
    bootstrap: str,
    settings: Settings,
    worker: WorkerProcess,
    events: int,
    rate: float,
    seed: int,
    broken_share: float,
) -> Counter[str]:
    producer = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=5)
    expected: Counter[str] = Counter()
    started = time.monotonic()
    last = 0.0
    impressions = 0
    try:
        for msg in traffic(events, seed=seed, broken_share=broken_share):
            producer.send(settings.topic_prefix + msg.topic, key=msg.key, value=msg.value)
            expected[f"{msg.topic}:{msg.broken or 'ok'}"] += 1
            if msg.topic == "impressions":
                impressions += 1
                pause = started + impressions / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            if time.monotonic() - last > 0.5:
                last = time.monotonic()
                _progress(worker, expected)
        producer.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _settled(worker, expected):
            _progress(worker, expected)
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("\ninterrupted: stopping cleanly")
        producer.flush(timeout=5)
    finally:
        producer.close()
    _progress(worker, expected)
    sys.stderr.write("\n")
    return expected


def _expectations(expected: Counter[str]) -> tuple[int, int, int]:
    """(events the ingest must accept, dead letters, rewards) for what was produced."""
    dead = sum(n for key, n in expected.items() if not key.endswith(":ok"))
    orphans = sum(n for key, n in expected.items() if key.endswith(":orphan_action"))
    return expected.total() - dead + orphans, dead, expected["impressions:ok"]


def _settled(worker: WorkerProcess, expected: Counter[str]) -> bool:
    samples = scrape(worker.url)
    accepted, dead, rewards = _expectations(expected)
    return (
        total(samples, "ltrr_events_consumed_total", outcome="accepted") >= accepted
        and total(samples, "ltrr_dlq_events_total") >= dead
        and total(samples, "ltrr_rewards_total") >= rewards
        and total(samples, "ltrr_learner_examples_total", verdict="learned") >= rewards
    )


def _progress(worker: WorkerProcess, expected: Counter[str]) -> None:
    samples = scrape(worker.url)
    accepted = total(samples, "ltrr_events_consumed_total", outcome="accepted")
    dlq = total(samples, "ltrr_dlq_events_total")
    rewards = total(samples, "ltrr_rewards_total")
    learned = total(samples, "ltrr_learner_examples_total", verdict="learned")
    version = total(samples, "ltrr_model_version")
    sys.stderr.write(
        f"\r  progress  produced {expected.total():6d}  accepted {accepted:6.0f}  "
        f"dead-lettered {dlq:4.0f}  rewards {rewards:5.0f}  learned {learned:5.0f}  "
        f"model v{version:.0f}"
    )
    sys.stderr.flush()


def _report(worker: WorkerProcess, expected: Counter[str]) -> int:
    samples = scrape(worker.url)
    want_accepted, want_dead, want_rewards = _expectations(expected)
    accepted = total(samples, "ltrr_events_consumed_total", outcome="accepted")
    by_reason = {
        labels["reason"]: v for name, labels, v in samples if name == "ltrr_dlq_events_total"
    }
    rewards = total(samples, "ltrr_rewards_total")
    learned = total(samples, "ltrr_learner_examples_total", verdict="learned")
    say("\nsummary")
    say(f"  events produced          {expected.total():6d}")
    say(f"  accepted by the worker   {accepted:6.0f}   (expected {want_accepted})")
    say(f"  dead-lettered            {sum(by_reason.values()):6.0f}   (expected {want_dead})")
    for reason, count in sorted(by_reason.items()):
        say(f"    {reason:28s} {count:4.0f}")
    say(f"  rewards (1 per impression) {rewards:4.0f}   (expected {want_rewards})")
    say(f"  examples learned         {learned:6.0f}")
    say(f"  model version published  {total(samples, 'ltrr_model_version'):6.0f}")
    loss = total(samples, "ltrr_learner_average_loss")
    say(f"  progressive loss (IPS)   {loss:6.3f}")
    complete = (
        accepted == want_accepted
        and sum(by_reason.values()) == want_dead
        and rewards == want_rewards
        and learned == want_rewards
    )
    say("  every event accounted for" if complete else "  MISMATCH: see the worker log")
    return 0 if complete else 1


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main_demo(events: int, rate: float, seed: int, broken_share: float, out: str | None) -> int:
    out_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="ltrr-demo-"))
    try:
        return run_demo(events, rate, seed, broken_share, out_dir)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except LtrrError as exc:
        say(f"ltrr demo: error: {exc}")
        return 2
