"""Fixtures for the manifest tests: rendered overlays (once per session) and the KubeRay CRDs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.k8s.manifests import OVERLAYS, kubectl, render

KUBERAY = "kuberay-v1.7.0"


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """`kubectl kustomize` output of each overlay."""
    if kubectl() is None:
        pytest.skip("kubectl is not installed: cannot render the kustomize overlays")
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def kuberay_crds(shared_dir: Path) -> Path:
    """Directory of the KubeRay v1.7.0 CRDs in ../shared/k8s-schemas."""
    path = shared_dir / "k8s-schemas" / KUBERAY
    if not (path / "ray.io_rayservices.yaml").is_file():
        pytest.skip(f"{path} is absent: cannot validate KubeRay objects against their CRDs")
    return path
