"""``ltrr serve --serve-workers 2``: two worker processes share the port, both answer, and
every search's impression reaches Kafka."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ltrr.processes import ServeProcess
from tests.integration.loop_helpers import read_topic, wait_for

CATALOG = Path(__file__).parent.parent / "data" / "catalog.jsonl"


def search(url: str, query: str) -> str:
    request = urllib.request.Request(
        f"{url}/search",
        data=json.dumps({"query": query, "k": 3}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
        impression_id: str = json.loads(resp.read())["impression_id"]
        return impression_id


def test_two_workers_share_the_port(bootstrap: str, prefix: str, tmp_path: Path) -> None:
    serve = ServeProcess(
        *("--broker", bootstrap, "--topic-prefix", prefix, "--partitions", "2"),
        *("--catalog-path", str(CATALOG), "--strategies", "lexical,memory,popular,fresh"),
        *("--vector-cache-dir", str(tmp_path / "cache"), "--serve-workers", "2"),
        log_path=tmp_path / "serve.log",
        ready_timeout_s=60,
        env={"LTRR_SNAPSHOT_KEY": "workers-test-key"},
    )
    with serve:
        assert serve.proc is not None
        children = Path(f"/proc/{serve.proc.pid}/task/{serve.proc.pid}/children")
        workers = wait_for(
            lambda: children.read_text().split(),
            lambda found: len(found) >= 2,
            30,
            "two worker processes",
        )
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda i: search(serve.url, f"love {i}"), range(200)))
        assert len(set(ids)) == 200
        wanted = {i.encode() for i in ids}
        wait_for(
            lambda: {r.key for r in read_topic(bootstrap, prefix + "impressions")},
            lambda keys: wanted <= keys,
            30,
            "every impression on the topic",
        )
        # Both workers took connections (the kernel spreads new connections between them).
        for pid in workers[:2]:
            assert Path(f"/proc/{pid}").exists()
