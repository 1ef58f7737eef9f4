"""Shared fixtures: the repository, the services it defines, and the rendered overlays.

The service list is the union of what the workspace builds (``services/*/Cargo.toml``) and what
``k8s/base/services/`` deploys, so the tests stay meaningful while services are still being written:
every binary must be deployable, and every deployed service must have the full set of objects.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")

# The design's services and the ports they use (shared/ARCHITECTURE.md, brief conventions).
DESIGN_SERVICES = (
    "identity",
    "catalog",
    "inventory",
    "orders",
    "payments",
    "payment-processor",
    "shipping",
    "notifications",
    "gateway",
)
EDGE = ("gateway",)
# Simulations with in-memory state: no database, no NATS, exactly one replica and no HPA.
SINGLETONS = ("payment-processor",)


def workspace_services() -> dict[str, list[str]]:
    """Service directory name -> binary names, for every ``services/<name>/Cargo.toml``."""
    found: dict[str, list[str]] = {}
    root = REPO / "services"
    if not root.is_dir():
        return found
    for manifest in sorted(root.glob("*/Cargo.toml")):
        data = tomllib.loads(manifest.read_text())
        package = data.get("package", {}).get("name", manifest.parent.name)
        bins = [b.get("name", package) for b in data.get("bin", [])] or [package]
        found[manifest.parent.name] = bins
    return found


def deployed_services() -> list[str]:
    root = REPO / "k8s" / "base" / "services"
    return sorted(p.name for p in root.iterdir() if (p / "kustomization.yaml").is_file())


def all_services() -> list[str]:
    return sorted(set(workspace_services()) | set(deployed_services()))


def kubectl() -> str:
    path = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not path:
        pytest.fail("kubectl not found: run scripts/k8s-check, which installs it")
    return path


_RENDERED: dict[str, str] = {}


def render(overlay: str) -> str:
    """``kubectl kustomize k8s/overlays/<overlay>``, once per test session."""
    return render_kustomization(f"overlays/{overlay}")


def render_kustomization(path: str) -> str:
    """``kubectl kustomize k8s/<path>`` (``base``, ``overlays/dev``, ...), once per session."""
    if path not in _RENDERED:
        result = subprocess.run(
            [kubectl(), "kustomize", str(REPO / "k8s" / path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"kustomize {path} failed:\n{result.stderr}")
        _RENDERED[path] = result.stdout
    return _RENDERED[path]


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def docs(text: str) -> list[dict]:
    return [d for d in yaml.load_all(text, Loader=_LOADER) if d]


class Manifests:
    """The objects of one rendered overlay, indexed by kind and name."""

    def __init__(self, objects: list[dict]):
        self.objects = objects

    def of(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict | None:
        for o in self.of(kind):
            if o["metadata"]["name"] == name:
                return o
        return None

    def selecting(self, kind: str, app: str) -> list[dict]:
        """Objects of ``kind`` whose pod selector matches the pods of ``app``."""
        out = []
        for o in self.of(kind):
            spec = o["spec"]
            selector = spec.get("podSelector") or spec.get("selector") or {}
            labels = selector.get("matchLabels", selector if kind == "Service" else {})
            if labels.get("app.kubernetes.io/name") == app:
                out.append(o)
        return out


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def rendered() -> dict[str, Manifests]:
    return {name: Manifests(docs(render(name))) for name in OVERLAYS}
