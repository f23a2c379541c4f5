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

  3. (``--live RATE [RATE ...]``) live: impressions and their clicks produced as they happen
     at each rate in turn (``--live-level-s`` seconds each) to one running worker, raised
     until the worker falls behind: per level produced and learned per second, the reward
     latency at its middle and end, whether it kept up, the worker's CPU share and peak RSS;
     the highest rate kept up.

  4. (``--open-windows N``; 0 skips) N impressions without actions held in open 1 h
     windows: the worker's peak RSS, its data dir per open impression, ingest rate.

Usage: python bench/learner.py [--examples 25000] [--rounds 3] [--backlog 50000]
                               [--broker tansu|kafka] [--open-windows 1000000]
                               [--live 250 500 1000 2000 [--live-level-s 20]]
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


def _signal_reward(results: dict[str, list[Any]], plan: Any, rng: random.Random) -> float:
    """A reward with something to learn: 1 with probability 0.8 when the chosen plan draws
    from the strategy with the highest top score for this query, else with 0.2."""
    return 1.0 if rng.random() < _chance(results, plan) else 0.0


def _chance(results: dict[str, list[Any]], plan: Any) -> float:
    """``_signal_reward``'s probability of a reward for ``plan``."""
    return 0.8 if _best(results) in plan.strategies else 0.2


def _policy_value(
    ws: vw.Workspace, lines: list[bytes], results: list[Any], plans: list[Any]
) -> float:
    """Expected reward (``_signal_reward``'s probabilities) of ``ws``'s most probable plan on
    held-out decisions."""
    parser = vw.DSJsonFormatParser(ws)
    value = 0.0
    for line, found in zip(lines, results, strict=True):
        chosen = max(ws.predict_one(parser.parse_json(line.decode())), key=lambda ap: ap[1])[0]
        value += _chance(found, plans[chosen])
    return round(value / max(1, len(lines)), 4)


def _learn(ws: vw.Workspace, lines: list[bytes]) -> None:
    """Learn ``lines`` into ``ws`` through the worker's core path (``DSJsonLearner``)."""
    from ltrr.agents.vwcore import DSJsonLearner

    learner = DSJsonLearner(ws)
    for line in lines:
        learner.predict_then_learn(learner.parse(line))


def _shard(conn: Any, args: tuple[str, ...]) -> None:
    """A learner process of ``delta_merge``: receives its partition's lines once, then per
    round the base model and how many lines to learn; answers with the model it derived."""
    lines: list[bytes] = conn.recv()
    conn.send(len(lines))  # ready: imported and holding its partition
    at = 0
    while (msg := conn.recv()) is not None:
        base, count = msg
        ws = workspace(args, base)
        started = time.perf_counter()
        _learn(ws, lines[at : at + count])
        at += count
        conn.send((ws.serialize(), time.perf_counter() - started))


def delta_merge(n: int, shards: int, every: int) -> dict[str, Any]:
    """Learners on ``shards`` partitions of one model (one process each) merging Vowpal Wabbit
    deltas every ``every`` lines per shard (``calculate_delta`` / ``merge_deltas`` /
    ``apply_delta``), against one learner on the same lines: examples/s, and the expected
    reward of each model's greedy plan on held-out decisions whose reward can be learned
    (``_signal_reward``; a uniform choice and the best choice bound it)."""
    import multiprocessing

    plans = default_plans(NAMES)
    found: list[Any] = []
    lines, _ = synthetic_decisions(plans, random.Random(5), n + 2000, _signal_reward, found)
    train, held, held_found = lines[:n], lines[n:], found[n:]
    args = DEFAULT_VW_ARGS
    started = time.perf_counter()
    single = workspace(args)
    _learn(single, train)
    single_rate = rate(n, time.perf_counter() - started)

    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for s in range(shards):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_shard, args=(theirs, args), daemon=True)
        proc.start()
        mine.send(train[s::shards])  # the shard's partition, as its consumer would read it
        pipes.append(mine)
        procs.append(proc)
    for pipe in pipes:
        pipe.recv()
    base = workspace(args)
    rounds = 0
    merge_s = learn_s = 0.0
    started = time.perf_counter()
    per_shard = -(-n // shards)
    for _ in range(-(-per_shard // every)):
        blob = base.serialize()
        for pipe in pipes:
            pipe.send((blob, every))
        answers = [pipe.recv() for pipe in pipes]
        learn_s += max(seconds for _, seconds in answers)
        derived = [workspace(args, blob) for blob, _ in answers]
        t0 = time.perf_counter()
        merged = vw.merge_deltas([vw.calculate_delta(base, ws) for ws in derived])
        base = vw.apply_delta(base, merged)
        merge_s += time.perf_counter() - t0
        rounds += 1
    merged_rate = rate(n, time.perf_counter() - started)
    for pipe, proc in zip(pipes, procs, strict=True):
        pipe.send(None)
        proc.join(10)
    uniform = round(
        sum(sum(_chance(f, p) for p in plans) / len(plans) for f in held_found) / len(held_found),
        4,
    )
    return {
        "examples": n,
        "shards": shards,
        "lines_per_shard_per_merge": every,
        "merges": rounds,
        "examples_per_s": {"one_learner": single_rate, "merged_shards": merged_rate},
        "merged_over_one": round(merged_rate / single_rate, 3),
        "merge_s_total": round(merge_s, 2),
        #: Seconds the slowest shard spent learning, summed over rounds (the rest of the wall
        #: time is moving models between processes and merging).
        "shard_learn_s_total": round(learn_s, 2),
        "wall_s": round(n / merged_rate, 2),
        "held_out_value": {
            "uniform": uniform,
            "one_learner": _policy_value(single, held, held_found, plans),
            "merged_shards": _policy_value(base, held, held_found, plans),
            "best": 0.8,
        },
    }


def _best(results: dict[str, list[Any]]) -> str:
    tops = {name: c[0].score for name, c in results.items() if c}
    return max(tops, key=lambda name: tops[name]) if tops else ""


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


#: Live levels: the reward window, the join tick and the event delay of the worker (short, so a
#: reward is learned seconds after its impression and falling behind shows within a level).
LIVE_WINDOW_S, LIVE_TICK_S, LIVE_DELAY_S = 3.0, 0.5, 2.0


def live(
    rates: list[int], level_s: float, broker_kind: str, worker_log: str | None = None
) -> dict[str, Any]:
    """Impressions (and 0-3 clicks each, 0.5-2 s later) produced *as they happen* at a fixed
    rate to one running worker, the rate raised level by level until the worker falls behind.
    Per level: impressions/s offered and produced, rewards learned per second over the
    level's second half, the reward latency at its middle and end (now minus the event time
    of the newest impression whose reward was learned; the floor is window + event delay),
    whether the worker kept up (latency under window + delay + 5 s and growing by less than
    2 s over the second half), the worker's CPU share and peak RSS."""
    import heapq

    from ltrr.streams.scrape import scrape, total
    from tests.events import action, impression

    with bench_broker(broker_kind) as (bootstrap, producer, tmp):
        worker = bench_worker(
            bootstrap, tmp / "data", worker_log, tmp,
            "--reward-window-s", str(LIVE_WINDOW_S),
            "--join-tick-s", str(LIVE_TICK_S),
            "--event-delay-s", str(LIVE_DELAY_S),
        )  # fmt: skip
        rng = random.Random(11)
        sent: list[float] = []  # event time (s) of every impression produced, in order
        due: list[tuple[float, int, bytes, bytes]] = []  # (wall time, seq, key, action)
        levels: list[dict[str, Any]] = []
        peak = 0.0
        bound = LIVE_WINDOW_S + LIVE_DELAY_S + 5.0
        with worker:
            _wait_for_metrics(worker)
            pid = worker.proc.pid if worker.proc else 0

            def learned_now(scraped: list[Any]) -> tuple[float, float]:
                """(rewards learned, reward latency in seconds) from a scrape of the worker."""
                learned = total(scraped, "ltrr_learner_examples_total", verdict="learned")
                newest = sent[min(int(learned), len(sent)) - 1] if learned >= 1 else sent[0]
                return learned, time.time() - newest

            for offered in rates:
                print(f"live level: {offered} impressions/s for {level_s:g} s", file=sys.stderr,
                      flush=True)  # fmt: skip
                begun = time.perf_counter()
                cpu0 = _cpu_s(pid)
                first = len(sent)
                half: tuple[float, float, float] | None = None  # (at, learned, latency)
                next_peek = begun + 1.0
                while (elapsed := time.perf_counter() - begun) < level_s:
                    now = time.time()
                    for _ in range(int(offered * elapsed) - (len(sent) - first)):
                        iid = f"live{len(sent)}"
                        key = iid.encode()
                        imp = impression(iid, timestamp_ms=int(now * 1000), chosen=rng.randrange(5))
                        producer.send(PREFIX + "impressions", key=key, value=orjson.dumps(imp))
                        for j in range(rng.choice([0, 1, 2, 3])):
                            at = now + rng.uniform(0.5, 2.0)
                            act = action(f"{iid}-{j}", iid, timestamp_ms=int(at * 1000),
                                         type="click")  # fmt: skip
                            heapq.heappush(due, (at, len(sent) * 4 + j, key, orjson.dumps(act)))
                        sent.append(now)
                    while due and due[0][0] <= now:
                        _, _, key, value = heapq.heappop(due)
                        producer.send(PREFIX + "actions", key=key, value=value)
                    if half is None and elapsed >= level_s / 2:
                        half = (time.perf_counter(), *learned_now(scrape(worker.url)))
                    if time.perf_counter() >= next_peek:
                        peak = max(peak, _vm_hwm_mb(pid))
                        next_peek += 1.0
                    time.sleep(0.01)
                ended = time.perf_counter()
                scraped = scrape(worker.url)
                learned, latency = learned_now(scraped)
                #: Where the backlog sits: messages not yet read, per input topic.
                unread = {
                    topic: int(total(scraped, "ltrr_consumer_lag_messages", topic=PREFIX + topic))
                    for topic in ("impressions", "actions", "rewards")
                }
                at, learned_half, latency_half = half or (begun, 0.0, 0.0)
                levels.append(
                    {
                        "offered_per_s": offered,
                        "produced_per_s": rate(len(sent) - first, ended - begun),
                        "learned_per_s_second_half": rate(int(learned - learned_half), ended - at),
                        "reward_latency_s_half": round(latency_half, 1),
                        "reward_latency_s_end": round(latency, 1),
                        "kept_up": latency <= bound and latency - latency_half <= 2.0,
                        "unread_messages": unread,
                        "join_watermark_delay_s": round(
                            total(scraped, "ltrr_join_watermark_delay_seconds"), 1
                        ),
                        "worker_cpu_share": round((_cpu_s(pid) - cpu0) / (ended - begun), 2),
                        "worker_peak_rss_mb": round(max(peak, _vm_hwm_mb(pid)), 1),
                    }
                )
                print(f"  {levels[-1]}", file=sys.stderr, flush=True)
                if not levels[-1]["kept_up"]:
                    break
        kept = [level["offered_per_s"] for level in levels if level["kept_up"]]
        return {
            "broker": broker_kind,
            "level_s": level_s,
            "window_s": LIVE_WINDOW_S,
            "event_delay_s": LIVE_DELAY_S,
            "levels": levels,
            "sustained_impressions_per_s": max(kept, default=0),
            "worker_peak_rss_mb": round(peak, 1),
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
        "--live",
        type=int,
        nargs="+",
        default=[],
        metavar="RATE",
        help="live levels: impressions/s produced as they happen, raised until the worker "
        "falls behind (e.g. 250 500 1000 2000; none: skipped)",
    )
    parser.add_argument(
        "--merge-shards",
        type=int,
        default=2,
        help="learner processes on partitions of one model merging VW deltas (0: skipped)",
    )
    parser.add_argument(
        "--merge-every", type=int, default=1000, help="lines per shard between delta merges"
    )
    parser.add_argument("--live-level-s", type=float, default=20.0, help="seconds per live level")
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
    if args.merge_shards:
        print(f"delta merge: {args.merge_shards} shards", file=sys.stderr, flush=True)
        result["delta_merge"] = delta_merge(args.examples, args.merge_shards, args.merge_every)
    if args.backlog:
        best = result["learner"]["examples_per_s"]["ltrr"]["max"]
        result["end_to_end"] = end_to_end(
            args.backlog, args.broker, best, args.worker_log, args.workers
        )
    if args.live:
        result["live"] = live(args.live, args.live_level_s, args.broker, args.worker_log)
    if args.open_windows:
        result["open_windows"] = open_windows(args.open_windows, args.broker, args.worker_log)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
