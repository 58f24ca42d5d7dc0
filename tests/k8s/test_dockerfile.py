"""The image recipe agrees with the manifests and the package: same Ray version everywhere, the
model cache the ConfigMap names, and a build context that still holds what the install needs.
(No Docker daemon or registry here, so the image itself is not built in tests.)"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from typing import Any

import ray

from tests.k8s.manifests import K8S, by_kind

Docs = dict[str, list[dict[str, Any]]]
DOCKERFILE = K8S / "Dockerfile"
ROOT = K8S.parent


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _ignored(path: str) -> bool:
    patterns = [
        p.strip()
        for p in (K8S / "Dockerfile.dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns)


def test_base_image_is_rays_pinned_to_the_clusters_ray_version(rendered: Docs) -> None:
    (base,) = [arg for op, arg in _instructions() if op == "FROM"]
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-cpu", base.strip())
    assert match, base
    version, major, minor = match.group(1), int(match.group(2)), int(match.group(3))
    assert version == ray.__version__, "the image runs the Ray the tests run"
    for overlay, docs in rendered.items():
        (svc,) = by_kind(docs, "RayService")
        assert svc["spec"]["rayClusterConfig"]["rayVersion"] == version, overlay
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert (major, minor) >= tuple(int(x) for x in re.search(r">=\s*(\d+)\.(\d+)", requires).groups())  # type: ignore[union-attr]
    runs = " ".join(arg for op, arg in _instructions() if op == "RUN")
    assert f'"ray[serve]=={version}"' in runs, "pip must not swap the base image's Ray"


def test_model_cache_dir_matches_the_pipeline_configmap(rendered: Docs) -> None:
    env = " ".join(arg for op, arg in _instructions() if op == "ENV")
    cache = re.search(r"FRAMESTREAM_MODELS__CACHE_DIR=(\S+)", env)
    assert cache, env
    for overlay, docs in rendered.items():
        (cm,) = [
            d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("framestream-pipeline")
        ]
        assert cm["data"]["FRAMESTREAM_MODELS__CACHE_DIR"] == cache.group(1), overlay


def test_build_context_keeps_what_the_install_needs_and_drops_the_rest() -> None:
    for needed in ("pyproject.toml", "stream", "deployments", "loadtest", "models", "README.md"):
        assert not _ignored(needed), needed
    for dropped in (".git", ".venv", "tests", "stream/__pycache__", "models/x/model.tflite"):
        assert _ignored(dropped), dropped
