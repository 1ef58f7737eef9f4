"""Every service binary is deployable, safely, in both overlays (rendered by kustomize)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from conftest import (
    DESIGN_SERVICES,
    EDGE,
    REPO,
    SINGLETONS,
    all_services,
    deployed_services,
    docs,
    render_kustomization,
    workspace_services,
)

SERVICES = all_services()
DB_SERVICES = [s for s in SERVICES if s not in EDGE and s not in SINGLETONS]

# Who may open a gRPC connection to whom (shared/ARCHITECTURE.md): callee -> callers.
# Every service with RPCs for users fetches identity's GetJwks to verify their tokens.
TOKEN_VERIFIERS = {"catalog", "identity", "inventory", "notifications", "orders", "shipping"}
CALLERS = {
    "identity": {"gateway"} | TOKEN_VERIFIERS,
    "catalog": {"gateway", "orders"},
    "inventory": {"gateway", "orders"},
    "orders": {"gateway"},
    "payments": {"orders"},
    "payment-processor": {"payments"},
    "shipping": {"gateway"},
    "notifications": {"gateway"},
}
INFRA_EGRESS = {"postgres", "nats", "otel-collector"}

DRAIN_SECS = 5
GRACE_SECS = 20


def container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_service_lists_agree():
    """Every workspace service has manifests, and the manifests name only design services."""
    missing = sorted(set(workspace_services()) - set(deployed_services()))
    assert not missing, f"services without k8s/base/services/<name>: {missing}"
    assert set(deployed_services()) <= set(DESIGN_SERVICES)
    assert SERVICES, "no services found in services/ nor k8s/base/services/"


@pytest.mark.parametrize("service", sorted(workspace_services()))
def test_binary_is_named_after_its_directory(service):
    """The Dockerfile copies target/release/<SERVICE>; Tilt passes the directory name."""
    assert service in workspace_services()[service]


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_and_probes(rendered, overlay, service):
    m = rendered[overlay]
    deployment = m.get("Deployment", service)
    assert deployment, f"{overlay}: no Deployment {service}"
    c = container(deployment)
    assert c["name"] == service
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in c, f"{overlay}/{service}: no {probe}"
    # The admin port's /readyz, which follows grpc.health.v1: the kubelet's native gRPC probe
    # cannot speak the mutual TLS of the gRPC port.
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/readyz", "port": "admin"}, f"{service} {probe}"
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["admin"] == 9090
    assert ports.get("http" if service in EDGE else "grpc") == (8080 if service in EDGE else 50051)


@pytest.mark.parametrize("service", SERVICES)
def test_pod_security(rendered, overlay, service):
    deployment = rendered[overlay].get("Deployment", service)
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == service
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{service}: {kind}"
    assert pod["terminationGracePeriodSeconds"] > DRAIN_SECS + GRACE_SECS


@pytest.mark.parametrize("service", SERVICES)
def test_configuration(rendered, overlay, service):
    m = rendered[overlay]
    c = container(m.get("Deployment", service))
    config = m.get("ConfigMap", f"{service}-config")
    assert config, f"{overlay}: no ConfigMap {service}-config"
    assert {"configMapRef": {"name": f"{service}-config"}} in c["envFrom"]
    data = config["data"]
    assert data["GRPC_ADDR"] == "0.0.0.0:50051"
    assert data["ADMIN_ADDR"] == "0.0.0.0:9090"
    assert data["LOG_FORMAT"] == "json"
    assert data["SHUTDOWN_DRAIN_SECS"] == str(DRAIN_SECS)
    assert data["SHUTDOWN_GRACE_SECS"] == str(GRACE_SECS)
    if service in SINGLETONS:
        assert "NATS_URL" not in data and "DATABASE_URL" not in {e["name"] for e in c.get("env", [])}
    elif service not in EDGE:
        assert data["NATS_URL"].startswith("nats://")
        assert data["NATS_STREAM_REPLICAS"] == ("3" if overlay == "prod" else "1")
        assert data["MIGRATE_ON_START"] == "true"
        env = {e["name"]: e for e in c.get("env", [])}
        ref = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == "DATABASE_URL" and ref["name"].startswith(f"{service}-db")
    assert "DATABASE_URL" not in data, "a connection URL with a password in a ConfigMap"
    account = m.get("ServiceAccount", service)
    assert account and account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("service", SERVICES)
def test_services_pdb_and_policy(rendered, overlay, service):
    m = rendered[overlay]
    services = {s["metadata"]["name"]: s for s in m.selecting("Service", service)}
    assert service in services, f"{overlay}: no ClusterIP Service {service}"
    assert services[f"{service}-headless"]["spec"]["clusterIP"] == "None"
    assert m.selecting("PodDisruptionBudget", service), f"{overlay}: no PDB for {service}"
    policies = m.selecting("NetworkPolicy", service)
    assert policies, f"{overlay}: no NetworkPolicy for {service}"
    assert set(policies[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def _peers(rules: list[dict], direction: str) -> set[str]:
    names = set()
    for rule in rules:
        for peer in rule.get(direction, []):
            if "namespaceSelector" in peer:
                continue
            name = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            if name:
                names.add(name)
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_network_policy_follows_the_call_graph(rendered, overlay, service):
    m = rendered[overlay]
    policy = m.selecting("NetworkPolicy", service)[0]["spec"]
    ingress, egress = policy.get("ingress", []), policy.get("egress", [])
    if service in EDGE:
        # Reachable from anywhere, on its HTTP port only.
        assert any("from" not in r and r["ports"] == [{"port": "http", "protocol": "TCP"}] for r in ingress)
    else:
        assert _peers(ingress, "from") == CALLERS[service]
    callees = {callee for callee, callers in CALLERS.items() if service in callers}
    stateless = service in EDGE or service in SINGLETONS
    expected = callees | ({"otel-collector"} if stateless else INFRA_EGRESS)
    assert _peers(egress, "to") == expected
    # Admin port open to Prometheus in the monitoring namespace only.
    scrape = [r for r in ingress if any("namespaceSelector" in p for p in r.get("from", []))]
    assert scrape and scrape[0]["ports"] == [{"port": "admin", "protocol": "TCP"}]


# The env name a caller reads a callee's address from, where it is not <CALLEE>_URL.
UPSTREAM_ENV = {"payment-processor": "PROCESSOR_URL"}


def upstream_env(callee: str) -> str:
    return UPSTREAM_ENV.get(callee, callee.upper().replace("-", "_") + "_URL")


@pytest.mark.parametrize("service", SERVICES)
def test_upstream_addresses_follow_the_call_graph(rendered, overlay, service):
    """A service is told the headless address of exactly the services it may call."""
    data = rendered[overlay].get("ConfigMap", f"{service}-config")["data"]
    callees = {callee for callee, callers in CALLERS.items() if service in callers}
    expected = {upstream_env(c): f"http://{c}-headless:50051" for c in callees}
    upstreams = {k: v for k, v in data.items() if k.endswith("_URL") and k != "NATS_URL"}
    assert upstreams == expected


def _env_names_read(*roots) -> set[str]:
    """Every `env = "NAME"` of the clap configs under `roots` (Rust sources)."""
    names = set()
    for root in roots:
        for source in root.rglob("*.rs"):
            names |= set(re.findall(r'env\s*=\s*"([A-Z][A-Z0-9_]*)"', source.read_text()))
    return names


# Read outside clap: the log filter (tracing's EnvFilter) and the OpenTelemetry SDK's standard
# variables (for the exporter).
NOT_CLAP = {"RUST_LOG", "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_RESOURCE_ATTRIBUTES"}


@pytest.mark.parametrize("service", sorted(workspace_services()))
def test_every_setting_is_one_the_binary_reads(rendered, service):
    """A ConfigMap key no config reads (a typo, a renamed flag) would be silently ignored."""
    data = rendered["dev"].get("ConfigMap", f"{service}-config")["data"]
    read = _env_names_read(REPO / "crates" / "runtime" / "src", REPO / "services" / service / "src")
    unread = sorted(set(data) - read - NOT_CLAP)
    assert not unread, f"{service}: ConfigMap keys no config reads: {unread}"


def test_default_deny(rendered, overlay):
    deny = rendered[overlay].get("NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_replicas_and_autoscaling(rendered, overlay):
    m = rendered[overlay]
    for service in SERVICES:
        replicas = m.get("Deployment", service)["spec"]["replicas"]
        hpa = m.get("HorizontalPodAutoscaler", service)
        if service in SINGLETONS:
            # In-memory state: a second replica would not know the first one's keys.
            assert replicas == 1 and hpa is None, service
            assert m.get("Deployment", service)["spec"]["strategy"]["type"] == "Recreate"
        elif overlay == "dev":
            assert replicas == 1 and hpa is None
        else:
            assert replicas >= 3
            assert hpa and hpa["spec"]["minReplicas"] >= 3
            assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": service}


def test_nats_jetstream(rendered, overlay):
    m = rendered[overlay]
    nats = m.get("StatefulSet", "nats")
    assert nats["spec"]["volumeClaimTemplates"], "JetStream needs a persistent volume"
    config = next(c for c in m.of("ConfigMap") if c["metadata"]["name"].startswith("nats-config"))
    conf = config["data"]["nats.conf"]
    assert "jetstream" in conf
    if overlay == "prod":
        assert nats["spec"]["replicas"] == 3
        routes = re.findall(r"nats://nats-(\d)\.nats-headless:6222", conf)
        assert sorted(routes) == ["0", "1", "2"]
    else:
        assert nats["spec"]["replicas"] == 1 and "cluster {" not in conf


def _strip_comments(conf: str) -> str:
    """A NATS config without its ``#`` and ``//`` comments (none of ours quote those)."""
    return "\n".join(re.split(r"#|//", line, maxsplit=1)[0] for line in conf.splitlines())


def jetstream_setting(conf: str, key: str) -> str | None:
    """The value ``key`` has at the top level of the config's ``jetstream { }`` block.

    The last assignment wins, as in nats-server; a key in a nested block or a comment does not
    count.
    """
    text = _strip_comments(conf)
    start = re.search(r"(?m)^\s*jetstream\s*[:=]?\s*\{", text)
    if not start:
        return None
    depth, top = 1, []
    for ch in text[start.end() :]:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            break
        # Characters of nested blocks are blanked out, keeping line structure.
        top.append(ch if depth == 1 and ch != "}" else ("\n" if ch == "\n" else " "))
    body = "".join(top)
    values = re.findall(rf"(?m)^\s*{re.escape(key)}\s*[:=]?\s*\"?([^\s\",]+)", body)
    return values[-1] if values else None


def test_jetstream_setting_reader():
    conf = """
    # sync_interval: always   (a comment)
    jetstream {
      store_dir: /data  // sync_interval: always
      limits { sync_interval: always }
    }
    """
    assert jetstream_setting(conf, "sync_interval") is None
    assert jetstream_setting("jetstream: {\n sync_interval = \"always\"\n}\n", "sync_interval") == "always"
    assert jetstream_setting("jetstream {\n sync_interval: always\n sync_interval: 2m\n}", "sync_interval") == "2m"


@pytest.mark.parametrize("kustomization", ["base", "overlays/dev", "overlays/prod"])
def test_nats_fsyncs_before_ack(kustomization):
    """JetStream acks only what is on disk (README: nats-server this project expects)."""
    configs = [
        o["data"]["nats.conf"]
        for o in docs(render_kustomization(kustomization))
        if o["kind"] == "ConfigMap" and "nats.conf" in o.get("data", {})
    ]
    assert configs, f"{kustomization}: no ConfigMap with a nats.conf"
    for conf in configs:
        assert jetstream_setting(conf, "sync_interval") == "always", (
            f"{kustomization}: nats.conf lacks `sync_interval: always` in its jetstream block"
        )


def nats_server() -> str:
    """The nats-server of tests/k8s/requirements.txt (scripts/k8s-check puts it first on PATH)."""
    path = shutil.which("nats-server")
    if not path:
        pytest.fail("nats-server not found: run scripts/k8s-check, which installs it")
    return path


@pytest.mark.parametrize("kustomization", ["base", "overlays/dev", "overlays/prod"])
def test_nats_config_loads_in_the_deployed_version(kustomization, tmp_path):
    """`nats-server -t` of the image's version accepts each rendered nats.conf."""
    objects = docs(render_kustomization(kustomization))
    image = next(o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "nats")
    tag = container(image)["image"].rpartition(":")[2].split("-")[0]
    binary = nats_server()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip().endswith(f"v{tag}"), (
        f"the image runs nats {tag} but tests/k8s/requirements.txt pins {version.stdout.strip()}"
    )
    for o in objects:
        if o["kind"] == "ConfigMap" and "nats.conf" in o.get("data", {}):
            conf = tmp_path / "nats.conf"
            conf.write_text(o["data"]["nats.conf"])
            result = subprocess.run(
                [binary, "-t", "-c", str(conf)],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "POD_NAME": "nats-0"},
            )
            assert result.returncode == 0, f"{kustomization}: {result.stdout}{result.stderr}"


def test_postgres_has_a_database_per_service(rendered, overlay):
    m = rendered[overlay]
    postgres = container(m.get("StatefulSet", "postgres"))
    env = {e["name"]: e for e in postgres["env"]}
    for service in DB_SERVICES:
        ref = env[f"SHOP_DB_{service.upper()}"]["valueFrom"]["secretKeyRef"]
        assert ref["name"].startswith(f"{service}-db") and ref["key"] == "DATABASE_URL"


def test_no_secret_values_outside_dev(rendered):
    assert not rendered["prod"].of("Secret"), "prod must reference Secrets, never define them"
    import base64

    for secret in rendered["dev"].of("Secret"):
        for value in secret["data"].values():
            text = base64.b64decode(value).decode()
            # A key given as base64 (SIGNING_KEY_KEK) says so once decoded.
            if "dev-only" not in text:
                text = base64.b64decode(text).decode()
            assert "dev-only" in text


def test_third_party_images_pinned(rendered, overlay):
    for kind in ("Deployment", "StatefulSet"):
        for o in rendered[overlay].of(kind):
            for c in o["spec"]["template"]["spec"]["containers"]:
                image = c["image"]
                name, _, tag = image.rpartition(":")
                assert name and tag and tag != "latest" and "/" not in tag, f"unpinned image {image}"


def test_checkov_skips_are_justified(rendered, overlay):
    for o in rendered[overlay].objects:
        for key, value in (o["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                assert re.fullmatch(r"CKV2?_[A-Z0-9_]+=.{40,}", value, re.S), f"{key}: {value}"


def test_dockerfile_shares_one_build_and_runs_non_root():
    text = (REPO / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    names = [s.split()[2] if " AS " in s.split("\n")[0] else "" for s in stages]
    by_name = dict(zip(names, stages))
    for stage in ("chef", "planner", "builder"):
        # SERVICE must not reach the shared stages, or each service would rebuild the workspace.
        assert "SERVICE" not in by_name[stage], f"{stage} depends on SERVICE"
    assert "ARG SERVICE" in by_name["runtime"] and "cargo chef cook" in by_name["builder"]
    assert re.search(r"^USER 65532:65532$", by_name["runtime"], re.M)
    for skip in re.findall(r"^#checkov:skip=(.*)$", text, re.M):
        assert re.fullmatch(r"CKV2?_DOCKER_\d+: .{40,}", skip), skip
