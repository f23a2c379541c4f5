"""Benchmark of the retrieval worker; prints one JSON object.

Measures, in one run on this machine:
  * raw vowpal-wabbit-next ``predict_one`` on an already parsed 25-plan example (baseline);
  * the policy decision (features -> VW example -> pmf -> seeded sample) with 25 plans;
  * ``ltrr serve`` on a synthetic catalog (default 100k entities): cold and warm start-up time
    (warm = cached item vectors), peak RSS, ``/search`` latency p50/p99 (sequential) and
    requests/s (concurrent clients).

Usage: python bench/serve.py [--entities 100000] [--requests 2000] [--strategies ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
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
from ltrr.streams.brokers.tansu import TansuBroker  # noqa: E402

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
    plans: list[Any], rng: random.Random, n: int
) -> tuple[list[bytes], list[Any]]:
    """``n`` synthetic decisions over ``plans`` with the worker's real feature builders: their
    reward lines (DSJSON, as the join emits them) and their (context, plan features)."""
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
        lines.append(orjson.dumps(reward_event(imp, rng.random())))
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


def start_serve(
    bootstrap: str, catalog: Path, cache: Path, strategies: str, key: str, log: Path
) -> tuple[ServeProcess, float]:
    """``ltrr serve`` started and ready (its catalog indexed), and how long that took."""
    serve = ServeProcess(
        *("--broker", bootstrap, "--catalog-path", str(catalog)),
        *("--vector-cache-dir", str(cache), "--strategies", strategies),
        *("--log-level", "warning"),
        log_path=log,
        ready_timeout_s=3600,  # a cold start embeds the whole catalog
        env={"LTRR_SNAPSHOT_KEY": key},
    )
    t0 = time.perf_counter()
    serve.start()
    return serve, time.perf_counter() - t0


async def load(url: str, queries: list[str], concurrency: int, duration_s: float) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        sequential = []
        for q in queries:
            t0 = time.perf_counter()
            async with session.post(f"{url}/search", json={"query": q, "k": 10}) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            sequential.append(time.perf_counter() - t0)
        done = 0
        deadline = time.perf_counter() + duration_s

        async def client(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < deadline:
                async with session.post(
                    f"{url}/search", json={"query": queries[i % len(queries)]}
                ) as resp:
                    await resp.read()
                done += 1
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {
        "sequential": {
            k.replace("_us", "_ms"): round(v / 1000, 2) for k, v in summary_us(sequential).items()
        },
        "concurrency": concurrency,
        "requests_per_s": round(done / elapsed, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--strategies", default=",".join(NAMES))
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
    }
    report.update(bench_decision(model_bytes, samples, args.decisions))
    catalog = args.work_dir / f"catalog-{args.entities}.jsonl"
    print(f"catalog of {args.entities} entities ...", file=sys.stderr)
    synthetic_catalog(catalog, args.entities)
    key = "bench-key"
    with TansuBroker() as broker:
        log = args.work_dir / "serve.log"
        print("starting ltrr serve (first start builds caches) ...", file=sys.stderr)
        serve, first = start_serve(
            broker.bootstrap, catalog, args.work_dir / "cache", args.strategies, key, log
        )
        serve.stop()
        serve, warm = start_serve(
            broker.bootstrap, catalog, args.work_dir / "cache", args.strategies, key, log
        )
        try:
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
            time.sleep(2.0)
            queries = [" ".join(rng.sample(WORDS, rng.randint(1, 3))) for _ in range(args.requests)]
            print("load ...", file=sys.stderr)
            report["search"] = asyncio.run(
                load(serve.url, queries, args.concurrency, args.duration)
            )
            report["startup_s"] = {"first": round(first, 2), "warm": round(warm, 2)}
            assert serve.proc is not None
            report["peak_rss_mb"] = peak_rss_mb(serve.proc.pid)
        finally:
            serve.stop()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
