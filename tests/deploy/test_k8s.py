"""deploy/k8s/: every manifest validates against the Kubernetes API schemas (strict: unknown
fields are errors), and every ltrr container runs a command ltrr's parser accepts, with only
variables ltrr reads, probed and served on the port its settings make it listen on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ltrr.streams.exceptions import SettingsError
from ltrr.streams.settings import Settings
from tests.deploy import (
    ROOT,
    effective_settings,
    listen_address,
    parse_ltrr_args,
    unknown_ltrr_variables,
)

K8S_DIR = ROOT / "deploy/k8s"
#: The Kubernetes version validated against (kubernetes-validate ships its schemas).
K8S_VERSION = "1.31.0"
LTRR_IMAGE = "ltrr:"
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}
#: The bearer-token settings of the retrieval worker, one per scope.
SERVE_TOKENS = ("LTRR_SERVE_TOKENS_SEARCH", "LTRR_SERVE_TOKENS_ACTIONS", "LTRR_SERVE_TOKENS_OPS")


def load_manifests() -> list[tuple[Path, dict[str, Any]]]:
    files = sorted(K8S_DIR.glob("*.yaml"))
    assert files, f"no manifests in {K8S_DIR}"
    return [
        (path, doc)
        for path in files
        for doc in yaml.safe_load_all(path.read_text("utf-8"))
        if doc  # empty documents between separators
    ]


MANIFESTS = load_manifests()
DOCS = [doc for _, doc in MANIFESTS]


def ident(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def find(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} manifests"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def ltrr_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container that runs the ltrr image."""
    return [
        (doc, c)
        for doc in DOCS
        if doc["kind"] in WORKLOADS
        for c in pod_spec(doc)["containers"]
        if c["image"].startswith(LTRR_IMAGE) or "/ltrr:" in c["image"]
    ]


LTRR_CONTAINERS = ltrr_containers()


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment, resolving envFrom and valueFrom within these manifests."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find("ConfigMap", source["configMapRef"]["name"]).get("data", {}))
        else:
            secret = find("Secret", source["secretRef"]["name"])
            env.update(secret.get("stringData", {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]
            kind, key = ("ConfigMap", "configMapKeyRef")
            if "secretKeyRef" in ref:
                kind, key = ("Secret", "secretKeyRef")
            doc = find(kind, ref[key]["name"])
            env[var["name"]] = {**doc.get("data", {}), **doc.get("stringData", {})}[ref[key]["key"]]
    return env


def ltrr_process(container: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """What follows ``ltrr`` (the image's entrypoint) and the environment, with the shipped
    empty snapshot key replaced as an operator would."""
    assert "command" not in container, "keep the image's entrypoint (ltrr); put flags in args"
    env = container_env(container)
    if env.get("LTRR_SNAPSHOT_KEY") == "":
        env["LTRR_SNAPSHOT_KEY"] = "operator-provided-key"
    for name in SERVE_TOKENS:
        if env.get(name) == "":
            env[name] = f"operator-provided-{name.lower().replace('_', '-')}"
    return list(container["args"]), env


def ids(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    return [f"{ident(doc)}:{c['name']}" for doc, c in pairs]


# -- schema validation ----------------------------------------------------------------------


@pytest.mark.parametrize("path, doc", MANIFESTS, ids=[f"{p.name}:{ident(d)}" for p, d in MANIFESTS])
def test_manifest_validates_strictly(path: Path, doc: dict[str, Any]) -> None:
    """kubernetes-validate's Python API: unlike its CLI, an unknown kind is an error here."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        location = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{path.name} {ident(doc)}: {location}: {exc.message}")


def test_namespace_comes_first_and_holds_everything() -> None:
    first = DOCS[0]
    assert first["kind"] == "Namespace"
    namespace = first["metadata"]["name"]
    for doc in DOCS[1:]:
        assert doc["metadata"].get("namespace") == namespace, ident(doc)


def test_the_manifests_have_every_piece() -> None:
    kinds = {ident(d) for d in DOCS}
    assert {
        "ConfigMap/ltrr-config",
        "Secret/ltrr-snapshot-key",
        "Job/ltrr-topics-init",
        "StatefulSet/ltrr-worker",
        "Service/ltrr-worker",
        "Deployment/ltrr-serve",
        "Service/ltrr-serve",
        "HorizontalPodAutoscaler/ltrr-serve",
        "Secret/ltrr-serve-tokens",
        "NetworkPolicy/ltrr-default-deny",
        "NetworkPolicy/ltrr-egress-broker",
        "NetworkPolicy/ltrr-serve-ingress",
        "NetworkPolicy/ltrr-worker-ingress",
    } <= kinds
    commands = sorted(tuple(c["args"][:2]) for _, c in LTRR_CONTAINERS)
    assert commands == [("serve",), ("topics", "create"), ("worker",)]


# -- ltrr containers --------------------------------------------------------------------------


@pytest.mark.parametrize("doc, container", LTRR_CONTAINERS, ids=ids(LTRR_CONTAINERS))
def test_container_runs_a_real_command(doc: dict[str, Any], container: dict[str, Any]) -> None:
    argv, env = ltrr_process(container)
    args = parse_ltrr_args(argv)
    assert unknown_ltrr_variables(env) == []
    effective_settings(args, env)  # raises if a value does not parse or validate


@pytest.mark.parametrize("doc, container", LTRR_CONTAINERS, ids=ids(LTRR_CONTAINERS))
def test_container_is_probed_and_served_where_it_listens(
    doc: dict[str, Any], container: dict[str, Any]
) -> None:
    argv, env = ltrr_process(container)
    args = parse_ltrr_args(argv)
    address = listen_address(args, effective_settings(args, env))
    if address is None:  # the topics job: nothing listens, nothing to probe
        assert not container.get("ports")
        return
    host, port = address
    assert host == "0.0.0.0", f"binds {host}: unreachable from the kubelet and Services"
    ports = {p["containerPort"] for p in container["ports"]}
    names = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    assert ports == {port}
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if probe not in container:
            assert probe == "startupProbe", f"no {probe}"
            continue
        get = container[probe]["httpGet"]
        assert names.get(get["port"], get["port"]) == port, f"{probe} port {get['port']}"
        assert get["path"] == expected.get(probe, "/healthz"), f"{probe} path {get['path']}"


@pytest.mark.parametrize("doc, container", LTRR_CONTAINERS, ids=ids(LTRR_CONTAINERS))
def test_container_has_requests_and_limits(doc: dict[str, Any], container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("doc, container", LTRR_CONTAINERS, ids=ids(LTRR_CONTAINERS))
def test_writable_paths_are_volumes(doc: dict[str, Any], container: dict[str, Any]) -> None:
    """With a read-only root file system, the state and cache directories must be mounts."""
    argv, env = ltrr_process(container)
    args = parse_ltrr_args(argv)
    settings = effective_settings(args, env)
    mounted = {m["mountPath"] for m in container.get("volumeMounts", [])}
    assert "/tmp" in mounted
    needs = {"worker": settings.data_dir, "serve": settings.vector_cache_dir}.get(args.command)
    if needs is not None:
        assert any(needs == m or needs.startswith(m.rstrip("/") + "/") for m in mounted), needs


# -- objects that refer to each other ---------------------------------------------------------


def test_worker_state_is_a_persistent_claim_per_pod() -> None:
    sts = find("StatefulSet", "ltrr-worker")
    (container,) = pod_spec(sts)["containers"]
    argv, env = ltrr_process(container)
    data_dir = effective_settings(parse_ltrr_args(argv), env).data_dir
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    state = [m for m in container["volumeMounts"] if m["name"] in claims]
    assert [m["mountPath"] for m in state] == [data_dir]
    headless = find("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_services_select_pods_and_target_their_ports() -> None:
    for svc in (d for d in DOCS if d["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        backends = [
            d
            for d in DOCS
            if d["kind"] in WORKLOADS - {"Job"}
            and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert backends, f"{ident(svc)} selects no pods"
        for backend in backends:
            ports = [p for c in pod_spec(backend)["containers"] for p in c.get("ports", [])]
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                assert any(target in (p.get("name"), p["containerPort"]) for p in ports), (
                    f"{ident(svc)} targets {target}, not a port of {ident(backend)}"
                )


def test_autoscaler_targets_the_retrieval_deployment() -> None:
    hpa = find("HorizontalPodAutoscaler", "ltrr-serve")
    ref = hpa["spec"]["scaleTargetRef"]
    deployment = find(ref["kind"], ref["name"])
    (container,) = pod_spec(deployment)["containers"]
    assert container["args"][0] == "serve"
    # Utilization targets are relative to requests: the container must request CPU.
    assert "cpu" in container["resources"]["requests"]
    assert hpa["spec"]["minReplicas"] >= 2


def test_shipped_snapshot_key_is_empty_and_refused() -> None:
    """The Secret is a placeholder that fails closed: ltrr will not start with it unfilled."""
    secret = find("Secret", "ltrr-snapshot-key")
    assert secret["stringData"] == {"LTRR_SNAPSHOT_KEY": ""}
    with pytest.raises(SettingsError, match="LTRR_SNAPSHOT_KEY"):
        Settings.load({"LTRR_SNAPSHOT_KEY": ""}).require_snapshot_key()


# -- access: tokens and network policies ------------------------------------------------------


def serve_container() -> dict[str, Any]:
    (container,) = pod_spec(find("Deployment", "ltrr-serve"))["containers"]
    return container


def test_serve_gets_its_tokens_from_a_secret() -> None:
    container = serve_container()
    secrets = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
    from_secrets: dict[str, str] = {}
    for name in secrets:
        from_secrets.update(find("Secret", name).get("stringData", {}))
    assert set(SERVE_TOKENS) <= set(from_secrets), "serve's tokens must come from a Secret"
    assert not set(SERVE_TOKENS) & set(find("ConfigMap", "ltrr-config")["data"])
    assert not any(v["name"] in SERVE_TOKENS and "value" in v for v in container.get("env", []))
    # Shipped empty: serve binds 0.0.0.0 and refuses to start until an operator fills them.
    assert all(from_secrets[name] == "" for name in SERVE_TOKENS)
    shipped = container_env(container)
    shipped["LTRR_SNAPSHOT_KEY"] = "operator-provided-key"
    args = parse_ltrr_args(container["args"])
    assert effective_settings(args, shipped).serve_exposure_problem() is not None
    argv, filled = ltrr_process(container)
    assert effective_settings(parse_ltrr_args(argv), filled).serve_exposure_problem() is None


def test_only_serve_gets_the_tokens() -> None:
    for doc, container in LTRR_CONTAINERS:
        if container["args"][0] != "serve":
            assert not set(SERVE_TOKENS) & set(container_env(container)), ident(doc)


def policies() -> list[dict[str, Any]]:
    return [d for d in DOCS if d["kind"] == "NetworkPolicy"]


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return wanted.items() <= labels.items()


def test_every_pod_starts_closed_both_ways() -> None:
    deny = find("NetworkPolicy", "ltrr-default-deny")["spec"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny.get("ingress") and not deny.get("egress")


def ingress_rules(component: str) -> list[dict[str, Any]]:
    doc = next(
        d
        for d in WORKLOADS_BY_COMPONENT
        if d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )
    labels = doc["spec"]["template"]["metadata"]["labels"]
    return [
        rule
        for policy in policies()
        if selects(policy, labels) and "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", [])
    ]


WORKLOADS_BY_COMPONENT = [d for d in DOCS if d["kind"] in {"Deployment", "StatefulSet"}]


def listening_port(component: str) -> int:
    for _, container in LTRR_CONTAINERS:
        if container["args"][0] == component:
            argv, env = ltrr_process(container)
            args = parse_ltrr_args(argv)
            address = listen_address(args, effective_settings(args, env))
            assert address is not None
            return address[1]
    raise AssertionError(f"no {component} container")


PROMETHEUS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}


@pytest.mark.parametrize("component", ["serve", "worker"])
def test_ingress_only_on_the_listening_port_and_only_from_named_peers(component: str) -> None:
    rules = ingress_rules(component)
    assert rules, f"no ingress rule admits anything to {component}"
    port = listening_port(component)
    for rule in rules:
        assert [p["port"] for p in rule["ports"]] == [port]
        assert rule.get("from"), "a rule without 'from' admits every source"
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            assert peer.get("namespaceSelector", {}).get("matchLabels"), peer
    peers = [peer for rule in rules for peer in rule["from"]]
    assert PROMETHEUS_PEER in peers, f"Prometheus cannot scrape {component}"
    if component == "worker":
        assert peers == [PROMETHEUS_PEER], "worker metrics: Prometheus only"


def test_egress_reaches_the_brokers_and_dns() -> None:
    broker = find("ConfigMap", "ltrr-config")["data"]["LTRR_BROKER"]
    host, _, port = broker.rpartition(":")
    namespace = host.split(".")[1]
    egress = find("NetworkPolicy", "ltrr-egress-broker")["spec"]
    assert egress["podSelector"] == {}
    rules = egress["egress"]
    to_broker = [
        r
        for r in rules
        if any(
            peer.get("namespaceSelector", {})
            .get("matchLabels", {})
            .get("kubernetes.io/metadata.name")
            == namespace
            for peer in r["to"]
        )
    ]
    assert [p["port"] for r in to_broker for p in r["ports"]] == [int(port)]
    dns = [p for r in rules for p in r["ports"] if p["port"] == 53]
    assert {p["protocol"] for p in dns} == {"UDP", "TCP"}
