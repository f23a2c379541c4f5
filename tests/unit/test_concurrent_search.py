"""The serving search path (``Searcher.search_async``) with the real strategies, semantic
included: the event loop keeps running other tasks while queries are encoded, concurrent
queries share forward passes, and the outcome equals the sequential ``search``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from ltrr.retrieval.batching import MicroBatcher
from ltrr.retrieval.catalog import Catalog, load_jsonl
from ltrr.retrieval.plans import default_plans
from ltrr.retrieval.policy import Policy
from ltrr.retrieval.search import Searcher
from ltrr.retrieval.strategies.base import Strategy
from ltrr.retrieval.strategies.fresh import FreshStrategy
from ltrr.retrieval.strategies.lexical import LexicalStrategy
from ltrr.retrieval.strategies.memory import MemoryStrategy
from ltrr.retrieval.strategies.popular import PopularStrategy
from ltrr.state.q2e import Q2EMemory
from ltrr.state.store import MemoryStore
from tests.unit.test_semantic import HAVE_EXTRA

DATA = Path(__file__).resolve().parents[1] / "data" / "catalog.jsonl"
QUERIES = [f"{mood} songs for {when}" for mood in ("sad", "happy", "calm", "loud")
           for when in ("rain", "night", "work", "summer")]  # fmt: skip


@pytest.fixture(scope="module")
def searcher(tmp_path_factory: pytest.TempPathFactory) -> Searcher:
    if not HAVE_EXTRA:  # never skipped: the README's test command installs the extra
        pytest.fail("the semantic extra is missing: pip install -e '.[semantic]'")
    from ltrr.retrieval.strategies.semantic import SemanticStrategy

    entities, _ = load_jsonl(DATA)
    catalog = Catalog()
    catalog.apply(entities)
    strategies: dict[str, Strategy] = {
        "lexical": LexicalStrategy(catalog),
        "semantic": SemanticStrategy(
            catalog, cache_dir=tmp_path_factory.mktemp("vectors"), embed_max_wait_s=0.05
        ),
        "memory": MemoryStrategy(Q2EMemory(MemoryStore())),
        "popular": PopularStrategy(catalog),
        "fresh": FreshStrategy(catalog),
    }
    return Searcher(catalog, strategies, default_plans(list(strategies)), Policy())


async def test_loop_runs_while_queries_encode_and_they_share_passes(searcher: Searcher) -> None:
    semantic = searcher.strategies["semantic"]
    ticks = 0
    seen: list[tuple[int, int]] = []  # ticker count when each forward pass starts and ends
    encode = semantic._batcher.encode  # type: ignore[attr-defined]

    def watched(texts: list[str]) -> np.ndarray:
        start = ticks
        vectors = encode(texts)
        seen.append((start, ticks))
        return vectors

    semantic._batcher.encode = watched  # type: ignore[attr-defined]
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    tick_task = asyncio.create_task(ticker())
    before = semantic.batches  # type: ignore[attr-defined]
    try:
        results = await asyncio.gather(*(searcher.search_async(q, {}, 5) for q in QUERIES))
    finally:
        stop.set()
        await tick_task
        semantic._batcher.encode = encode  # type: ignore[attr-defined]
    assert len(results) == len(QUERIES)
    # 16 concurrent queries, one forward pass (two at most if the wait timer split them).
    assert 1 <= semantic.batches - before <= 2  # type: ignore[attr-defined]
    assert sum(1 for _ in seen) == semantic.batches - before  # type: ignore[attr-defined]
    # The ticker advanced while every forward pass ran: the loop was never blocked by one.
    assert all(end > start for start, end in seen), seen
    # Cached now: the same queries are not encoded again.
    again = semantic.batches  # type: ignore[attr-defined]
    await asyncio.gather(*(searcher.search_async(q, {}, 5) for q in QUERIES))
    assert semantic.batches == again  # type: ignore[attr-defined]


async def test_async_search_equals_sequential_search(searcher: Searcher) -> None:
    for query in ("rainy day", "queen", "love story"):
        options = {"now_ms": 1_790_000_000_000, "seed": 7, "impression_id": "i1"}
        sequential = searcher.search(query, {}, 10, **options)  # type: ignore[arg-type]
        concurrent = await searcher.search_async(query, {}, 10, **options)  # type: ignore[arg-type]
        assert concurrent.impression == sequential.impression


async def test_batcher_groups_waiting_texts_and_propagates_errors() -> None:
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        if "boom" in texts:
            raise ValueError("encoder failed")
        return np.array([[float(len(t))] for t in texts])

    batcher = MicroBatcher(encode, max_wait_s=0.05, max_batch=4)
    got = await asyncio.gather(*(batcher.embed(t) for t in ["a", "bb", "a", "ccc", "dddd", "e"]))
    assert [float(v[0]) for v in got] == [1, 2, 1, 3, 4, 1]
    # max_batch 4 splits the six calls; the repeated "a" is encoded once in its batch.
    assert calls == [["a", "bb", "ccc"], ["dddd", "e"]]
    with pytest.raises(ValueError, match="encoder failed"):
        await batcher.embed("boom")
    batcher.close()


@pytest.mark.parametrize("offload_searches", [False, True])
async def test_lexical_and_ann_searches_run_on_the_loop_unless_offloaded(
    searcher: Searcher, offload_searches: bool
) -> None:
    """By default only the query encoder leaves the event loop (its own thread, batched): the
    lexical and ANN searches, about a millisecond each, run on the loop thread; with
    ``offload_searches`` they run in the executor. The answer is the same either way."""
    import threading

    semantic = searcher.strategies["semantic"]
    lexical = searcher.strategies["lexical"]
    threads: dict[str, set[int]] = {"lexical": set(), "ann": set()}
    search, retrieve = semantic._search_locked, lexical.retrieve  # type: ignore[attr-defined]

    def watched_search(*args: object) -> object:
        threads["ann"].add(threading.get_ident())
        return search(*args)

    def watched_retrieve(*args: object) -> object:
        threads["lexical"].add(threading.get_ident())
        return retrieve(*args)

    other = Searcher(
        searcher.catalog,
        searcher.strategies,
        searcher.plans,
        searcher.policy,
        offload_searches=offload_searches,
    )
    semantic._search_locked = watched_search  # type: ignore[attr-defined]
    lexical.retrieve = watched_retrieve  # type: ignore[method-assign]
    options = {"now_ms": 1_790_000_000_000, "seed": 3, "impression_id": "i2"}
    try:
        got = await other.search_async("calm songs for night", {}, 10, **options)  # type: ignore[arg-type]
    finally:
        del semantic._search_locked, lexical.retrieve  # back to the class's methods
    loop_thread = threading.get_ident()
    assert threads["lexical"] and threads["ann"]
    if offload_searches:
        assert loop_thread not in threads["lexical"] | threads["ann"]
    else:
        assert threads["lexical"] == threads["ann"] == {loop_thread}
    expected = searcher.search("calm songs for night", {}, 10, **options)  # type: ignore[arg-type]
    assert got.impression == expected.impression


async def test_an_index_being_written_sends_the_ann_search_to_a_thread(searcher: Searcher) -> None:
    """A catalog update or a save holds the semantic index for longer than a search: the
    search then waits in the executor, never on the event loop, and still answers."""
    import threading

    semantic = searcher.strategies["semantic"]
    lock = semantic._lock  # type: ignore[attr-defined]
    options = {"now_ms": 1_790_000_000_000, "seed": 5, "impression_id": "i3"}
    expected = searcher.search("happy songs for summer", {}, 10, **options)  # type: ignore[arg-type]
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with lock:
            held.set()
            release.wait(5)

    thread = threading.Thread(target=writer)
    thread.start()
    held.wait(5)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while not release.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def let_go() -> None:
        await asyncio.sleep(0.3)
        release.set()

    started = asyncio.get_running_loop().time()
    got, _, _ = await asyncio.gather(
        searcher.search_async("happy songs for summer", {}, 10, **options),  # type: ignore[arg-type]
        ticker(),
        let_go(),
    )
    thread.join()
    assert asyncio.get_running_loop().time() - started >= 0.3  # it did wait for the writer
    assert ticks >= 10  # and the loop kept running meanwhile
    assert got.impression == expected.impression
