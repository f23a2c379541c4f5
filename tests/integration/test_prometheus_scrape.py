"""Prometheus, run with the committed ``deploy/prometheus`` config and rules, scrapes a live
``ltrr worker`` and ``ltrr serve`` that learn from real traffic: the key ltrr series exist with
sane values, every alert rule evaluates, and every query of the Grafana dashboards returns data.
The same queries render the dashboards' panels with matplotlib (into ``docs/img/`` when
``LTRR_WRITE_PANELS=1``, else into the test's temp directory)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from kafka import KafkaProducer
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ltrr.processes import ServeProcess, WorkerProcess, free_port, wait_for_port
from ltrr.streams.scrape import scrape, total
from tests.deploy.test_prometheus_rules import DASHBOARDS, PROMETHEUS, grafana_to_promql
from tests.events import action
from tests.integration.loop_helpers import wait_for
from tests.integration.processes import FAST_LOOP_FLAGS
from tests.integration.test_serve import post, publish

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "tests" / "data" / "catalog.jsonl"
KEY = "prometheus-scrape-test-key"
#: serve's ops token: its /metrics needs it; Prometheus sends it from a credentials file.
OPS_TOKEN = "prometheus-scrape-ops-token-0123"
#: Grafana's $__rate_interval in the queries: 15 one-second scrapes.
RATE_WINDOW = "15s"
QUERIES = (
    "taylor swift",
    "love story",
    "queen",
    "bohemian rapsody",
    "sad songs for rain",
    "beatles",
    "love",
    "adele someone like you",
    "daft punk",
    "jazz",
)


@dataclass
class Stack:
    worker: WorkerProcess
    serve: ServeProcess
    prometheus: str


class Traffic:
    """Searches and actions against the retrieval worker on a background thread: clicks and
    plays on on-time impressions, some late clicks, an orphan and a bad request now and then."""

    def __init__(self, url: str, seed: int = 11) -> None:
        self.url = url
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.searches = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        old: list[tuple[float, str, str]] = []
        while not self.stop.is_set():
            try:
                self.step(old)
            except Exception as exc:  # reported by the test, never silently dropped
                self.errors.append(repr(exc))
            self.stop.wait(0.15)

    def step(self, old: list[tuple[float, str, str]]) -> None:
        status, body = post(f"{self.url}/search", {"query": self.rng.choice(QUERIES), "k": 5})
        assert status == 200, body
        self.searches += 1
        if not body["results"]:
            return
        iid, entity = body["impression_id"], body["results"][0]["entity_id"]
        now = time.time()
        if self.rng.random() < 0.6:
            kind = self.rng.choice(["click", "play", "like", "skip"])
            self.act(iid, entity, kind, value=60.0 if kind == "play" else None)
        old.append((now, iid, entity))
        if old and now - old[0][0] > 5 and self.rng.random() < 0.05:  # after its window: late
            _, late_iid, late_entity = old.pop(0)
            self.act(late_iid, late_entity, "click")
        if self.searches % 40 == 0:
            self.act(f"never-shown-{self.searches}", entity, "click")  # an orphan action
            post(f"{self.url}/search", {"query": ""})  # a 400

    def act(self, iid: str, entity: str, kind: str, value: float | None = None) -> None:
        event = {
            "action_id": f"{iid}-{kind}-{self.rng.random():.6f}",
            "impression_id": iid,
            "entity_id": entity,
            "type": kind,
            "timestamp_ms": int(time.time() * 1000),
        }
        if value is not None:
            event["value"] = value
        status, body = post(f"{self.url}/actions", event)
        assert status == 202, body


def prometheus_config(tmp: Path, worker: str, serve: str) -> Path:
    """The committed prometheus.yml with its targets pointed at the live processes and a
    one-second scrape/evaluation interval; alerts.yml next to it."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text("utf-8"))
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    targets = {"ltrr-worker": worker, "ltrr-serve": serve}
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)  # compose service names do not resolve here
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        if "authorization" in job:  # the token file the compose entrypoint writes, here
            token_file = tmp / f"{job['job_name']}.token"
            token_file.write_text(OPS_TOKEN, "utf-8")
            job["authorization"]["credentials_file"] = str(token_file)
    serve_job = next(j for j in config["scrape_configs"] if j["job_name"] == "ltrr-serve")
    assert serve_job["authorization"]["type"] == "Bearer", "serve's /metrics needs a token"
    shutil.copy(PROMETHEUS / "alerts.yml", tmp / "alerts.yml")
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), "utf-8")
    return path


def api(base: str, endpoint: str, **params: str) -> Any:
    url = f"{base}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{endpoint} {params}: {exc.read().decode()}") from exc
    assert body["status"] == "success", body
    return body["data"]


def query(base: str, expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = api(base, "query", query=expr)["result"]
    return result


def values(base: str, expr: str) -> dict[str, float]:
    """{job or instance label: value} of an instant query."""
    return {
        r["metric"].get("job", r["metric"].get("reason", "")): float(r["value"][1])
        for r in query(base, expr)
    }


@pytest.fixture
def stack(
    bootstrap: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is not installed; run scripts/tools (Debian package prometheus)")
    monkeypatch.setenv("LTRR_SNAPSHOT_KEY", KEY)
    common = ("--broker", bootstrap, "--topic-prefix", prefix, "--partitions", "2")
    worker = WorkerProcess(
        *common,
        "--app-id",
        f"ltrr-test-{prefix.rstrip('.')}",
        "--data-dir",
        str(tmp_path / "state"),
        *FAST_LOOP_FLAGS,
        log_path=tmp_path / "worker.log",
    )
    serve = ServeProcess(
        *common,
        "--catalog-path",
        str(CATALOG),
        "--strategies",
        "lexical,memory,popular,fresh",
        "--vector-cache-dir",
        str(tmp_path / "cache"),
        log_path=tmp_path / "serve.log",
        env={"LTRR_SERVE_TOKENS_OPS": OPS_TOKEN},
    )
    port = free_port()
    config = prometheus_config(tmp_path, f"127.0.0.1:{worker.port}", f"127.0.0.1:{serve.port}")
    with worker, serve, (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                exe,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            assert wait_for_port("127.0.0.1", port, 30), (tmp_path / "prometheus.log").read_text()
            yield Stack(worker, serve, f"http://127.0.0.1:{port}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def produce_broken_events(bootstrap: str, prefix: str) -> None:
    """A message that is not JSON and an action under someone else's key: two DLQ reasons."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    producer.send(prefix + "impressions", key=b"broken-1", value=b"{this is not json")
    producer.send(
        prefix + "actions", key=b"someone-else", value=orjson.dumps(action("a-x", "imp-x"))
    )
    producer.flush()
    producer.close()


def test_prometheus_scrapes_ltrr_and_every_dashboard_query_has_data(
    stack: Stack, bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    started = time.time()
    traffic = Traffic(stack.serve.url)
    traffic.thread.start()
    try:
        produce_broken_events(bootstrap, prefix)
        # A snapshot signed with the wrong key: refused (and counted) while serving goes on.
        publish(bootstrap, prefix + "snapshots", 999, b"not a model", b"not-the-key")
        wait_for(
            lambda: total(scrape(stack.serve.url, token=OPS_TOKEN), "ltrr_serving_model_version"),
            lambda version: version >= 1,
            75,
            "the retrieval worker to hot-load a model the worker learned",
        )
        # Enough one-second scrapes after the model loaded for RATE_WINDOW rates.
        wait_for(
            lambda: query(
                stack.prometheus, f"count_over_time(ltrr_serving_model_version[{RATE_WINDOW}])"
            ),
            lambda r: bool(r) and float(r[0]["value"][1]) >= 10,
            60,
            "Prometheus to scrape the served model for a while",
        )
        if os.environ.get("LTRR_WRITE_PANELS") == "1":
            time.sleep(40)  # a longer run draws more readable panels

        check_key_series(stack.prometheus)
        empty = wait_for(
            lambda: empty_dashboard_queries(stack.prometheus),
            lambda missing: not missing,
            30,
            "every dashboard query to return data",
        )
        assert empty == []
        rules = [
            rule for group in api(stack.prometheus, "rules")["groups"] for rule in group["rules"]
        ]
        assert len(rules) >= 16
        assert {r["name"]: r["health"] for r in rules if r["health"] != "ok"} == {}
    finally:
        traffic.stop.set()
        traffic.thread.join(timeout=20)
    assert traffic.errors == []
    out = ROOT / "docs" / "img" if os.environ.get("LTRR_WRITE_PANELS") == "1" else tmp_path
    for board in DASHBOARDS:
        path = render_dashboard(stack.prometheus, board, started, out)
        assert path.stat().st_size > 10_000
    settle(stack.worker)


def settle(worker: WorkerProcess, quiet_s: float = 4.0) -> None:
    """Wait until the last reward windows closed and a checkpoint acked every learned reward,
    so the worker stops promptly (Faust waits for unacked messages on SIGTERM)."""
    last: list[float] = [-1.0, time.monotonic()]

    def quiet() -> bool:
        samples = scrape(worker.url)
        seen = total(samples, "ltrr_learner_examples_total") + total(
            samples, "ltrr_learner_checkpoints_total"
        )
        if seen != last[0]:
            last[:] = [seen, time.monotonic()]
        return time.monotonic() - last[1] >= quiet_s

    wait_for(quiet, bool, 60, "the worker to learn and checkpoint its last rewards")


def check_key_series(base: str) -> None:
    assert values(base, 'up{job=~"ltrr-worker|ltrr-serve"}') == {
        "ltrr-worker": 1.0,
        "ltrr-serve": 1.0,
    }
    consumed = values(base, 'sum by (job) (ltrr_events_consumed_total{outcome="accepted"})')
    assert consumed["ltrr-worker"] > 0
    assert values(base, "sum by (job) (ltrr_rewards_total)")["ltrr-worker"] > 0
    learned = 'sum by (job) (ltrr_learner_examples_total{verdict="learned"})'
    assert values(base, learned)["ltrr-worker"] > 0
    assert values(base, "max by (job) (ltrr_model_version)")["ltrr-worker"] >= 1
    assert values(base, "max by (job) (ltrr_serving_model_version)")["ltrr-serve"] >= 1
    assert values(base, "sum by (job) (ltrr_search_latency_seconds_count)")["ltrr-serve"] > 0
    dlq = values(base, "sum by (reason) (ltrr_dlq_events_total)")
    assert dlq.get("not_json", 0) >= 1 and dlq.get("bad_key", 0) >= 1, dlq
    rejected = values(base, "sum by (reason) (ltrr_snapshots_rejected_total)")
    assert rejected.get("bad_signature", 0) >= 1, rejected
    assert 0 <= values(base, "max by (job) (ltrr_serving_model_age_seconds)")["ltrr-serve"] < 600


def empty_dashboard_queries(base: str) -> list[str]:
    """Dashboard queries (file / panel: expr) that return no series."""
    return [
        f"{board.name} / {panel['title']}: {target['expr']}"
        for board in DASHBOARDS
        for panel in json.loads(board.read_text("utf-8"))["panels"]
        for target in panel["targets"]
        if not query(base, grafana_to_promql(target["expr"], RATE_WINDOW))
    ]


# -- rendering -------------------------------------------------------------------------------

_UNITS = {
    "ops": "{:.3g}/s",
    "reqps": "{:.3g}/s",
    "bytes": "{:.3g} B",
    "none": "{:.0f}",
    "short": "{:.3g}",
}


def format_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    if unit == "percentunit":
        return f"{value:.0%}"
    return _UNITS.get(unit, _UNITS["short"]).format(value)


def render_dashboard(base: str, board: Path, since: float, out: Path) -> Path:
    """A grid of the dashboard's panels drawn from Prometheus' query_range: time series as
    lines (stacked where the panel stacks), stat panels as their last value."""
    dashboard = json.loads(board.read_text("utf-8"))
    panels = dashboard["panels"]
    cols = 4
    rows = -(-len(panels) // cols)
    end = time.time()
    fig = Figure(figsize=(cols * 5.0, rows * 3.3), dpi=90, layout="constrained")
    fig.suptitle(
        f"{dashboard['title']} — live test run, {end - since:.0f} s, one-second scrapes "
        f"(rate window {RATE_WINDOW})",
        fontsize=14,
    )
    for index, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, index + 1)
        series = []
        for target in panel["targets"]:
            data = api(
                base,
                "query_range",
                query=grafana_to_promql(target["expr"], RATE_WINDOW),
                start=f"{since:.3f}",
                end=f"{end:.3f}",
                step="1",
            )
            for result in data["result"]:
                legend = target.get("legendFormat") or ""
                for key, value in result["metric"].items():
                    legend = legend.replace("{{" + key + "}}", value)
                points = [(float(t) - since, float(v)) for t, v in result["values"]]
                series.append((legend, points))
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        if panel["type"] == "stat":
            draw_stat(ax, panel["title"], series, unit)
        else:
            stacked = panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
            draw_timeseries(ax, panel["title"], series, unit, stacked)
    path = out / f"grafana-{board.stem}.png"
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def draw_stat(ax: Any, title: str, series: list[tuple[str, list]], unit: str) -> None:
    ax.set_axis_off()
    ax.set_title(title, fontsize=11, loc="left")
    lines = [
        f"{legend}: {format_value(points[-1][1], unit)}" for legend, points in series if points
    ]
    ax.text(
        0.5,
        0.5,
        "\n".join(lines[:4]) or "no data",
        ha="center",
        va="center",
        fontsize=16 if len(lines) <= 1 else 12,
        transform=ax.transAxes,
        bbox={"boxstyle": "round", "facecolor": "#d8f5d0", "edgecolor": "#73bf69"},
    )


def draw_timeseries(
    ax: Any, title: str, series: list[tuple[str, list]], unit: str, stacked: bool
) -> None:
    ax.set_title(title, fontsize=11, loc="left")
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    ax.set_xlabel("seconds since the traffic started", fontsize=8)
    # The six series with the largest last values keep their legend; the rest are drawn grey.
    series = sorted(series, key=lambda s: -(s[1][-1][1] if s[1] else 0))
    if stacked and series:
        times = sorted({t for _, points in series for t, _ in points})
        stacks = [[dict(points).get(t, 0.0) for t in times] for _, points in series]
        ax.stackplot(times, stacks, labels=[legend for legend, _ in series], alpha=0.8)
    else:
        for rank, (legend, points) in enumerate(series):
            xs, ys = zip(*points, strict=True) if points else ((), ())
            if rank < 6:
                ax.plot(xs, ys, linewidth=1.4, label=legend)
            else:
                ax.plot(xs, ys, linewidth=0.8, color="0.7")
    if unit == "none":
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    lows = [v for _, points in series for _, v in points if v == v]  # not NaN
    if lows and min(lows) >= 0:
        ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_value(v, unit)))
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        more = f" (+{len(handles) - 6} more)" if len(handles) > 6 else ""
        ax.legend(
            handles[:6],
            labels[:6],
            fontsize=7,
            loc="upper left",
            title=more or None,
            title_fontsize=7,
        )
    if not series:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
