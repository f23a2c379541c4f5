"""docker-compose.yml and the image it builds (deploy/Dockerfile, .dockerignore).

docker-compose validates the file; the resolved configuration it prints is then checked against
ltrr itself: each ltrr service runs a command ltrr's parser accepts, sets only variables ltrr
reads, listens where its ports, health checks and Prometheus point, and keeps its state on a
named volume of its own. No container runs here.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import (
    HEALTH_PATHS,
    ROOT,
    effective_settings,
    listen_address,
    parse_ltrr_args,
    unknown_ltrr_variables,
)

COMPOSE_FILE = "docker-compose.yml"
TEST_KEY = "compose-test-only-key"
#: The serve bearer tokens the tests interpolate (two for ops: a rotation in progress).
TEST_TOKENS = {
    "LTRR_SERVE_TOKENS_SEARCH": "compose-search-token-0123456789",
    "LTRR_SERVE_TOKENS_ACTIONS": "compose-actions-token-0123456789",
    "LTRR_SERVE_TOKENS_OPS": "compose-ops-token-new-0123456789,compose-ops-token-old-0123456789",
}
#: Variables docker-compose.yml interpolates; removed from the environment the tests pass on.
INTERPOLATED = (
    "LTRR_SNAPSHOT_KEY",
    "KAFKA_CLUSTER_ID",
    "GRAFANA_ADMIN_PASSWORD",
    *TEST_TOKENS,
)
#: The services that run the ltrr image, and the command each runs.
LTRR_COMMANDS = {"topics-init": ["topics", "create"], "worker": ["worker"], "serve": ["serve"]}
SCALABLE = ("worker", "serve")


def docker_compose(
    *args: str, snapshot_key: str | None = TEST_KEY, without: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """docker-compose on the file, with the test key and tokens (less ``without``)."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed; scripts/tools installs it (Debian package)"
    env = {k: v for k, v in os.environ.items() if k not in INTERPOLATED}
    if snapshot_key is not None:
        env["LTRR_SNAPSHOT_KEY"] = snapshot_key
    env.update({k: v for k, v in TEST_TOKENS.items() if k not in without})
    return subprocess.run(
        [binary, "-f", COMPOSE_FILE, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The configuration docker-compose resolves (anchors merged, variables interpolated)."""
    done = docker_compose("config")
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = yaml.safe_load(done.stdout)
    return resolved


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = config["services"]
    return found


def unescape(text: str) -> str:
    """Undo compose's ``$$`` escape: the text the container receives."""
    return text.replace("$$", "$")


def as_list(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value)


def ltrr_process(svc: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """What follows ``ltrr`` in the service's container, and the environment it sees.

    The image's entrypoint is ``ltrr``; a service may instead wrap it in the claim-slot script,
    which exports a per-replica directory as the setting named by SLOT_SETTING and then execs
    ``ltrr`` with the service's command.
    """
    env = {k: "" if v is None else str(v) for k, v in svc.get("environment", {}).items()}
    entrypoint = svc.get("entrypoint")
    if entrypoint is not None:
        entrypoint = as_list(entrypoint)
        assert entrypoint[:2] == ["/bin/sh", "-c"], entrypoint
        assert 'exec ltrr "$@"' in unescape(entrypoint[2]), "the wrapper must exec ltrr"
        env[env["SLOT_SETTING"]] = f"{env['SLOT_ROOT']}/replica-0"
    return as_list(svc.get("command", [])), env


def container_ports(svc: dict[str, Any]) -> set[int]:
    """Ports the service's containers are reached on inside the compose network."""
    ports = {int(str(p).split("/")[0]) for p in svc.get("expose", [])}
    for spec in svc.get("ports", []):
        ports.add(int(str(spec).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def published_host_ports(svc: dict[str, Any]) -> list[str]:
    """Fixed host ports the service publishes ('' for an ephemeral one)."""
    out = []
    for spec in svc.get("ports", []):
        rest = str(spec).split("/")[0].rpartition(":")[0]
        out.append(rest.rpartition(":")[2] if rest else "")
    return out


def mounts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume: absolute sources are bind mounts, others named."""
    out = []
    for spec in svc.get("volumes", []):
        parts = str(spec).split(":")
        out.append((parts[0], parts[1]))
    return out


def listening_ports(name: str, svc: dict[str, Any]) -> set[int]:
    """Ports a process in the service listens on: ltrr's from its settings, else published."""
    if name in LTRR_COMMANDS:
        argv, env = ltrr_process(svc)
        args = parse_ltrr_args(argv)
        address = listen_address(args, effective_settings(args, env))
        return set() if address is None else {address[1]}
    return container_ports(svc)


# -- the file itself --------------------------------------------------------------------------


def test_docker_compose_validates_the_file() -> None:
    done = docker_compose("config", "-q")
    assert done.returncode == 0, done.stderr


def test_stack_refuses_to_start_without_a_snapshot_key() -> None:
    done = docker_compose("config", "-q", snapshot_key=None)
    assert done.returncode != 0
    assert "LTRR_SNAPSHOT_KEY" in done.stderr


@pytest.mark.parametrize("name", sorted(TEST_TOKENS))
def test_stack_refuses_to_start_without_serve_tokens(name: str) -> None:
    done = docker_compose("config", "-q", without=(name,))
    assert done.returncode != 0
    assert name in done.stderr


def test_serve_gets_every_scope_token_and_would_start(services: dict[str, Any]) -> None:
    """serve binds 0.0.0.0, so it starts only with every scope protected."""
    argv, env = ltrr_process(services["serve"])
    settings = effective_settings(parse_ltrr_args(argv), env)
    assert settings.serve_exposure_problem() is None
    assert {scope: ",".join(t) for scope, t in settings.serve_tokens().items()} == {
        name.rsplit("_", 1)[1].lower(): value for name, value in TEST_TOKENS.items()
    }
    for name in ("worker", "topics-init"):  # tokens go to serve only
        assert not set(TEST_TOKENS) & set(services[name].get("environment", {}))


def test_prometheus_sends_the_first_ops_token_to_serve(
    services: dict[str, Any], tmp_path: Path
) -> None:
    """Run the Prometheus entrypoint for real with a stand-in prometheus: it writes the first
    ops token to the credentials file that prometheus.yml's serve job names."""
    svc = services["prometheus"]
    _, prom, _ = prometheus_config(services)
    (serve_job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "ltrr-serve"]
    auth = serve_job["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    entrypoint = [unescape(part) for part in as_list(svc["entrypoint"])]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    script = entrypoint[2].replace(auth["credentials_file"], str(tmp_path / "token"))
    script = script.replace("/bin/prometheus", "echo")
    env = {"PATH": os.environ["PATH"], **svc["environment"]}
    done = subprocess.run(
        ["/bin/sh", "-c", script, "prometheus", "--config.file=x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "--config.file=x"
    first = TEST_TOKENS["LTRR_SERVE_TOKENS_OPS"].split(",")[0]
    assert (tmp_path / "token").read_text() == first
    assert (tmp_path / "token").stat().st_mode & 0o077 == 0


def test_the_stack_has_every_piece(services: dict[str, Any]) -> None:
    assert set(services) == {*LTRR_COMMANDS, "kafka", "prometheus", "grafana"}
    ltrr = {n for n, s in services.items() if s.get("build", {}).get("dockerfile")}
    assert ltrr == set(LTRR_COMMANDS)
    assert {s["build"]["dockerfile"] for n, s in services.items() if n in ltrr} == {
        "deploy/Dockerfile"
    }


def test_images_are_pinned(services: dict[str, Any]) -> None:
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    for name, svc in services.items():
        repo, _, tag = svc["image"].rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: pin {svc['image']} to a version"


# -- ltrr services: command, settings, ports ----------------------------------------------


@pytest.mark.parametrize("name", sorted(LTRR_COMMANDS))
def test_ltrr_service_runs_a_real_command(services: dict[str, Any], name: str) -> None:
    argv, env = ltrr_process(services[name])
    args = parse_ltrr_args(argv)
    assert argv[: len(LTRR_COMMANDS[name])] == LTRR_COMMANDS[name]
    assert unknown_ltrr_variables(env) == []
    settings = effective_settings(args, env)
    assert settings.broker == "kafka:9092"


@pytest.mark.parametrize("name", sorted(LTRR_COMMANDS))
def test_ltrr_service_listens_where_it_is_reached(services: dict[str, Any], name: str) -> None:
    svc = services[name]
    argv, env = ltrr_process(svc)
    args = parse_ltrr_args(argv)
    address = listen_address(args, effective_settings(args, env))
    if address is None:  # a one-shot command: nothing to reach or probe
        assert not svc.get("ports") and not svc.get("expose") and "healthcheck" not in svc
        return
    host, port = address
    assert host == "0.0.0.0", f"{name} binds {host}: unreachable from other containers"
    assert container_ports(svc) == {port}
    probe = " ".join(as_list(svc["healthcheck"]["test"]))
    assert any(f"127.0.0.1:{port}{path}'" in probe for path in HEALTH_PATHS), probe


@pytest.mark.parametrize("name", SCALABLE)
def test_scalable_service_has_no_fixed_names_or_host_ports(
    services: dict[str, Any], name: str
) -> None:
    svc = services[name]
    assert "container_name" not in svc
    assert all(p == "" for p in published_host_ports(svc)), "replicas would collide"


@pytest.mark.parametrize("name", SCALABLE)
def test_scalable_service_keeps_replica_state_on_its_own_named_volume(
    services: dict[str, Any], name: str
) -> None:
    _, env = ltrr_process(services[name])
    named = {target: source for source, target in mounts(services[name]) if "/" not in source}
    assert env["SLOT_ROOT"] in named, "the replica directories must be on a named volume"
    volume = named[env["SLOT_ROOT"]]
    users = [n for n, s in services.items() if volume in (src for src, _ in mounts(s))]
    assert users == [name]


def test_claim_slot_gives_each_live_replica_its_own_directory(
    services: dict[str, Any], tmp_path: Path
) -> None:
    """Run the worker's wrapper for real with a stand-in ``ltrr``: two live replicas get two
    directories; once one stops, the next replica gets its directory back."""
    script = unescape(as_list(services["worker"]["entrypoint"])[2])
    fake = tmp_path / "bin" / "ltrr"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintenv "$SLOT_SETTING"\nexec sleep 30\n')
    fake.chmod(0o755)
    env = {
        "PATH": f"{fake.parent}:{os.environ['PATH']}",
        "SLOT_ROOT": str(tmp_path / "state"),
        "SLOT_SETTING": "LTRR_DATA_DIR",
    }

    def start() -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", script, "claim-slot", "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        return proc, proc.stdout.readline().strip()

    first, dir_a = start()
    second, dir_b = start()
    try:
        assert dir_a == f"{env['SLOT_ROOT']}/replica-0"
        assert dir_b == f"{env['SLOT_ROOT']}/replica-1"
        first.kill()
        first.wait(10)
        third, dir_c = start()
        third.kill()
        third.wait(10)
        assert dir_c == dir_a
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait(10)


def test_worker_and_serve_share_the_snapshot_key(services: dict[str, Any]) -> None:
    keys = {services[n]["environment"]["LTRR_SNAPSHOT_KEY"] for n in SCALABLE}
    assert keys == {TEST_KEY}


def test_brokers_are_advertised_by_kafka(services: dict[str, Any]) -> None:
    advertised = {
        listener.split("://", 1)[1]
        for listener in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for name in LTRR_COMMANDS:
        for broker in services[name]["environment"]["LTRR_BROKER"].split(","):
            assert broker in advertised, f"{name}: {broker} is not a listener of kafka"


def test_start_order(services: dict[str, Any]) -> None:
    assert "healthcheck" in services["kafka"]
    assert services["topics-init"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    for name in SCALABLE:
        assert services[name]["depends_on"] == {
            "topics-init": {"condition": "service_completed_successfully"}
        }
    assert services["topics-init"]["restart"] == "no"


def test_every_service_has_health_restart_and_limits(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        assert {"cpus", "memory"} <= set(limits), f"{name}: no resource limits"
        if name == "topics-init":
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no health check"
        assert svc.get("restart") in {"always", "unless-stopped", "on-failure"}, name


def test_bind_mounts_exist(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for source, _ in mounts(svc):
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"


# -- Prometheus and Grafana -----------------------------------------------------------------


def prometheus_config(services: dict[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    """(path in the container, parsed prometheus.yml, mount targets of the service)."""
    svc = services["prometheus"]
    flag = next(a for a in as_list(svc["command"]) if a.startswith("--config.file="))
    path = flag.split("=", 1)[1]
    sources = {target: source for source, target in mounts(svc)}
    assert path in sources, f"{path} is not mounted into prometheus"
    assert Path(sources[path]) == ROOT / "deploy/prometheus/prometheus.yml"
    parsed: dict[str, Any] = yaml.safe_load(Path(sources[path]).read_text("utf-8"))
    return path, parsed, list(sources)


def test_prometheus_scrapes_services_and_ports_that_exist(services: dict[str, Any]) -> None:
    _, prom, _ = prometheus_config(services)
    scraped: set[str] = set()
    for job in prom["scrape_configs"]:
        targets = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        for sd in job.get("dns_sd_configs", []):
            targets += [f"{host}:{sd['port']}" for host in sd["names"]]
        for target in targets:
            host, _, port = target.rpartition(":")
            if host in {"localhost", "127.0.0.1"}:  # Prometheus scraping itself
                host = "prometheus"
            assert host in services, f"job {job['job_name']}: {host} is not a compose service"
            assert int(port) in listening_ports(host, services[host]), (
                f"job {job['job_name']}: nothing listens on {target}"
            )
            scraped.add(host)
    assert {"worker", "serve"} <= scraped


def test_prometheus_rule_files_are_mounted(services: dict[str, Any]) -> None:
    path, prom, targets = prometheus_config(services)
    rules = prom.get("rule_files", [])
    assert rules, "no alert rules loaded"
    for rule in rules:
        resolved = rule if rule.startswith("/") else f"{path.rpartition('/')[0]}/{rule}"
        assert resolved in targets, f"rule file {resolved} is not mounted into prometheus"
    sources = {source for source, _ in mounts(services["prometheus"])}
    assert str(ROOT / "deploy/prometheus/alerts.yml") in sources


def grafana_mount(services: dict[str, Any], source: str) -> str:
    found = [t for s, t in mounts(services["grafana"]) if Path(s) == ROOT / source]
    assert found, f"{source} is not mounted into grafana"
    return found[0]


def provisioning_files(kind: str) -> list[dict[str, Any]]:
    folder = ROOT / "deploy/grafana/provisioning" / kind
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    assert files, f"no Grafana {kind} provisioning in {folder}"
    return [yaml.safe_load(f.read_text("utf-8")) for f in files]


def test_grafana_dashboard_providers_read_the_mounted_dashboards(
    services: dict[str, Any],
) -> None:
    assert grafana_mount(services, "deploy/grafana/provisioning") == "/etc/grafana/provisioning"
    dashboards = grafana_mount(services, "deploy/grafana/dashboards")
    for doc in provisioning_files("dashboards"):
        for provider in doc["providers"]:
            path = provider["options"]["path"].rstrip("/")
            assert path == dashboards or path.startswith(dashboards + "/"), (
                f"provider {provider.get('name')} reads {path}; dashboards are at {dashboards}"
            )


def test_grafana_datasource_points_at_prometheus(services: dict[str, Any]) -> None:
    urls = [
        ds["url"]
        for doc in provisioning_files("datasources")
        for ds in doc.get("datasources", [])
        if ds.get("type") == "prometheus"
    ]
    assert urls, "no Prometheus datasource provisioned"
    for url in urls:
        host, _, port = url.split("://", 1)[1].split("/", 1)[0].partition(":")
        assert host in services, f"{url}: {host} is not a compose service"
        assert int(port or 80) in container_ports(services[host]), f"{url}: wrong port"


# -- the image ------------------------------------------------------------------------------


def dockerfile_final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile's last stage, continuation lines joined."""
    text = (ROOT / "deploy/Dockerfile").read_text("utf-8")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    stage: list[tuple[str, str]] = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stage = []
        stage.append((instruction.upper(), rest.strip()))
    return stage


def test_image_runs_ltrr_as_a_non_root_user() -> None:
    stage = dict(dockerfile_final_stage())
    assert json.loads(stage["ENTRYPOINT"]) == ["ltrr"]
    assert stage["USER"].split(":")[0] not in {"0", "root"}


def test_image_environment_names_only_settings() -> None:
    names = [
        token.split("=", 1)[0]
        for instruction, rest in dockerfile_final_stage()
        if instruction == "ENV"
        for token in shlex.split(rest)
    ]
    assert any(n.startswith("LTRR_") for n in names)
    assert unknown_ltrr_variables(names) == []


def test_image_build_copies_every_package_and_the_context_keeps_them() -> None:
    """A package added to pyproject.toml must reach the image: COPY and .dockerignore. The
    ``ltrr`` package reaches the root folders through symlinks (ltrr/agents -> ../agents):
    their targets must be in the build context too, or pip would build a wheel without them."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    linked = {p.resolve().name for p in (ROOT / "ltrr").iterdir() if p.is_symlink()}
    assert {"agents", "streams", "schemas", "state", "retrieval"} <= linked
    needed = {p.split(".")[0].rstrip("*") for p in include} | linked
    needed |= {"pyproject.toml", "README.md"}
    copied: set[str] = set()
    for line in (ROOT / "deploy/Dockerfile").read_text("utf-8").splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied.update(w.rstrip("/") for w in line.split()[1:-1] if not w.startswith("--"))
    assert needed <= copied
    kept = {
        line[1:].strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text("utf-8").splitlines()
        if line.startswith("!")
    }
    assert needed <= kept
