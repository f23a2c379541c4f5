"""Benchmark of the learning loop; prints one JSON object. Ratios are the result; absolute
numbers are context (they depend on what else the machine is doing).

Measured in one run, on the same examples:
  1. learner throughput, examples/s, in alternating rounds (min and max over rounds):
     * ``cli``: vowpal-wabbit-next's CLI driver, ``--dsjson`` over a file, same VW arguments;
     * ``plain``: ``DSJsonFormatParser.parse_json`` + ``learn_one`` per line;
     * ``ltrr``: the worker's learner (``Learners.learn`` with offsets, a checkpoint every
       1,000 examples as the worker does), the code behind ``ltrr learn-offline``;
     and ``ltrr / cli``, ``ltrr / plain``.
  2. (``--backlog N``, default 50000; 0 skips) end to end on a real broker: N impressions and
     their actions are produced first, then one ``ltrr worker`` starts on them; impressions/s
     until every reward is learned, orphaned actions, impressions closed with the default
     reward, the worker's peak RSS (VmHWM) and CPU seconds (impressions per CPU second is the
     steadier number when other processes share the machine).

  3. (``--open-windows N``; 0 skips) N impressions without actions held in open 1 h
     windows: the worker's peak RSS, its data dir per open impression, ingest rate.

Usage: python bench/learner.py [--examples 25000] [--rounds 3] [--backlog 50000]
                               [--broker tansu|kafka] [--open-windows 1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import vowpal_wabbit_next as vw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve import NAMES, synthetic_decisions  # noqa: E402

from ltrr.agents.learning import DEFAULT_VW_ARGS, Learners, workspace  # noqa: E402
from ltrr.retrieval.plans import default_plans  # noqa: E402
from ltrr.state.store import MemoryStore  # noqa: E402


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1)


def run_cli(path: Path, args: tuple[str, ...], n: int) -> float:
    started = time.perf_counter()
    vw.run_cli_driver([*args, "--dsjson", "-d", str(path), "--quiet"], onethread=True)
    return rate(n, time.perf_counter() - started)


def run_plain(lines: list[bytes], args: tuple[str, ...]) -> float:
    ws = workspace(args)
    parser = vw.DSJsonFormatParser(ws)
    started = time.perf_counter()
    for line in lines:
        ws.learn_one(parser.parse_json(line.decode()))
    return rate(len(lines), time.perf_counter() - started)


def run_ltrr(lines: list[bytes], args: tuple[str, ...]) -> float:
    learners = Learners(MemoryStore(), args)
    started = time.perf_counter()
    for offset, line in enumerate(lines):
        learners.learn(line, 0, offset)
        if offset % 1000 == 999:
            learners.checkpoint()
    learners.checkpoint()
    return rate(len(lines), time.perf_counter() - started)


def learner_throughput(n: int, rounds: int) -> dict[str, Any]:
    plans = default_plans(NAMES)
    lines, _ = synthetic_decisions(plans, random.Random(3), n)
    args = DEFAULT_VW_ARGS
    results: dict[str, list[float]] = {"cli": [], "plain": [], "ltrr": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rewards.json"
        path.write_bytes(b"\n".join(lines) + b"\n")
        for r in range(rounds):
            print(f"learner round {r + 1}/{rounds}", file=sys.stderr, flush=True)
            results["cli"].append(run_cli(path, args, n))
            results["plain"].append(run_plain(lines, args))
            results["ltrr"].append(run_ltrr(lines, args))
    best = {k: max(v) for k, v in results.items()}
    return {
        "examples": n,
        "plans": len(plans),
        "vw_args": list(args),
        "examples_per_s": {k: {"min": min(v), "max": max(v)} for k, v in results.items()},
        "ltrr_over_cli": round(best["ltrr"] / best["cli"], 3),
        "ltrr_over_plain": round(best["ltrr"] / best["plain"], 3),
        "plain_over_cli": round(best["plain"] / best["cli"], 3),
    }


PREFIX = "bench."


@contextmanager
def bench_broker(broker_kind: str) -> Iterator[tuple[str, Any, Path]]:
    """A fresh broker (tansu or Apache Kafka) with ltrr's topics under ``PREFIX`` (4
    partitions), a batching producer and a temporary directory: (bootstrap, producer, dir)."""
    from kafka import KafkaProducer

    from ltrr.streams.admin import create_topics
    from ltrr.streams.settings import Settings
    from ltrr.streams.topics import Topics
    from ltrr.testing.kafka import ApacheKafka
    from ltrr.testing.tansu import TansuBroker

    broker: Any = TansuBroker() if broker_kind == "tansu" else ApacheKafka()
    with tempfile.TemporaryDirectory() as tmp, broker:
        bootstrap = broker.bootstrap  # started by the with (a second start leaked a tansu)
        settings = Settings(broker=bootstrap, topic_prefix=PREFIX, partitions=4)
        create_topics(bootstrap, Topics.from_settings(settings).all())
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
        yield bootstrap, producer, Path(tmp)


def bench_worker(bootstrap: str, data: Path, worker_log: str | None, tmp: Path, *flags: str) -> Any:
    """An ``ltrr worker`` (not started) on the bench topics, 4 partitions, state in ``data``."""
    from ltrr.processes import WorkerProcess

    return WorkerProcess(
        "--broker",
        bootstrap,
        "--topic-prefix",
        PREFIX,
        "--partitions",
        "4",
        "--data-dir",
        str(data),
        *flags,
        log_path=Path(worker_log) if worker_log else tmp / "worker.log",
        env={"LTRR_SNAPSHOT_KEY": secrets.token_hex(32)},
    )


def end_to_end(
    n: int,
    broker_kind: str,
    learner_rate: float,
    worker_log: str | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    from ltrr.streams.scrape import scrape, total
    from tests.events import action, impression

    with bench_broker(broker_kind) as (bootstrap, producer, tmp):
        prefix = PREFIX
        rng = random.Random(9)
        start_ms = int(time.time() * 1000) - 600_000  # a backlog: the last ten minutes
        sent_actions = silent = 0
        print(f"producing {n} impressions and their actions", file=sys.stderr, flush=True)
        for i in range(n):
            iid = f"i{i}"
            ts = start_ms + i * 600_000 // n
            imp = impression(iid, timestamp_ms=ts, chosen=rng.randrange(5))
            key = iid.encode()
            producer.send(prefix + "impressions", key=key, value=orjson.dumps(imp))
            clicks = rng.choice([0, 1, 2, 3])
            silent += clicks == 0
            for j in range(clicks):
                act = action(f"{iid}-{j}", iid, timestamp_ms=ts + 1000 * (j + 1), type="click")
                producer.send(prefix + "actions", key=key, value=orjson.dumps(act))
                sent_actions += 1
        producer.flush()
        # One consumer group: the join partitions are split between the workers; the one
        # that owns the model's rewards partition learns (one model, one learner).
        group = [
            bench_worker(
                bootstrap,
                tmp / f"data{w}",
                f"{worker_log}.{w}" if worker_log and w else worker_log,
                tmp / f"w{w}" if w else tmp,
                "--reward-window-s",
                "5",
                "--join-tick-s",
                "0.5",
                "--event-delay-s",
                "5",
            )
            for w in range(workers)
        ]
        for w in range(1, workers):
            (tmp / f"w{w}").mkdir()
        started = time.perf_counter()
        peak = 0.0
        cpu = [0.0] * workers
        with contextlib.ExitStack() as running:
            for worker in group:  # started together: one rebalance, not one per worker
                worker.start(wait=False)
                running.callback(worker.stop)
            for worker in group:  # serving metrics (readiness needs partitions assigned)
                _wait_for_metrics(worker)
            learned = orphans = defaults = 0.0
            #: Seconds from the workers' start until all input was consumed, the first reward
            #: was learned and every impression's reward was sent.
            phases: dict[str, float] = {}
            while learned < n and time.perf_counter() - started < 3600:
                time.sleep(2)
                scraped = [scrape(worker.url) for worker in group]
                learned = sum(
                    total(x, "ltrr_learner_examples_total", verdict="learned") for x in scraped
                )
                for w, worker in enumerate(group):
                    pid = worker.proc.pid if worker.proc else 0
                    peak = max(peak, _vm_hwm_mb(pid))
                    cpu[w] = _cpu_s(pid) or cpu[w]
                consumed = sum(total(x, "ltrr_events_consumed_total") for x in scraped)
                rewarded = sum(total(x, "ltrr_rewards_total") for x in scraped)
                orphans = sum(total(x, "ltrr_orphan_actions_total") for x in scraped)
                defaults = sum(
                    total(x, "ltrr_join_events_total", outcome="closed_default") for x in scraped
                )
                at = round(time.perf_counter() - started, 1)
                if consumed >= n + sent_actions and "ingested" not in phases:
                    phases["ingested"] = at
                if learned > 0 and "first_learned" not in phases:
                    phases["first_learned"] = at
                if rewarded >= n and "rewarded" not in phases:
                    phases["rewarded"] = at
                print(
                    f"{at:7.1f} s: consumed {consumed:.0f}/{n + sent_actions}, rewards "
                    f"{rewarded:.0f}, learned {learned:.0f}/{n}, worker cpu {sum(cpu):.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            elapsed = time.perf_counter() - started
        per_s = rate(int(learned), elapsed)
        return {
            "broker": broker_kind,
            "workers": workers,
            "impressions": n,
            "actions": sent_actions,
            "learned": int(learned),
            "seconds": round(elapsed, 1),
            "impressions_per_s": per_s,
            "over_learner_alone": round(per_s / learner_rate, 3),
            "orphaned_actions": int(orphans),
            "closed_with_default_reward": int(defaults),
            "impressions_without_actions": silent,  # the default reward is right for these
            "worker_peak_rss_mb": round(peak, 1),  # the largest worker's
            # CPU time of the worker processes: steadier than wall time on a shared machine.
            "worker_cpu_s": round(sum(cpu), 1),
            "impressions_per_cpu_s": rate(int(learned), sum(cpu)) if sum(cpu) else None,
            "phases_s": phases,
        }


def open_windows(n: int, broker_kind: str, worker_log: str | None = None) -> dict[str, Any]:
    """``n`` impressions without actions, all inside one open reward window (1 h): the
    worker's peak RSS, its join state on disk per open impression, and its ingest rate."""
    from ltrr.streams.scrape import scrape, total
    from tests.events import impression

    with bench_broker(broker_kind) as (bootstrap, producer, tmp):
        prefix = PREFIX
        start_ms = int(time.time() * 1000)
        print(f"producing {n} impressions (no actions)", file=sys.stderr, flush=True)
        for i in range(n):
            iid = f"i{i}"
            imp = impression(iid, timestamp_ms=start_ms + i * 60_000 // n, chosen=i % 5)
            producer.send(prefix + "impressions", key=iid.encode(), value=orjson.dumps(imp))
            if i % 100_000 == 99_999:
                print(f"  {i + 1} produced", file=sys.stderr, flush=True)
        producer.flush()
        data = tmp / "data"
        worker = bench_worker(bootstrap, data, worker_log, tmp, "--reward-window-s", "3600")
        started = time.perf_counter()
        peak = cpu = consumed = 0.0
        with worker:
            while consumed < n and time.perf_counter() - started < 7200:
                time.sleep(2)
                metrics = scrape(worker.url)
                consumed = total(metrics, "ltrr_join_events_total", outcome="opened")
                pid = worker.proc.pid if worker.proc else 0
                peak = max(peak, _vm_hwm_mb(pid))
                cpu = _cpu_s(pid) or cpu
                print(
                    f"{time.perf_counter() - started:7.1f} s: opened {consumed:.0f}/{n}, "
                    f"rss peak {peak:.0f} MB, worker cpu {cpu:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            elapsed = time.perf_counter() - started
            open_now = total(scrape(worker.url), "ltrr_join_state_entries")
            size = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
        return {
            "broker": broker_kind,
            "impressions": n,
            "opened": int(consumed),
            "open_deadlines": int(open_now),
            "seconds": round(elapsed, 1),
            "ingest_impressions_per_s": rate(int(consumed), elapsed),
            "worker_peak_rss_mb": round(peak, 1),
            "worker_cpu_s": round(cpu, 1),
            "data_dir_mb": round(size / 2**20, 1),
            "data_dir_bytes_per_open_impression": round(size / max(consumed, 1)),
        }


def _wait_for_metrics(worker: Any, timeout_s: float = 120.0) -> None:
    """Wait until ``worker`` serves its metrics (``Child.wait_ready``: raises if it exits)."""
    from ltrr.streams.scrape import scrape

    def serving() -> bool:
        try:
            scrape(worker.url)
        except Exception:
            return False
        return True

    worker.child.wait_ready(
        serving,
        timeout_s,
        lambda why: RuntimeError(f"a bench worker {why}; its log ends:\n{worker.child.log_tail()}"),
        interval_s=0.3,
    )


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=25_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=50_000, help="0 skips end to end")
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu")
    parser.add_argument(
        "--open-windows",
        type=int,
        default=0,
        help="also hold this many impressions in open (1 h) windows: peak RSS, join state "
        "on disk per open impression, ingest rate (the issue's figure is 1000000; 0 skips)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="ltrr workers in one group for the catch-up (join partitions split between "
        "them; one learns)",
    )
    parser.add_argument(
        "--worker-log", help="keep the worker's log in this file (worker w > 0: FILE.w)"
    )
    args = parser.parse_args()
    result: dict[str, Any] = {"learner": learner_throughput(args.examples, args.rounds)}
    if args.backlog:
        best = result["learner"]["examples_per_s"]["ltrr"]["max"]
        result["end_to_end"] = end_to_end(
            args.backlog, args.broker, best, args.worker_log, args.workers
        )
    if args.open_windows:
        result["open_windows"] = open_windows(args.open_windows, args.broker, args.worker_log)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
