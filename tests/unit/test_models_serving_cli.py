"""`framestream models activate | rollback | shadow | promote` on a model repository (files only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stream.cli import app
from stream.zoo.repository import ModelRepository, seeds_dir

runner = CliRunner()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRepository:
    """Three versions of `cat` (descriptors only: these commands never load a model)."""
    monkeypatch.setenv("FRAMESTREAM_MODELS__REPOSITORY", str(tmp_path / "repo"))
    repository = ModelRepository(tmp_path / "repo")
    raw = yaml.safe_load((seeds_dir() / "mobilenet-v1-0.25-128" / "model.yml").read_text())
    for _ in range(3):
        with repository.new_version("cat") as new:
            (new.folder / "model.yml").write_text(yaml.safe_dump(raw))
    return repository


def models(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["models", *args])
    return result.exit_code, result.stdout, result.stderr


def test_activate_rollback_shadow_promote_change_what_serves(repo: ModelRepository) -> None:
    assert repo.serving("cat").active == 3
    code, out, _ = models("activate", "cat", "1")
    assert code == 0 and "version 1 serves" in out and repo.serving("cat").active == 1
    code, out, _ = models("rollback", "cat")
    assert code == 0 and repo.serving("cat").active == 3
    code, out, _ = models("shadow", "cat", "2")
    assert code == 0 and "shadow version 2" in out and repo.serving("cat").shadow == 2
    code, _, _ = models("promote", "cat")
    assert code == 0 and repo.serving("cat").active == 2 and repo.serving("cat").shadow is None
    models("shadow", "cat", "1")
    code, out, _ = models("shadow", "cat", "--stop")
    assert code == 0 and repo.serving("cat").shadow is None


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("activate", "dog", "1"), "unknown model 'dog'"),
        (("activate", "cat", "7"), "cat has no version 7; it has 1, 2, 3"),
        (("shadow", "cat", "9"), "cat has no version 9"),
        (("promote", "cat"), "cat has no shadow to promote"),
        (("activate", "mobilenet-v1-0.25-128", "1"), "is a built-in model"),
        (("shadow", "cat"), "give a VERSION to start a shadow, or --stop"),
    ],
)
def test_an_unknown_name_or_version_is_one_clear_line_and_a_failing_exit(
    repo: ModelRepository, args: tuple[str, ...], says: str
) -> None:
    before = repo.serving("cat")
    code, out, err = models(*args)
    assert code != 0 and says in err and len(err.strip().splitlines()) == 1, err
    assert repo.serving("cat") == before
