"""The Linkerd component (overlays/prod-linkerd): every service meshed, our TLS off, and the
runtime told to take callers' identities from the proxy, which must be the only way to the
gRPC port for that to be safe."""

from __future__ import annotations

import re

import pytest

from conftest import REPO, Manifests, all_services, docs, render_kustomization

SERVICES = all_services()
GRPC_PORT = 50051
ADMIN_PORT = 9090


@pytest.fixture(scope="module")
def meshed() -> Manifests:
    return Manifests(docs(render_kustomization("overlays/prod-linkerd")))


def pod_of(m: Manifests, service: str) -> dict:
    return m.get("Deployment", service)["spec"]["template"]


def test_it_is_prod_with_the_component():
    plain = Manifests(docs(render_kustomization("overlays/prod")))
    meshed = Manifests(docs(render_kustomization("overlays/prod-linkerd")))
    workloads = lambda m: {(o["kind"], o["metadata"]["name"]) for o in m.objects  # noqa: E731
                           if o["kind"] in ("Deployment", "StatefulSet", "HorizontalPodAutoscaler")}
    assert workloads(plain) == workloads(meshed)


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_meshed_and_only_its_admin_port_bypasses_the_proxy(meshed, service):
    annotations = pod_of(meshed, service)["metadata"]["annotations"]
    assert annotations["linkerd.io/inject"] == "enabled"
    skipped = {int(p) for p in re.split(r"[,\s]+", annotations["config.linkerd.io/skip-inbound-ports"])}
    # The gRPC port behind the proxy is what makes l5d-client-id a fact.
    assert GRPC_PORT not in skipped and skipped == {ADMIN_PORT}
    assert annotations["config.linkerd.io/default-inbound-policy"] == "all-authenticated"
    container = pod_of(meshed, service)["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "admin", "probes on the skipped port"


@pytest.mark.parametrize("service", SERVICES)
def test_our_tls_is_off_and_peer_identity_comes_from_linkerd(meshed, service):
    data = meshed.get("ConfigMap", f"{service}-config")["data"]
    assert data["PEER_IDENTITY"] == "linkerd"
    assert not {k for k in data if k.startswith("TLS_")}, "the runtime refuses TLS with linkerd"
    pod = pod_of(meshed, service)["spec"]
    assert not [v for v in pod["volumes"] if "secret" in v and v["secret"]["secretName"].endswith("-tls")]
    container = pod["containers"][0]
    assert not [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/shop/tls"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SERVICE_ACCOUNT"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.serviceAccountName"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # The account is the identity the policies name.
    assert pod["serviceAccountName"] == service


def test_the_settings_are_ones_the_runtime_reads():
    source = (REPO / "crates" / "runtime" / "src" / "config.rs").read_text()
    for name in ("PEER_IDENTITY", "SERVICE_ACCOUNT", "POD_NAMESPACE"):
        assert f'env = "{name}"' in source, name
    assert re.search(r"Linkerd,", source), "the `linkerd` value of PEER_IDENTITY"


def test_no_cert_manager_objects_are_left(meshed):
    assert not [o for o in meshed.objects if o["apiVersion"].startswith("cert-manager.io/")]


def test_proxies_may_reach_the_control_plane(meshed):
    policy = meshed.get("NetworkPolicy", "linkerd-control-plane")["spec"]
    assert policy["policyTypes"] == ["Egress"]
    rule = policy["egress"][0]
    assert rule["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "linkerd"}}}]
    assert {p["port"] for p in rule["ports"]} == {8080, 8086, 8090}
    selector = policy["podSelector"]["matchExpressions"][0]
    assert set(selector["values"]) == {"service", "edge"}
