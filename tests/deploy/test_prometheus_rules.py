"""The Prometheus configuration, alert rules and Grafana dashboards in ``deploy/`` are valid:
promtool accepts the config and the rules and passes the rule unit tests, every alert is tested
firing and silent, and every PromQL expression of the dashboards names only metrics ltrr
defines. promtool missing is a failure, not a skip (``scripts/tools`` installs it)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$:])[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan", "by", "without"}
_KEYWORDS.update(("on", "ignoring", "group_left", "group_right"))


def dashboard_targets() -> list[tuple[str, str, dict[str, Any]]]:
    """(dashboard file name, panel title, target) for every query of every dashboard."""
    return [
        (path.name, panel["title"], target)
        for path in DASHBOARDS
        for panel in json.loads(path.read_text("utf-8"))["panels"]
        for target in panel.get("targets", [])
    ]


def grafana_to_promql(expr: str, rate_interval: str = "1m") -> str:
    """Replace Grafana's interval variables so Prometheus can evaluate the expression."""
    for var in ("$__rate_interval", "$__interval", "${__rate_interval}", "${__interval}"):
        expr = expr.replace(var, rate_interval)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENT.findall(text) if name not in _KEYWORDS}


def defined_series() -> set[str]:
    """Every series name the worker and the retrieval worker can expose, plus ``up``."""
    from prometheus_client import REGISTRY

    import ltrr.agents.metrics
    import ltrr.retrieval.metrics  # noqa: F401

    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("", "_count", "_sum"),
    }
    names = {"up"}
    for family in REGISTRY.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed; run scripts/tools (Debian package prometheus)")
    return subprocess.run(
        [exe, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
    )


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    """promtool checks the files a config names exist: the serve job's token file is written
    by the compose entrypoint at start, so it is checked here against a stand-in."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text("utf-8"))
    checked = copy.deepcopy(config)
    for job in checked["scrape_configs"]:
        if "authorization" in job:
            (tmp_path / "token").write_text("stand-in-token", "utf-8")
            job["authorization"]["credentials_file"] = str(tmp_path / "token")
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(checked), "utf-8")
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert config["rule_files"] == ["alerts.yml"]
    # Every replica of a scaled compose service, from its DNS A records.
    jobs = {
        job["job_name"]: [(sd["names"], sd["type"], sd["port"]) for sd in job["dns_sd_configs"]]
        for job in config["scrape_configs"]
    }
    assert jobs == {
        "ltrr-worker": [(["worker"], "A", 6066)],
        "ltrr-serve": [(["serve"], "A", 8080)],
    }


def test_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_complete_and_tested_firing_and_silent() -> None:
    rules = [
        rule
        for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text("utf-8"))["groups"]
        for rule in group["rules"]
    ]
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
    cases = [
        case
        for test in yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text("utf-8"))["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    fired = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = {rule["alert"] for rule in rules}
    assert names - fired == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    source = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text("utf-8")
    )["datasources"][0]
    assert (source["type"], source["url"], source["uid"]) == (
        "prometheus",
        "http://prometheus:9090",
        "prometheus",
    )
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "ltrr.yml").read_text("utf-8")
    )["providers"][0]
    assert (provider["type"], provider["options"]["path"]) == (
        "file",
        "/var/lib/grafana/dashboards",
    )
    assert [p.name for p in DASHBOARDS] == ["learning-loop.json", "serving.json"]
    for path in DASHBOARDS:
        board = json.loads(path.read_text("utf-8"))
        assert board["uid"] and board["title"], path.name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == source["uid"], (path.name, panel["title"])
            assert panel["targets"], (path.name, panel["title"])


def test_metric_names_are_extracted_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, model) (rate(a_seconds_bucket{x="y z"}[5m])))'
        " / ignoring (plan) group_left sum(b_total offset 1d) > 1e3 and on () up"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "up"}
    assert metric_names(grafana_to_promql("rate(c_total[$__rate_interval])")) == {"c_total"}


@pytest.mark.parametrize(
    ("board", "title", "target"),
    dashboard_targets(),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_dashboard_queries_use_only_defined_metrics(
    board: str, title: str, target: dict[str, Any]
) -> None:
    names = metric_names(grafana_to_promql(target["expr"]))
    assert names, target["expr"]
    unknown = names - defined_series()
    assert not unknown, f"{board} / {title}: {sorted(unknown)} not defined in agents/ or retrieval/"
