"""The Tiltfile loads under Starlark with Tilt's API stubbed, and builds what the cluster runs.

The stubs take the same parameters as Tilt's functions (https://docs.tilt.dev/api.html), so an
unknown keyword fails here as it would in `tilt up`; an unknown function fails as undefined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import starlark_go
import yaml

from conftest import DESIGN_SERVICES, EDGE, REPO, all_services, docs, render, workspace_services

# Local ports shared with `meshctl up` (brief: "Local ports").
LOCAL_PORTS = {
    "identity": (50051, 9101),
    "catalog": (50052, 9102),
    "inventory": (50053, 9103),
    "orders": (50054, 9104),
    "payments": (50055, 9105),
    "payment-processor": (50059, 9109),
    "shipping": (50056, 9106),
    "notifications": (50057, 9107),
    "gateway": (8080, 9108),
}
INFRA = {"postgres", "nats", "otel-collector"}


@dataclass
class Tilt:
    """What one evaluation of the Tiltfile asked Tilt to do."""

    present: set[str] | None = None  # None: the real services/ directory decides
    builds: dict[str, dict] = field(default_factory=dict)
    applied: list[dict] = field(default_factory=list)
    resources: dict[str, dict] = field(default_factory=dict)
    local_resources: dict[str, dict] = field(default_factory=dict)

    # --- stubs, with Tilt's signatures -----------------------------------------------------

    def docker_build(self, ref, context=".", build_args=None, dockerfile="Dockerfile",
                     dockerfile_contents="", live_update=None, match_in_env_vars=False,
                     ignore=None, only=None, entrypoint=None, target="", ssh="", network="",
                     secret="", extra_tag="", container_args=None, cache_from=None, pull=False,
                     platform="", extra_hosts=None):
        assert ref not in self.builds, f"image {ref} built twice"
        self.builds[ref] = {"context": context, "build_args": dict(build_args or {}),
                            "dockerfile": dockerfile, "only": list(only or []),
                            "target": target}

    def kustomize(self, pathToDir, kustomize_bin=None, flags=None):
        return render(Path(pathToDir).name)

    def filter_yaml(self, yaml_text, labels=None, name=None, namespace=None, kind=None,
                    api_version=None):
        match, rest = [], []
        for d in docs(str(yaml_text)):
            meta = d["metadata"]
            ok = all((meta.get("labels") or {}).get(k) == v for k, v in (labels or {}).items())
            ok = ok and (name is None or meta["name"] == name)
            ok = ok and (kind is None or d["kind"].lower() == kind.lower())
            ok = ok and (namespace is None or meta.get("namespace") == namespace)
            (match if ok else rest).append(d)
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        dump = lambda ds: yaml.dump_all(ds, Dumper=dumper) if ds else ""  # noqa: E731
        return (dump(match), dump(rest))

    def k8s_yaml(self, yaml_text, allow_duplicates=False):
        self.applied.extend(docs(str(yaml_text)))

    def k8s_resource(self, workload="", new_name="", port_forwards=None, extra_pod_selectors=None,
                     trigger_mode=None, resource_deps=None, objects=None, auto_init=True,
                     pod_readiness="", links=None, labels=None, discovery_strategy=""):
        name = new_name or workload
        assert name not in self.resources, f"resource {name} configured twice"
        forwards = port_forwards or []
        if not isinstance(forwards, (list, tuple)):
            forwards = [forwards]
        self.resources[name] = {"workload": workload, "port_forwards": list(forwards),
                                "resource_deps": list(resource_deps or []),
                                "objects": list(objects or []), "labels": list(labels or [])}

    def port_forward(self, local_port, container_port=None, name=None, link_path=None, host=None):
        return {"local": local_port, "container": container_port or local_port, "name": name}

    def local_resource(self, name, cmd="", deps=None, trigger_mode=None, resource_deps=None,
                       ignore=None, auto_init=True, serve_cmd="", cmd_bat="", serve_cmd_bat="",
                       allow_parallel=False, links=None, tags=None, env=None, serve_env=None,
                       readiness_probe=None, dir="", serve_dir="", labels=None):
        self.local_resources[name] = {"cmd": cmd, "deps": list(deps or []),
                                      "labels": list(labels or [])}

    def read_file(self, file_path, default=None):
        path = REPO / file_path
        if self.present is not None and file_path.startswith("services/"):
            exists = Path(file_path).parts[1] in self.present
            return "[package]\n" if exists else default
        if path.is_file():
            return path.read_text()
        if default is None:
            raise FileNotFoundError(file_path)
        return default

    def version_settings(self, check_updates=True, constraint=""):
        pass

    def update_settings(self, max_parallel_updates=3, k8s_upsert_timeout_secs=30,
                        suppress_unused_image_warnings=None):
        assert max_parallel_updates >= 1

    def load(self) -> "Tilt":
        stubs = {n: getattr(self, n) for n in (
            "docker_build", "kustomize", "filter_yaml", "k8s_yaml", "k8s_resource",
            "port_forward", "local_resource", "read_file", "version_settings", "update_settings")}
        # Tilt's dialect: top-level if/for and reassigned globals, sets, recursion.
        starlark_go.configure_starlark(allow_global_reassign=True, allow_set=True,
                                       allow_recursion=True)
        interpreter = starlark_go.Starlark(globals=stubs)
        interpreter.exec((REPO / "Tiltfile").read_text(), filename="Tiltfile")
        return self

    # --- views -------------------------------------------------------------------------------

    def workloads(self, kinds=("Deployment", "StatefulSet")) -> dict[str, dict]:
        return {d["metadata"]["name"]: d for d in self.applied if d["kind"] in kinds}


@pytest.fixture(scope="module")
def tilt() -> Tilt:
    return Tilt().load()


@pytest.fixture(scope="module")
def tilt_all_services() -> Tilt:
    """As if every designed service had landed: the Tiltfile must cover the whole mesh."""
    return Tilt(present=set(DESIGN_SERVICES)).load()


def images(workload: dict) -> list[str]:
    return [c["image"] for c in workload["spec"]["template"]["spec"]["containers"]]


def check_service_wiring(t: Tilt, service: str):
    ref = f"shop/{service}"
    build = t.builds.get(ref)
    assert build, f"Tilt builds no image for {service}"
    assert build["build_args"] == {"SERVICE": service}
    assert build["dockerfile"] == "Dockerfile" and build["context"] == "."
    # Only what the image is built from triggers a rebuild.
    assert {"Cargo.toml", "Cargo.lock", "crates", "proto", "services"} <= set(build["only"])
    assert not {"k8s", "Tiltfile", "tests", "README.md", "."} & set(build["only"])

    resource = t.resources.get(service)
    assert resource, f"no k8s_resource for {service}"
    assert resource["labels"] == (["edge"] if service in EDGE else ["services"])
    assert INFRA <= set(resource["resource_deps"]), "services start after the infrastructure"
    # Its certificate is applied with it, after the CA that issues it.
    assert f"{service}-tls:certificate" in resource["objects"]
    assert "certificate-authority" in resource["resource_deps"]
    forwards = {(f["local"], f["container"]) for f in resource["port_forwards"]}
    local, admin = LOCAL_PORTS[service]
    assert forwards == {(local, 8080 if service in EDGE else 50051), (admin, 9090)}

    workload = t.workloads().get(service)
    assert workload, f"Tilt applies no Deployment {service}"
    assert all(i.split(":")[0] in t.builds for i in images(workload))


@pytest.mark.parametrize("service", sorted(workspace_services()))
def test_every_workspace_service_is_built_deployed_and_forwarded(tilt, service):
    check_service_wiring(tilt, service)


@pytest.mark.parametrize("service", DESIGN_SERVICES)
def test_with_every_service_present(tilt_all_services, service):
    check_service_wiring(tilt_all_services, service)


@pytest.mark.parametrize("variant", ["real", "all"])
def test_every_deployment_runs_an_image_tilt_builds(tilt, tilt_all_services, variant):
    t = tilt if variant == "real" else tilt_all_services
    rendered = [d for d in docs(render("dev")) if d["kind"] in ("Deployment", "StatefulSet")]
    applied = t.workloads()
    for workload in rendered:
        name = workload["metadata"]["name"]
        for image in images(workload):
            repo = image.rsplit(":", 1)[0]
            if not repo.startswith("shop/"):
                continue  # third-party infrastructure, pinned (test_manifests)
            if repo in t.builds:
                assert name in applied
            else:
                # Manifests ahead of the code: Tilt must leave the workload out, not deploy an
                # image nobody built.
                service = repo.removeprefix("shop/")
                assert variant == "real" and service not in workspace_services(), image
                assert name not in applied, f"{name} applied without a built image"
    assert set(t.builds) == {f"shop/{s}" for s in (DESIGN_SERVICES if variant == "all" else workspace_services())}


def test_resources_name_real_workloads(tilt_all_services):
    t = tilt_all_services
    applied = t.workloads()
    for name, resource in t.resources.items():
        if resource["workload"]:
            assert resource["workload"] in applied, f"k8s_resource({name!r}) names no workload"
        for selector in resource["objects"]:
            obj_name, kind = selector.split(":")[:2]
            assert any(d["metadata"]["name"] == obj_name and d["kind"].lower() == kind
                       for d in t.applied), selector
    for name in INFRA | {"jaeger", "certificate-authority"}:
        assert t.resources[name]["labels"] == ["infra"]
        assert "namespace" in t.resources[name]["resource_deps"]


def test_buf_lint_runs_locally(tilt):
    buf = tilt.local_resources.get("buf-lint")
    assert buf and buf["cmd"].startswith("buf lint") and "proto" in buf["deps"]


def test_all_known_services_covered():
    assert set(all_services()) <= set(LOCAL_PORTS)
