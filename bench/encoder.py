"""Query encoder variants of the semantic strategy, for speed and retrieval quality; prints one
JSON object.

Variants (``retrieval/strategies/semantic.py``, ``ENCODERS``): ``fp32``, today's
all-MiniLM-L6-v2, and ``int8``, the same weights with torch's dynamic int8 quantization of the
Linear layers. Every number comes from the project's own ``SemanticStrategy`` (its ``_encode``,
its cache, its usearch index and ``retrieve``), one instance per variant and collection.

- Speed: query-encoding latency (one forward pass, ``SemanticStrategy._encode``) at batch 1 and
  batch 8 on real queries of the collections, the variants interleaved call by call so a busy
  machine slows both alike; median and best, and queries/s = batch / median latency. The
  ratios (``speedup``) are the result, the absolute numbers context.
- Quality: semantic-only retrieval on each collection's test qrels (``sim/beir.py`` builds the
  catalog exactly as ``ltrr simulate --beir`` does), the corpus embedded by the same variant
  (quality depends on both sides): nDCG@10 (linear gain, log2 discount, ideal from all judged
  relevant documents) and recall@100, averaged over all queries; how far each query's vector
  lies from fp32's (cosine), and the corpus embedding rate.

On a busy 2-core machine the whole corpora take too long to embed twice; ``--max-queries`` and
``--max-docs`` subsample them (seeded; every judged document of a kept query stays, so the
numbers are higher than on the whole corpus, but both variants see the same documents).

Usage: python bench/encoder.py [COLLECTION_DIR ...] [--rounds 40] [--threads 2]
                               [--max-queries 0] [--max-docs 0]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ltrr.retrieval.catalog import Catalog, Entity
from ltrr.retrieval.strategies.semantic import ENCODERS, SemanticStrategy
from ltrr.sim.beir import BeirWorld

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_COLLECTIONS = ROOT.parent / "shared" / "collections"


def ndcg_at_10(ranked: list[str], relevant: dict[str, float]) -> float:
    dcg = sum(relevant.get(d, 0.0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(relevant.values(), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_100(ranked: list[str], relevant: dict[str, float]) -> float:
    return len(set(ranked[:100]) & set(relevant)) / len(relevant)


def quality(
    directory: Path, threads: int, max_queries: int, max_docs: int, cache: Path
) -> tuple[dict[str, Any], dict[str, SemanticStrategy], list[str]]:
    world = BeirWorld(directory)
    rng = random.Random(0)
    queries = world.queries
    if max_queries and len(queries) > max_queries:
        queries = rng.sample(queries, max_queries)
    docs = world.catalog()
    if max_docs and len(docs) > max_docs:  # every judged document of the kept queries stays
        judged = {d for _, relevant in queries for d in relevant}
        others = [e for e in docs if e["id"] not in judged]
        keep = judged | {e["id"] for e in rng.sample(others, max(0, max_docs - len(judged)))}
        docs = [e for e in docs if e["id"] in keep]
    catalog = Catalog()
    catalog.apply(Entity.from_dict(e) for e in docs)
    out: dict[str, Any] = {
        "docs": len(catalog),
        "docs_in_collection": len(world.entities),
        "queries": len(queries),
        "queries_in_collection": len(world.queries),
    }
    strategies: dict[str, SemanticStrategy] = {}
    vectors: dict[str, np.ndarray] = {}
    per_query: dict[str, list[float]] = {}
    for variant in ENCODERS:
        started = time.perf_counter()
        strategy = SemanticStrategy(
            catalog, cache_dir=cache / directory.name, threads=threads, encoder=variant
        )
        seconds = time.perf_counter() - started
        strategies[variant] = strategy
        vectors[variant] = strategy._encode([text for text, _ in queries])
        ndcg, recall = [], []
        for text, relevant in queries:
            ranked = [c.entity_id for c in strategy.retrieve(text, {}, 100)]
            ndcg.append(ndcg_at_10(ranked, relevant))
            recall.append(recall_at_100(ranked, relevant))
        per_query[variant] = ndcg
        out[variant] = {
            "ndcg@10": round(statistics.fmean(ndcg), 4),
            "recall@100": round(statistics.fmean(recall), 4),
            "corpus_docs_per_s": round(len(catalog) / seconds, 1),
        }
        if variant != "fp32":
            cos = (vectors[variant] * vectors["fp32"]).sum(axis=1)
            base = out["fp32"]
            diffs = [a - b for a, b in zip(ndcg, per_query["fp32"], strict=True)]
            stderr = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
            out[variant] |= {
                "query_cosine_vs_fp32": {
                    "mean": round(float(cos.mean()), 4),
                    "min": round(float(cos.min()), 4),
                },
                "delta_ndcg@10": round(out[variant]["ndcg@10"] - base["ndcg@10"], 4),
                # standard error of the paired per-query difference: noise of the delta above
                "delta_ndcg@10_stderr": round(stderr, 4),
                "queries_ndcg_worse_same_better": [
                    sum(d < -1e-9 for d in diffs),
                    sum(abs(d) <= 1e-9 for d in diffs),
                    sum(d > 1e-9 for d in diffs),
                ],
                "delta_recall@100": round(out[variant]["recall@100"] - base["recall@100"], 4),
                "corpus_speedup": round(
                    out[variant]["corpus_docs_per_s"] / base["corpus_docs_per_s"], 2
                ),
            }
    return out, strategies, [text for text, _ in queries]


def speed(strategies: dict[str, SemanticStrategy], texts: list[str], rounds: int) -> dict[str, Any]:
    """Latency of one forward pass at batch 1 and 8, variants interleaved call by call."""
    times: dict[tuple[str, int], list[float]] = {(v, b): [] for v in strategies for b in (1, 8)}
    for strategy in strategies.values():  # warm-up
        strategy._encode(texts[:8])
    for r in range(rounds):
        for batch in (1, 8):
            part = [texts[(r * 8 + i) % len(texts)] for i in range(batch)]
            for variant, strategy in strategies.items():
                started = time.perf_counter()
                strategy._encode(part)
                times[variant, batch].append(time.perf_counter() - started)
    out: dict[str, Any] = {}
    for variant in strategies:
        row: dict[str, Any] = {}
        for batch in (1, 8):
            lat = times[variant, batch]
            median = statistics.median(lat)
            row[f"batch{batch}"] = {
                "median_ms": round(median * 1000, 2),
                "best_ms": round(min(lat) * 1000, 2),
                "queries_per_s": round(batch / median, 1),
            }
        out[variant] = row
    for variant in strategies:
        if variant != "fp32":
            out[variant]["speedup"] = {
                f"batch{b}": round(
                    out["fp32"][f"batch{b}"]["median_ms"] / out[variant][f"batch{b}"]["median_ms"],
                    2,
                )
                for b in (1, 8)
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("collections", nargs="*", type=Path)
    parser.add_argument("--rounds", type=int, default=40, help="timed calls per batch size")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--max-queries", type=int, default=0, help="seeded sample of test queries (0 = all)"
    )
    parser.add_argument(
        "--max-docs",
        type=int,
        default=0,
        help="corpus subsample: the kept queries' judged documents plus a seeded sample of "
        "the others up to this many (0 = the whole corpus)",
    )
    args = parser.parse_args()
    collections = args.collections or sorted(
        p for p in DEFAULT_COLLECTIONS.iterdir() if (p / "corpus.jsonl").is_file()
    )
    started = time.perf_counter()
    report: dict[str, Any] = {"variants": list(ENCODERS), "threads": args.threads}
    report["collections"] = {}
    all_texts: list[str] = []
    strategies: dict[str, SemanticStrategy] = {}
    with tempfile.TemporaryDirectory(prefix="ltrr-encoder-") as cache:
        for directory in collections:
            row, strategies, texts = quality(
                directory, args.threads, args.max_queries, args.max_docs, Path(cache)
            )
            report["collections"][directory.name] = row
            all_texts += texts
        rounds_per_collection = max(1, args.rounds)
        report["speed"] = speed(strategies, all_texts, rounds_per_collection)
        report["speed"]["rounds"] = rounds_per_collection
        report["speed"]["queries_drawn_from"] = len(all_texts)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
