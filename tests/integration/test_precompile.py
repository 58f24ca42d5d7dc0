"""A version loaded beside a serving one is compiled by a child process at the lowest CPU priority
into the compiled-model cache (`stream.stages.infer.precompile`); the Infer process then loads it
from there instead of compiling. Real OpenVINO, synthetic versions in a real repository."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from stream.settings import Settings
from stream.stages.infer.precompile import precompile
from stream.stages.infer.stage import open_stage_engine
from stream.zoo.repository import ModelRepository
from tests.model_versions import add_version

MODEL = "vehicles"


def _settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "models": {"repository": str(tmp_path / "repo"), "cache_dir": str(tmp_path / "cache")},
            "infer": {"max_batch_size": 4},
        }
    )


def _blobs(settings: Settings) -> set[str]:
    return {p.name for p in (settings.models.cache_dir / "compiled").glob("*.blob")}


def test_the_child_fills_the_compiled_cache_so_the_infer_process_compiles_nothing(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    repo = ModelRepository(settings.models.repository)
    version = add_version(repo, MODEL, seed=1)

    assert precompile(settings, MODEL, version, cancel=threading.Event())
    written = _blobs(settings)
    # the dynamic-batch graph and one per padded batch size (1, 2, 4)
    assert len(written) == 4, written
    with open_stage_engine(settings, MODEL, repo.spec(MODEL, version)):
        assert _blobs(settings) == written  # every graph came from the cache


def test_a_version_the_child_cannot_compile_is_reported_and_left_to_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path)
    repo = ModelRepository(settings.models.repository)
    version = add_version(repo, MODEL, seed=1, broken=True)

    assert not precompile(settings, MODEL, version, cancel=threading.Event())
    assert f"compiling version {version} at low priority failed" in caplog.text
    assert _blobs(settings) == set()


def test_a_stopping_stage_cancels_the_child_at_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    repo = ModelRepository(settings.models.repository)
    version = add_version(repo, MODEL, seed=1)
    cancel = threading.Event()
    cancel.set()

    started = time.monotonic()
    assert not precompile(settings, MODEL, version, cancel=cancel)
    # cancelled at its first check, long before a compile (and the child's imports) could end
    assert time.monotonic() - started < 5.0
    assert _blobs(settings) == set()
