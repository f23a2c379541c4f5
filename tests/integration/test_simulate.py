"""``ltrr simulate`` on the real path: a BEIR-format collection as the world, a learning worker
and a retrieval worker on the session broker, simulated users over HTTP; and ``ltrr demo``,
which starts its own stack, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from ltrr.processes import ServeProcess
from tests.integration.processes import metric, wait_until, worker

BEIR = Path(__file__).parents[1] / "data" / "beir-mini"
FAST_LOOP = ("--reward-window-s", "1", "--join-tick-s", "0.2", "--snapshot-interval-s", "1")
POLICIES = {
    "learned",
    "lexical",
    "memory",
    "popular",
    "fresh",
    "union",
    "uniform",
    "oracle",
    "oracle_per_query",
}


def ltrr(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ltrr.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_simulate_a_beir_collection_against_a_running_stack(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.jsonl"
    from ltrr.sim.beir import BeirWorld

    entities = BeirWorld(BEIR).catalog()
    catalog.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in entities))
    strategies = "lexical,memory,popular,fresh"
    common = ("--broker", bootstrap, "--topic-prefix", prefix, "--partitions", "2")
    serve = ServeProcess(
        *common,
        "--catalog-path",
        str(catalog),
        "--strategies",
        strategies,
        "--vector-cache-dir",
        str(tmp_path / "cache"),
        log_path=tmp_path / "serve.log",
    )
    loop = worker(bootstrap, prefix, tmp_path / "state", *FAST_LOOP)
    with loop, serve:
        out = tmp_path / "report"
        result = ltrr(
            "simulate",
            "--beir",
            str(BEIR),
            "--url",
            serve.url,
            "--broker",
            bootstrap,
            "--topic-prefix",
            prefix,
            "--strategies",
            strategies,
            "--queries",
            "150",
            "--rate",
            "40",
            "--out",
            str(out),
            timeout=300,
        )
        # Every impression the simulator caused is rewarded and learned; a model is published.
        wait_until(lambda: metric(loop, "ltrr_rewards_total") >= 150, 60, "150 rewards")
        wait_until(lambda: metric(loop, "ltrr_model_version") >= 1, 60, "a published model")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["queries"] == 150 and summary["world"] == "beir"
    recall = summary["recall_at_budget"]
    assert set(recall) == POLICIES
    assert all(0.0 <= v <= 1.0 for v in recall.values())
    assert recall["popular"] == 1.0  # 86 documents, budget 100: it returns all of them
    assert recall["union"] > 0.5  # 20 each: the relevant ones are mostly found
    mean = summary["mean_reward"]
    assert mean["oracle"] >= max(mean[s] for s in ("lexical", "memory", "popular", "fresh"))
    text = (out / "report.md").read_text()
    assert "recall@budget" in text and "| learned |" in text
    for plot in ("rewards.png", "recall.png", "plans.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"
    assert "recall" in result.stderr or "summary" in result.stderr


def test_demo_runs_the_whole_loop_and_accounts_for_every_event(tmp_path: Path) -> None:
    result = ltrr(
        "demo",
        "--queries",
        "200",
        "--entities",
        "300",
        "--broken-share",
        "0.05",
        "--out",
        str(tmp_path),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "every event accounted for" in result.stderr
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["queries"] == 200 and summary["world"] == "music"
    assert summary["impressions_logged"] == summary["rewards_joined"] == 200
    assert summary["examples_learned"] == 200
    assert isinstance(summary["late_actions"], int)  # reported; not learned, not lost
    assert sum(summary["dead_lettered"].values()) == sum(summary["broken_events_sent"].values())
    assert summary["dead_lettered"]["orphan_action"] >= 1
    assert set(summary["mean_reward"]) == POLICIES | {"semantic"}
    assert summary["model_version_published"] >= 1
    assert (tmp_path / "report.md").exists() and (tmp_path / "worker.log").exists()


def test_a_retrieval_worker_slower_to_start_than_allowed_is_stopped_with_what_to_do(
    tmp_path: Path,
) -> None:
    """Its first start embeds the catalog; when that outlasts --serve-start-timeout-s the run
    stops cleanly and says which flag raises the limit (a 6k-document collection on a busy
    machine took over the old fixed 600 s)."""
    result = ltrr(
        "simulate",
        "--beir",
        str(BEIR),
        "--queries",
        "5",
        "--serve-start-timeout-s",
        "0.5",
        "--out",
        str(tmp_path),
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "ltrr serve was not ready within 0.5 s" in result.stderr
    assert "raise --serve-start-timeout-s" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "summary.json").exists()
    # Nothing left running: the worker and broker it started are stopped too.
    assert not _processes_mentioning(str(tmp_path))


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if text in args:
            found.append(args)
    return found
