"""Benchmark of the retrieval worker; prints one JSON object.

Measures, in one run on this machine:
  * raw vowpal-wabbit-next ``predict_one`` on an already parsed 25-plan example (baseline);
  * the policy decision (features -> VW example -> pmf -> seeded sample) with 25 plans;
  * ``ltrr serve`` on a synthetic catalog (default 100k entities), twice in the same run: the
    new path (``--serve-workers`` processes, the query encoder off the event loop) and
    the single-loop path (one process, every strategy in turn on the loop): warm start-up time
    (until every worker process listens), peak RSS of every process, and for 1, 8, 32 and 128
    concurrent clients requests/s, p50 and p99 latency and the peak of
    ``ltrr_impressions_buffered``; every search answered must have its impression on the topic
    (matched by impression id, 5 s after the load stopped); then open-loop levels
    (``--rates``: searches arriving at a fixed rate, Poisson, each sent when it arrives,
    latency from its arrival) and the highest of them served with p99 < 50 ms — closed-loop
    clients cannot show that (N clients at X req/s wait N / X on average: 32 clients at
    300 req/s is 107 ms mean latency by Little's law, whatever the server). Each mode sends
    the same query stream, by default every query distinct (each one a query-embedding cache
    miss, the encoder's worst case); ``--repeat-share`` mixes in repeats of a Zipf head, as
    real traffic;
  * each strategy's cost per request in-process (its largest budget, and k=2), and the
    semantic encoder per query at batch 1, 8 and 32.

The Q2E memory holds the catalog's cold-start predictions, published to the Q2E topic before
the worker starts as a learning worker indexing the catalog would (``--no-q2e-predictions``:
an empty memory, as this bench ran before 2026-12-07; the memory strategy then costs nothing).

Usage: python bench/serve.py [--entities 100000] [--clients 1 8 32 128] [--duration 10]
                            [--rates 25 50 100 150 200] [--repeat-share 0.5]
                            [--no-q2e-predictions]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import vowpal_wabbit_next as vw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ltrr.agents.learning import DEFAULT_VW_ARGS, learn_lines  # noqa: E402
from ltrr.processes import ServeProcess  # noqa: E402
from ltrr.retrieval.features import (  # noqa: E402
    context_features,
    plan_features,
    strategy_features,
    strategy_signals,
)
from ltrr.retrieval.plans import default_plans, max_budgets  # noqa: E402
from ltrr.retrieval.policy import Policy, load_model  # noqa: E402
from ltrr.retrieval.strategies.base import Candidate  # noqa: E402
from ltrr.schemas.dsjson import reward_event  # noqa: E402
from ltrr.schemas.records import SearchImpression  # noqa: E402
from ltrr.schemas.snapshot import encode_snapshot  # noqa: E402
from ltrr.state.store import MemoryStore  # noqa: E402
from ltrr.testing.tansu import TansuBroker  # noqa: E402

WORDS = [
    "love",
    "night",
    "rain",
    "blue",
    "fire",
    "heart",
    "dream",
    "gold",
    "summer",
    "city",
    "road",
    "light",
    "wild",
    "river",
    "moon",
    "star",
    "dance",
    "song",
    "home",
    "sky",
    "ocean",
    "echo",
    "shadow",
    "neon",
    "velvet",
    "storm",
    "sugar",
    "silver",
    "winter",
    "paper",
    "glass",
    "ghost",
    "honey",
    "electric",
    "midnight",
    "golden",
    "broken",
    "lonely",
    "happy",
    "sad",
    "slow",
]
GENRES = [
    "pop",
    "rock",
    "jazz",
    "hip-hop",
    "electronic",
    "classical",
    "folk",
    "country",
    "metal",
    "soul",
    "r&b",
    "indie",
    "ambient",
    "lofi",
    "latin",
    "reggae",
    "blues",
    "punk",
]
TYPES = ("track", "track", "track", "artist", "album", "playlist", "podcast", "station")
NAMES = ["lexical", "semantic", "memory", "popular", "fresh"]


def bench_queries(rng: random.Random, n: int, repeat_share: float) -> list[str]:
    """``n`` queries of 1-3 words: distinct, except that a ``repeat_share`` of them repeat one
    of the first 1,000 with Zipf-like weights (a head of popular queries, as search traffic has)."""
    possible = sum(math.perm(len(WORDS), k) for k in (1, 2, 3))
    if n > possible:
        raise SystemExit(f"--queries {n}: at most {possible} distinct queries of 1-3 words")
    seen: set[str] = set()
    distinct: list[str] = []
    while len(distinct) < n:
        q = " ".join(rng.sample(WORDS, rng.randint(1, 3)))
        if q not in seen:
            seen.add(q)
            distinct.append(q)
    head = distinct[:1000]
    weights = [1.0 / (rank + 1) for rank in range(len(head))]
    return [
        rng.choices(head, weights)[0] if i >= 200 and rng.random() < repeat_share else q
        for i, q in enumerate(distinct)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_us(values: list[float]) -> dict[str, float]:
    return {
        "p50_us": round(percentile(values, 0.5) * 1e6, 1),
        "p99_us": round(percentile(values, 0.99) * 1e6, 1),
        "mean_us": round(statistics.fmean(values) * 1e6, 1),
    }


def synthetic_catalog(path: Path, n: int, seed: int = 1) -> None:
    if path.exists() and sum(1 for _ in path.open("rb")) == n:
        return
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    with path.open("wb") as out:
        for i in range(n):
            title = " ".join(rng.sample(WORDS, rng.randint(1, 4))).title()
            artist = f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}"
            genres = rng.sample(GENRES, rng.randint(1, 3))
            entity = {
                "schema_version": 1,
                "id": f"e{i}",
                "type": rng.choice(TYPES),
                "title": title,
                "artist": artist,
                "genres": genres,
                "popularity": round(min(1.0, rng.paretovariate(2.0) / 20), 4),
                "added_at_ms": now - rng.randint(0, 400) * 86_400_000,
                "text": f"{' '.join(genres)} {title.lower()} by {artist}",
            }
            out.write(orjson.dumps(entity) + b"\n")


def synthetic_decisions(
    plans: list[Any],
    rng: random.Random,
    n: int,
    reward_of: Callable[[dict[str, list[Candidate]], Any, random.Random], float] | None = None,
    keep_results: list[dict[str, list[Candidate]]] | None = None,
) -> tuple[list[bytes], list[Any]]:
    """``n`` synthetic decisions over ``plans`` with the worker's real feature builders: their
    reward lines (DSJSON, as the join emits them) and their (context, plan features).
    ``reward_of(results, chosen plan, rng)`` gives a decision's reward (default: uniform
    noise, nothing to learn); ``keep_results`` collects each decision's strategy results."""
    samples, lines = [], []
    for i in range(n):
        results = {
            name: [Candidate(f"e{j}", rng.random() * 10) for j in range(rng.randint(0, 5))]
            for name in NAMES
        }
        signals = strategy_signals(results)
        ctx = {
            **context_features(
                " ".join(rng.sample(WORDS, rng.randint(1, 3))),
                {"device": rng.choice(["mobile", "web"])},
                1_795_000_000_000,
            ),
            **strategy_features(signals, max_budgets(plans)),
        }
        feats = plan_features(plans, signals)
        samples.append((ctx, feats))
        chosen = rng.randrange(len(plans))
        imp = SearchImpression.from_dict(
            {
                "schema_version": 1,
                "impression_id": f"b{i}",
                "request_id": "r",
                "timestamp_ms": 1,
                "query": "q",
                "context": ctx,
                "plans": [
                    {"id": p.id, "budgets": dict(p.budgets), "features": f}
                    for p, f in zip(plans, feats, strict=True)
                ],
                "chosen": chosen,
                "pmf": [1 / len(plans)] * len(plans),
                "model": {"name": "default", "version": 0},
            }
        )
        reward = rng.random() if reward_of is None else reward_of(results, plans[chosen], rng)
        if keep_results is not None:
            keep_results.append(results)
        lines.append(orjson.dumps(reward_event(imp, reward)))
    return lines, samples


def trained_model(plans: list[Any], rng: random.Random) -> tuple[bytes, list[Any]]:
    """A model trained on 2,000 synthetic 25-plan decisions, and sample feature sets."""
    lines, samples = synthetic_decisions(plans, rng, 2000)
    model = learn_lines(lines, MemoryStore(), DEFAULT_VW_ARGS).model_bytes("default")
    return model, samples


def bench_decision(model_bytes: bytes, samples: list[Any], n: int) -> dict[str, Any]:
    model = load_model(1, DEFAULT_VW_ARGS, model_bytes, 0)
    policy = Policy()
    policy.swap(model)
    ws = model.workspace
    parser = vw.JsonFormatParser(ws)
    parsed = [
        parser.parse_json(orjson.dumps({**c, "_multi": f}).decode()) for c, f in samples[:200]
    ]
    raw, decide = [], []
    for i in range(n):
        ex = parsed[i % len(parsed)]
        t0 = time.perf_counter()
        ws.predict_one(ex)
        raw.append(time.perf_counter() - t0)
        ctx, feats = samples[i % len(samples)]
        t0 = time.perf_counter()
        policy.decide(ctx, feats, i)
        decide.append(time.perf_counter() - t0)
    return {
        "raw_predict_one": summary_us(raw),
        "decision": summary_us(decide),
        "decision_p99_over_raw_p99": round(percentile(decide, 0.99) / percentile(raw, 0.99), 2),
    }


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def worker_pids(pid: int) -> list[int]:
    """``pid`` and its child processes (the serve workers, with --serve-workers > 1)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return [pid, *kids]


def listening_pids(port: int) -> set[int]:
    """Processes with a listening TCP socket on ``port`` (from /proc: no extra dependency)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.add(int(proc.name))
                    break
    return pids


def start_serve(
    bootstrap: str,
    catalog: Path,
    cache: Path,
    strategies: str,
    key: str,
    log: Path,
    *extra: str,
    workers: int = 1,
) -> tuple[ServeProcess, float]:
    """``ltrr serve`` started and ready (its catalog indexed), and how long that took: until
    all ``workers`` processes listen (the first answers ``/readyz`` while the others start)."""
    serve = ServeProcess(
        *("--broker", bootstrap, "--catalog-path", str(catalog)),
        *("--vector-cache-dir", str(cache), "--strategies", strategies),
        *("--log-level", "warning", *extra),
        log_path=log,
        ready_timeout_s=3600,  # a cold start embeds the whole catalog
        env={"LTRR_SNAPSHOT_KEY": key},
    )
    t0 = time.perf_counter()
    serve.start()
    deadline = time.monotonic() + 600
    while len(listening_pids(serve.port)) < workers:
        if time.monotonic() > deadline:
            serve.stop()
            raise RuntimeError(f"only {len(listening_pids(serve.port))} of {workers} listen")
        time.sleep(0.2)
    return serve, time.perf_counter() - t0


def impressions_consumer(bootstrap: str) -> tuple[Any, list[Any]]:
    """A consumer (no group) and the partitions of the impressions topic."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    parts = [TopicPartition("ltrr.impressions", p) for p in consumer.partitions_for_topic(
        "ltrr.impressions") or ()]  # fmt: skip
    return consumer, parts


def impression_keys(bootstrap: str) -> set[bytes]:
    """The keys (impression ids) of every record on the impressions topic."""
    consumer, parts = impressions_consumer(bootstrap)
    ends = consumer.end_offsets(parts)
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    keys: set[bytes] = set()
    while any(consumer.position(tp) < end for tp, end in ends.items()):
        for records in consumer.poll(timeout_ms=1000, max_records=5000).values():
            keys.update(r.key for r in records if r.key is not None)
    consumer.close()
    return keys


def impressions_on_topic(bootstrap: str) -> int:
    consumer, parts = impressions_consumer(bootstrap)
    total = sum(consumer.end_offsets(parts).values())
    consumer.close()
    return int(total)


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def sequential(url: str, queries: list[str]) -> dict[str, float]:
    times = []
    async with aiohttp.ClientSession() as session:
        for q in queries:
            t0 = time.perf_counter()
            async with session.post(f"{url}/search", json={"query": q, "k": 10}) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            times.append(time.perf_counter() - t0)
    return {k.replace("_us", "_ms"): round(v / 1000, 2) for k, v in summary_us(times).items()}


async def post_search(session: aiohttp.ClientSession, url: str, query: str) -> bytes | None:
    """POST one search; the impression id it was answered with, or None if not answered 200."""
    async with session.post(f"{url}/search", json={"query": query}) as resp:
        body = await resp.read()
    return orjson.loads(body)["impression_id"].encode() if resp.status == 200 else None


async def load(
    url: str, queries: Iterator[str], concurrency: int, duration_s: float
) -> dict[str, Any]:
    """``concurrency`` clients, each posting searches back to back for ``duration_s``; the
    impression buffer (``ltrr_impressions_buffered`` of whichever worker answers) is sampled
    every 100 ms."""
    latencies: list[float] = []
    answered: set[bytes] = set()  # impression ids of the searches answered
    errors = 0
    deadline = time.perf_counter() + duration_s
    peak_buffered = 0.0
    connector = aiohttp.TCPConnector(limit=concurrency + 4, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                impression_id = await post_search(session, url, next(queries))
                if impression_id is not None:
                    latencies.append(time.perf_counter() - t0)
                    answered.add(impression_id)
                else:
                    errors += 1

        async def sampler() -> None:
            nonlocal peak_buffered
            async with aiohttp.ClientSession() as probe:  # new connections: every worker
                while time.perf_counter() < deadline:
                    value = await metric(probe, url, "ltrr_impressions_buffered ")
                    peak_buffered = max(peak_buffered, value)
                    await asyncio.sleep(0.1)

        t0 = time.perf_counter()
        await asyncio.gather(sampler(), *(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    rate = len(latencies) / elapsed
    return {
        "clients": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(rate, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2) if latencies else None,
        "impressions_buffered_peak": peak_buffered,
        "one_second_of_traffic": round(rate, 1),
        "answered": answered,
    }


async def open_loop(
    url: str, queries: Iterator[str], rate: float, duration_s: float, seed: int = 5
) -> dict[str, Any]:
    """Searches arriving at ``rate`` per second (Poisson: exponential gaps, seeded) for
    ``duration_s``, each sent when it arrives whatever is still in flight, as independent
    users do. Latency runs from the *scheduled* arrival, so a server (or this client) that
    falls behind shows it in the percentiles instead of hiding it by sending less (closed-loop
    clients do: with N of them, mean latency = N / throughput, whatever the server)."""
    latencies: list[float] = []
    answered: set[bytes] = set()
    errors = 0
    in_flight = peak_in_flight = 0
    gaps = random.Random(seed)
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def search(query: str, due: float) -> None:
            nonlocal errors, in_flight, peak_in_flight
            in_flight += 1
            peak_in_flight = max(peak_in_flight, in_flight)
            try:
                impression_id = await post_search(session, url, query)
                if impression_id is not None:
                    latencies.append(time.perf_counter() - due)
                    answered.add(impression_id)
                else:
                    errors += 1
            except aiohttp.ClientError:
                errors += 1
            finally:
                in_flight -= 1

        start = time.perf_counter()
        due = start
        sent = 0
        while (due := due + gaps.expovariate(rate)) < start + duration_s:
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            task = asyncio.create_task(search(next(queries), due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        if tasks:
            await asyncio.wait(tasks, timeout=60.0)
        elapsed = time.perf_counter() - start
    return {
        "offered_per_s": rate,
        "sent": sent,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2) if latencies else None,
        "peak_in_flight": peak_in_flight,
        "answered": answered,
    }


def run_mode(
    name: str, serve: ServeProcess, bootstrap: str, queries: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """The load levels against one running ``ltrr serve``; impressions counted on the topic."""
    print(f"load: {name} ...", file=sys.stderr)
    out: dict[str, Any] = {"sequential": asyncio.run(sequential(serve.url, queries[:200]))}
    time.sleep(2.0)  # the sequential run's impressions land before the count starts
    before = impressions_on_topic(bootstrap)
    levels = []
    answered: set[bytes] = set()  # every search answered 200 must have logged its impression
    # Every query of a mode is new to it (no query-embedding cache hits: the encoder's worst
    # case) unless --repeat-share asks for repeats; the cycle only wraps if --queries is short.
    stream = itertools.cycle(queries[200:])
    for clients in args.clients:
        levels.append(asyncio.run(load(serve.url, stream, clients, args.duration)))
        answered |= levels[-1].pop("answered")
        print(f"  {name}: {levels[-1]}", file=sys.stderr)
    rates = []
    for rate in args.rates:
        rates.append(asyncio.run(open_loop(serve.url, stream, rate, args.duration)))
        answered |= rates[-1].pop("answered")
        print(f"  {name}: {rates[-1]}", file=sys.stderr)
    at_end = impressions_on_topic(bootstrap) - before
    time.sleep(5.0)
    delivered = impressions_on_topic(bootstrap) - before
    searched = sum(level["requests"] for level in [*levels, *rates])
    missing = sorted(answered - impression_keys(bootstrap))
    out["levels"] = levels
    out["open_loop"] = rates
    out["open_loop_p99_under_50ms"] = max(
        (r["requests_per_s"] for r in rates if r["p99_ms"] is not None and r["p99_ms"] < 50),
        default=None,
    )
    out["impressions"] = {
        "searches_under_load": searched,
        "errors_under_load": sum(level["errors"] for level in [*levels, *rates]),
        "on_topic_when_load_stopped": at_end,
        "on_topic_5s_later": delivered,
        "missing": len(missing),
        "missing_ids": [i.decode() for i in missing[:10]],
    }
    assert serve.proc is not None
    out["peak_rss_mb_per_process"] = [peak_rss_mb(p) for p in worker_pids(serve.proc.pid)]
    return out


def catalog_q2e_rows(catalog_path: Path) -> MemoryStore:
    """The Q2E rows a learning worker writes for the catalog (cold-start predictions: every
    entity's title, artist and genre tokens), in a store: what retrieval workers replicate."""
    from ltrr.state.q2e import Q2EMemory

    store = MemoryStore()
    with catalog_path.open("rb") as lines:
        Q2EMemory(store).index_entities(orjson.loads(line) for line in lines)
    return store


def publish_q2e(bootstrap: str, store: MemoryStore) -> int:
    """Send ``store``'s rows to the Q2E changelog topic, as the learning worker would."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=1 << 20)
    n = 0
    for key, value in store.scan(b""):
        producer.send("ltrr.q2e", key=key, value=value)
        n += 1
    producer.flush(timeout=300)
    producer.close()
    return n


def strategy_costs(
    catalog_path: Path, cache: Path, queries: list[str], q2e: MemoryStore | None = None
) -> dict[str, Any]:
    """What each strategy costs per request in this process, at its largest budget in the
    default plans (what every request pays today) and at k=2 (enough for the top score and
    gap features: a lower bound for a signals-only probe). ``q2e``: the memory strategy reads
    these rows (the catalog's predictions), else an empty memory."""
    from ltrr.retrieval.catalog import Catalog, load_jsonl
    from ltrr.retrieval.server import build_strategy
    from ltrr.state.q2e import Q2EMemory
    from ltrr.streams.settings import Settings

    entities, _ = load_jsonl(catalog_path)
    catalog = Catalog()
    catalog.apply(entities)
    settings = Settings(vector_cache_dir=str(cache))
    budgets = max_budgets(default_plans(NAMES))
    out: dict[str, Any] = {}
    for name in NAMES:
        strategy = build_strategy(
            name, catalog, Q2EMemory(q2e or MemoryStore()), settings, threads=1, read_only=True
        )
        row: dict[str, Any] = {}
        for label, k in (("full_ms", budgets[name]), ("k2_ms", 2)):
            for q in queries[:200]:  # warm (semantic: every timed query's vector cached)
                strategy.retrieve(q, {}, k)
            t0 = time.perf_counter()
            for q in queries[:200]:
                strategy.retrieve(q, {}, k)
            row[label] = round((time.perf_counter() - t0) / 200 * 1000, 3)
        if name == "semantic":
            sem: Any = strategy
            for batch in (1, 8, 32):
                texts = [f"{q} {i}" for i, q in enumerate(queries[:batch])]
                t0 = time.perf_counter()
                for _ in range(5):
                    sem._encode(texts)
                row[f"encode_batch{batch}_ms_per_query"] = round(
                    (time.perf_counter() - t0) / 5 / batch * 1000, 3
                )
            row["note"] = "full_ms and k2_ms: query vector cached (ANN search only)"
        out[name] = row
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument(
        "--queries", type=int, default=30_000, help="queries per mode (cycled if a mode needs more)"
    )
    parser.add_argument(
        "--repeat-share",
        type=float,
        default=0.0,
        help="share of queries that repeat an earlier one (Zipf over the first 1,000); "
        "0: every query distinct, each a query-embedding cache miss",
    )
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument(
        "--rates",
        type=float,
        nargs="*",
        default=[25, 50, 100, 150, 200],
        help="open-loop levels after the client levels: searches arriving at this many per "
        "second (Poisson), latency from each one's arrival; the report's "
        "open_loop_p99_under_50ms is the highest rate served with p99 < 50 ms (none: skip)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load level")
    parser.add_argument("--workers", type=int, default=0, help="new path's workers (0: cores)")
    parser.add_argument("--strategies", default=",".join(NAMES))
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--no-q2e-predictions",
        dest="q2e_predictions",
        action="store_false",
        help="leave the Q2E memory empty; by default the catalog's cold-start predictions are "
        "published to the Q2E topic first, as a learning worker indexing the catalog does, so "
        "the memory strategy costs what it costs in production",
    )
    parser.add_argument("--work-dir", type=Path, default=ROOT / "bench" / ".cache")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(3)
    plans = default_plans(NAMES)
    print("training a 25-plan model ...", file=sys.stderr)
    model_bytes, samples = trained_model(plans, rng)
    report: dict[str, Any] = {
        "plans": len(plans),
        "entities": args.entities,
        "strategies": args.strategies,
        "duration_s_per_level": args.duration,
        "queries": args.queries,
        "repeat_share": args.repeat_share,
    }
    report.update(bench_decision(model_bytes, samples, args.decisions))
    catalog = args.work_dir / f"catalog-{args.entities}.jsonl"
    print(f"catalog of {args.entities} entities ...", file=sys.stderr)
    synthetic_catalog(catalog, args.entities)
    queries = bench_queries(rng, args.queries, args.repeat_share)
    q2e = catalog_q2e_rows(catalog) if args.q2e_predictions else None
    report["q2e_predictions"] = args.q2e_predictions
    key = "bench-key"
    cache = args.work_dir / "cache"
    workers = args.workers or len(os.sched_getaffinity(0))
    modes = [("new", workers, ("--serve-workers", str(workers), "--serve-offload", "true"))]
    if not args.skip_baseline:
        modes.append(("single_loop", 1, ("--serve-workers", "1", "--serve-offload", "false")))
    with TansuBroker() as broker:
        log = args.work_dir / "serve.log"
        print("starting ltrr serve (first start builds caches) ...", file=sys.stderr)
        serve, first = start_serve(broker.bootstrap, catalog, cache, args.strategies, key, log)
        serve.stop()
        report["startup_s"] = {"first": round(first, 2)}
        from kafka import KafkaProducer

        producer = KafkaProducer(
            bootstrap_servers=broker.bootstrap, max_request_size=8 * 1024 * 1024
        )
        for k, v in encode_snapshot(
            model="default",
            version=1,
            vw_args=list(DEFAULT_VW_ARGS),
            model_bytes=model_bytes,
            examples_learned=2000,
            offsets=[],
            created_ms=int(time.time() * 1000),
            key_id="k1",
            key=key.encode(),
            max_message_bytes=8 * 1024 * 1024,
        ):
            producer.send("ltrr.snapshots", key=k, value=v).get(timeout=30)
        producer.close()
        if q2e is not None:
            print("publishing the catalog's Q2E predictions ...", file=sys.stderr)
            report["q2e_rows"] = publish_q2e(broker.bootstrap, q2e)
        for name, count, flags in modes:
            serve, warm = start_serve(
                broker.bootstrap, catalog, cache, args.strategies, key, log, *flags, workers=count
            )
            try:
                time.sleep(3.0)  # every worker loads the snapshot
                report[name] = {"flags": " ".join(flags), "warm_start_s": round(warm, 2)}
                report[name].update(run_mode(name, serve, broker.bootstrap, queries, args))
            finally:
                serve.stop()
    print("per-strategy cost ...", file=sys.stderr)
    report["strategy_cost"] = strategy_costs(catalog, cache, queries, q2e)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
