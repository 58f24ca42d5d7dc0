"""The model repository: versions numbered and written whole, what serves, rollback and shadows."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import yaml

from stream.errors import ModelError
from stream.zoo.repository import ModelRepository, Serving

SEED = "mobilenet-v1-0.25-128"


def _descriptor(classes: int = 1000) -> dict:
    return {
        "framework": "onnx",
        "model_file": "model.onnx",
        "input": {"name": "x", "shape": [1, 3, 224, 224], "layout": "NCHW"},
        "output": {"name": "y", "classes": classes, "kind": "logits"},
    }


def _add(repo: ModelRepository, name: str, **kw) -> int:
    with repo.new_version(name, **kw) as new:
        (new.folder / "model.onnx").write_bytes(b"not really a model")
        (new.folder / "model.yml").write_text(yaml.safe_dump(_descriptor()))
        return new.version


def test_seeds_are_version_one_and_cannot_change(tmp_path):
    repo = ModelRepository(tmp_path / "repo")
    assert SEED in repo.names()
    assert repo.versions(SEED) == [1]
    assert repo.serving(SEED) == Serving(active=1)
    assert repo.spec(SEED).version == 1
    with pytest.raises(ModelError, match="built-in"):
        _add(repo, SEED)
    assert not (tmp_path / "repo").exists()


def test_versions_count_up_and_the_newest_serves(tmp_path):
    repo = ModelRepository(tmp_path)
    assert [_add(repo, "cars"), _add(repo, "cars"), _add(repo, "cars")] == [1, 2, 3]
    assert repo.versions("cars") == [1, 2, 3]
    assert repo.serving("cars") == Serving(active=3, history=(1, 2))
    spec = repo.spec("cars")
    assert (spec.version, spec.path) == (3, tmp_path / "cars" / "3" / "model.yml")
    assert repo.spec("cars", 1).version == 1
    assert "cars" in repo.names()


def test_an_added_version_can_wait_to_be_activated(tmp_path):
    repo = ModelRepository(tmp_path)
    _add(repo, "cars")
    _add(repo, "cars", activate=False)
    assert repo.serving("cars").active == 1
    assert repo.activate("cars", 2) == Serving(active=2, history=(1,))


def test_a_failed_add_leaves_nothing(tmp_path):
    repo = ModelRepository(tmp_path)
    with pytest.raises(RuntimeError), repo.new_version("cars") as new:
        (new.folder / "model.yml").write_text("half")
        raise RuntimeError("the model did not load")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ModelError, match="no model.yml"), repo.new_version("cars"):
        pass
    with pytest.raises(ModelError, match="unknown model 'cars'"):
        repo.versions("cars")
    _add(repo, "cars")
    with pytest.raises(RuntimeError), repo.new_version("cars"):
        raise RuntimeError("second version broken")
    assert repo.versions("cars") == [1]
    assert sorted(p.name for p in (tmp_path / "cars").iterdir()) == [".lock", "1", "serving.yml"]


def test_rollback_returns_to_what_served_before(tmp_path):
    repo = ModelRepository(tmp_path)
    for _ in range(3):
        _add(repo, "cars")
    repo.activate("cars", 1)
    assert repo.serving("cars") == Serving(active=1, history=(2, 3))
    assert repo.rollback("cars").active == 3
    assert repo.rollback("cars").active == 2
    with pytest.raises(ModelError, match="nothing to roll back to"):
        repo.rollback("cars")


def test_shadow_and_promote(tmp_path):
    repo = ModelRepository(tmp_path)
    _add(repo, "cars")
    _add(repo, "cars", activate=False)
    with pytest.raises(ModelError, match="no shadow"):
        repo.promote("cars")
    with pytest.raises(ModelError, match="active one"):
        repo.set_shadow("cars", 1)
    with pytest.raises(ModelError, match="no version 7"):
        repo.set_shadow("cars", 7)
    assert repo.set_shadow("cars", 2) == Serving(active=1, shadow=2)
    assert repo.promote("cars") == Serving(active=2, shadow=None, history=(1,))
    assert repo.rollback("cars").active == 1


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "x" * 65])
def test_bad_names_are_refused(tmp_path, name):
    repo = ModelRepository(tmp_path)
    with pytest.raises(ModelError):
        _add(repo, name)
    with pytest.raises(ModelError, match="unknown model"):
        repo.versions(name)
    assert list(tmp_path.iterdir()) == []


def test_a_broken_serving_file_is_a_clear_error(tmp_path):
    repo = ModelRepository(tmp_path)
    _add(repo, "cars")
    (tmp_path / "cars" / "serving.yml").write_text("active: 9\n")
    with pytest.raises(ModelError, match="version 9"):
        repo.spec("cars")


def _add_in_process(root: str) -> None:
    _add(ModelRepository(Path(root)), "cars")


def test_concurrent_adds_take_distinct_numbers(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_add_in_process, args=(str(tmp_path),)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * 4
    assert ModelRepository(tmp_path).versions("cars") == [1, 2, 3, 4]


def test_descriptors_parse_like_the_seeds(tmp_path):
    repo = ModelRepository(tmp_path)
    _add(repo, "cars")
    spec = repo.spec("cars")
    assert (spec.name, spec.input_name, spec.output_kind, spec.version) == ("cars", "x", "logits", 1)
