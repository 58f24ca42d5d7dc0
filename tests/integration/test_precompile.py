"""A version loaded beside a serving one is compiled by a child process at the lowest CPU priority
and exported (`stream.stages.infer.precompile`); the Infer process imports the compiled models
instead of building and compiling the graph. Real OpenVINO, synthetic versions in a real
repository."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
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


def test_the_child_compiles_so_the_infer_process_imports_the_same_model(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    repo = ModelRepository(settings.models.repository)
    version = add_version(repo, MODEL, seed=1)
    folder = tmp_path / "compiled"

    assert precompile(settings, MODEL, version, folder, cancel=threading.Event())
    # the dynamic-batch model and one per padded batch size (1, 2, 4)
    assert sorted(p.name for p in folder.iterdir()) == [
        "batch1.blob", "batch2.blob", "batch4.blob", "dynamic.blob",
    ]  # fmt: skip
    assert _blobs(settings) == set()  # the child leaves the compiled-model cache alone
    spec = repo.spec(MODEL, version)
    x = np.random.default_rng(0).integers(0, 256, (3, *spec.input_hw, 3), dtype=np.uint8)
    with open_stage_engine(settings, MODEL, spec, compiled_from=folder) as imported:
        assert _blobs(settings) == set()  # nothing compiled in this process
        assert imported.static_batch_sizes == (1, 2, 4) and imported.version == version
        got = imported.infer(x)
    with open_stage_engine(settings, MODEL, spec) as compiled:
        np.testing.assert_allclose(got, compiled.infer(x), atol=1e-5)


def test_a_version_already_in_the_compiled_cache_is_exported_too(tmp_path: Path) -> None:
    """A rollback or a shadow of the version the replica started with: that version sits in the
    compiled-model cache, and a model loaded from there cannot be exported and imported again."""
    settings = _settings(tmp_path)
    repo = ModelRepository(settings.models.repository)
    version = add_version(repo, MODEL, seed=1)
    spec = repo.spec(MODEL, version)
    open_stage_engine(settings, MODEL, spec).close()  # as the replica did at its start
    assert _blobs(settings)
    folder = tmp_path / "compiled"

    assert precompile(settings, MODEL, version, folder, cancel=threading.Event())
    with open_stage_engine(settings, MODEL, spec, compiled_from=folder) as imported:
        assert imported.infer(np.zeros((2, *spec.input_hw, 3), np.uint8)).shape[0] == 2


def test_a_version_the_child_cannot_compile_is_reported_and_left_to_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path)
    repo = ModelRepository(settings.models.repository)
    version = add_version(repo, MODEL, seed=1, broken=True)
    caplog.set_level(logging.WARNING, logger="stream.stages.infer.precompile")

    folder = tmp_path / "compiled"
    assert not precompile(settings, MODEL, version, folder, cancel=threading.Event())
    assert f"compiling version {version} at low priority failed" in caplog.text
    assert not folder.exists() or not any(folder.iterdir())


def test_a_stopping_stage_cancels_the_child_at_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    repo = ModelRepository(settings.models.repository)
    version = add_version(repo, MODEL, seed=1)
    cancel = threading.Event()
    cancel.set()

    started = time.monotonic()
    folder = tmp_path / "compiled"
    assert not precompile(settings, MODEL, version, folder, cancel=cancel)
    # cancelled at its first check, long before a compile (and the child's imports) could end
    assert time.monotonic() - started < 5.0
    assert not folder.exists() and _blobs(settings) == set()
