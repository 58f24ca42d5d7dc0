"""The model repository: the user's own classifiers, one folder per name and one per version, as in
Triton's and OVMS's model repositories::

    <repository>/<name>/<version>/model.yml   the descriptor (the seeds' format), version an integer >= 1
    <repository>/<name>/<version>/...         the model's files and its labels, as `models add` wrote them
    <repository>/<name>/serving.yml           which version serves, which runs as a shadow, and the
                                              versions served before (what `models rollback` returns to)

The seeds (descriptors shipped as package data) are version 1 of their names; a repository cannot
add versions to them. A version folder is written whole in a temp folder and renamed into place, and
serving.yml is replaced in one rename, so a reader (an Infer replica polling for a new version) never
sees half of either. Changes to one name hold a file lock, so two `models add` never take one number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from stream.errors import ModelError
from stream.zoo.descriptors import ModelSpec, parse_spec
from stream.zoo.remote_repository import fetch_repository, is_repository_url

__all__ = [
    "DEFAULT_REPOSITORY",
    "DESCRIPTOR",
    "ModelRepository",
    "NewVersion",
    "Serving",
    "list_specs",
    "load_spec",
    "seeds_dir",
    "valid_name",
]

DESCRIPTOR = "model.yml"
DEFAULT_REPOSITORY = Path.home() / ".local" / "share" / "framestream" / "models"
"""The default of the setting `models.repository`."""
_SERVING = "serving.yml"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def seeds_dir() -> Path:
    """The seed descriptors installed with the package (`stream/zoo/models`: a symlink to the
    top-level `models/` in a checkout, a copy of it in a wheel)."""
    return Path(__file__).resolve().parent / "models"


def valid_name(name: str) -> bool:
    """A model name: letters, digits, `.`, `_`, `-`, at most 64, not starting with punctuation."""
    return bool(_NAME.fullmatch(name)) and name not in (".", "..")


def load_spec(name: str, repository: Path | str | None = None) -> ModelSpec:
    """The serving version of model `name`, a seed or one of `repository`'s own (the settings'
    ``models.repository``; None: `DEFAULT_REPOSITORY`); ModelError naming the known models if
    there is none. How every part of the pipeline resolves a model name."""
    return ModelRepository(repository if repository is not None else DEFAULT_REPOSITORY).spec(name)


def list_specs(repository: Path | str | None = None) -> list[ModelSpec]:
    """The serving version of every model, seeds and `repository`'s own, sorted by name."""
    return ModelRepository(repository if repository is not None else DEFAULT_REPOSITORY).specs()


@dataclass(frozen=True)
class Serving:
    """What one name serves: `active` answers requests, `shadow` runs beside it on the same frames
    (results to the shadow stream only), `history` the versions active before, most recent last."""

    active: int
    shadow: int | None = None
    history: tuple[int, ...] = ()


@dataclass(frozen=True)
class NewVersion:
    """A version being written: put the model's files and `model.yml` in `folder`."""

    name: str
    version: int
    folder: Path


class ModelRepository:
    """The seeds plus the folders under `root` (which need not exist until a model is added).

    `root` may instead be the URL of a repository archive (`stream.zoo.remote_repository`): it is
    fetched on first use, and is read-only."""

    def __init__(self, root: Path | str, seeds: Path | None = None, *, cache_dir: Path | None = None) -> None:
        self.url = root if isinstance(root, str) and is_repository_url(root) else None
        self._root = None if self.url is not None else Path(root).expanduser()
        self.seeds = seeds if seeds is not None else seeds_dir()
        self.cache_dir = cache_dir

    @property
    def root(self) -> Path:
        """The repository's folder (a URL's archive is fetched and unpacked the first time)."""
        if self._root is None:
            assert self.url is not None
            self._root = fetch_repository(self.url, self.cache_dir)
        return self._root

    # -- reading -----------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every name: the seeds and the repository's own, sorted."""
        return sorted(set(self._seed_names()) | set(self._own_names()))

    def is_seed(self, name: str) -> bool:
        return (self.seeds / name / DESCRIPTOR).is_file() and valid_name(name)

    def versions(self, name: str) -> list[int]:
        """The versions of `name`, ascending; ModelError naming the known models if there is none."""
        if self.is_seed(name):
            return [1]
        found = self._own_versions(name) if valid_name(name) else []
        if not found:
            known = ", ".join(self.names()) or "none"
            raise ModelError(f"unknown model {name!r}; known models: {known}")
        return found

    def serving(self, name: str) -> Serving:
        """What `name` serves now: serving.yml, else its highest version (Triton's `latest`)."""
        versions = self.versions(name)
        if self.is_seed(name):
            return Serving(active=1)
        path = self.root / name / _SERVING
        if not path.is_file():
            return Serving(active=versions[-1])
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            serving = Serving(
                active=int(raw["active"]),
                shadow=int(raw["shadow"]) if raw.get("shadow") is not None else None,
                history=tuple(int(v) for v in raw.get("history") or ()),
            )
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{path} is unreadable: {e}") from e
        for v in (serving.active, serving.shadow):
            if v is not None and v not in versions:
                raise ModelError(f"{path} names version {v} of {name}, which is not in {self.root / name}")
        return serving

    def spec(self, name: str, version: int | None = None) -> ModelSpec:
        """The descriptor of `name` at `version` (None: the active one), with `version` set."""
        versions = self.versions(name)
        if version is None:
            version = self.serving(name).active
        if version not in versions:
            have = ", ".join(map(str, versions))
            raise ModelError(f"{name} has no version {version}; it has {have}")
        path = self._descriptor(name, version)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise ModelError(f"descriptor {path} is unreadable: {e}") from e
        return dataclasses.replace(parse_spec(name, raw, path), version=version)

    def specs(self) -> list[ModelSpec]:
        """The active version of every name, sorted by name."""
        return [self.spec(n) for n in self.names()]

    # -- changing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def new_version(self, name: str, *, activate: bool = True) -> Iterator[NewVersion]:
        """Write the next version of `name` in a temp folder; on success it is renamed into place
        (and made active unless `activate` is False), on error nothing of it remains."""
        self._check_own(name)
        with self._locked(name) as folder:
            versions = self._own_versions(name)
            version = (versions[-1] + 1) if versions else 1
            tmp = Path(tempfile.mkdtemp(prefix=f".new-{version}-", dir=folder))
            try:
                yield NewVersion(name, version, tmp)
                if not (tmp / DESCRIPTOR).is_file():
                    raise ModelError(f"{name} version {version}: no {DESCRIPTOR} was written")
                os.rename(tmp, folder / str(version))
                if activate:
                    self._write_serving(name, self._activated(name, version))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                if not self._own_versions(name):  # the first add failed: leave no trace of it
                    with contextlib.suppress(OSError):
                        (folder / ".lock").unlink()
                        folder.rmdir()

    def activate(self, name: str, version: int) -> Serving:
        """Serve `version` of `name` from now on (the one serving before goes on the history)."""
        self._check_own(name)
        with self._locked(name):
            if version not in self.versions(name):
                raise ModelError(f"{name} has no version {version}; it has {self._list(name)}")
            serving = self._activated(name, version)
            self._write_serving(name, serving)
            return serving

    def rollback(self, name: str) -> Serving:
        """Serve again the version that served before the active one."""
        self._check_own(name)
        with self._locked(name):
            now = self.serving(name)
            history = [v for v in now.history if v in self._own_versions(name) and v != now.active]
            if not history:
                raise ModelError(
                    f"{name}: nothing to roll back to (version {now.active} is the first served)"
                )
            serving = Serving(active=history[-1], shadow=now.shadow, history=tuple(history[:-1]))
            self._write_serving(name, serving)
            return serving

    def set_shadow(self, name: str, version: int | None) -> Serving:
        """Run `version` of `name` as a shadow of the active version (None: stop the shadow)."""
        self._check_own(name)
        with self._locked(name):
            now = self.serving(name)
            if version is not None:
                if version not in self.versions(name):
                    raise ModelError(f"{name} has no version {version}; it has {self._list(name)}")
                if version == now.active:
                    raise ModelError(f"{name}: version {version} is the active one; a shadow must be another")
            serving = dataclasses.replace(now, shadow=version)
            self._write_serving(name, serving)
            return serving

    def promote(self, name: str) -> Serving:
        """Make the shadow the active version (the active one goes on the history)."""
        self._check_own(name)
        with self._locked(name):
            now = self.serving(name)
            if now.shadow is None:
                raise ModelError(f"{name} has no shadow to promote; start one with `models shadow`")
            serving = dataclasses.replace(self._activated(name, now.shadow), shadow=None)
            self._write_serving(name, serving)
            return serving

    # -- internals -----------------------------------------------------------------------------

    def _seed_names(self) -> list[str]:
        if not self.seeds.is_dir():
            return []
        return [p.parent.name for p in self.seeds.glob(f"*/{DESCRIPTOR}") if valid_name(p.parent.name)]

    def _own_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if valid_name(p.name) and self._own_versions(p.name)]

    def _own_versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(
            int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / DESCRIPTOR).is_file()
        )

    def _descriptor(self, name: str, version: int) -> Path:
        if self.is_seed(name):
            return self.seeds / name / DESCRIPTOR
        return self.root / name / str(version) / DESCRIPTOR

    def _list(self, name: str) -> str:
        return ", ".join(map(str, self.versions(name)))

    def _check_own(self, name: str) -> None:
        if self.url is not None:
            raise ModelError(
                f"the model repository is the archive {self.url.split('#')[0]}, which is read-only: "
                "add or change versions where it is built, then publish a new archive"
            )
        if not valid_name(name):
            raise ModelError(
                f"{name!r} is not a model name: use letters, digits, '.', '_' and '-' (at most 64)"
            )
        if self.is_seed(name):
            raise ModelError(f"{name} is a built-in model; add your model under a name of its own")

    def _activated(self, name: str, version: int) -> Serving:
        if (self.root / name / _SERVING).is_file():
            now: Serving | None = self.serving(name)
        else:  # no serving.yml yet: the highest other version served so far
            others = [v for v in self._own_versions(name) if v != version]
            now = Serving(active=max(others)) if others else None
        if now is None:
            return Serving(active=version)
        if now.active == version:
            return now
        history = (*(v for v in now.history if v != version), now.active)
        shadow = None if now.shadow == version else now.shadow
        return Serving(active=version, shadow=shadow, history=history)

    def _write_serving(self, name: str, serving: Serving) -> None:
        folder = self.root / name
        raw = {"active": serving.active, "shadow": serving.shadow, "history": list(serving.history)}
        fd, tmp = tempfile.mkstemp(prefix=".serving-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                yaml.safe_dump(raw, f, sort_keys=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / _SERVING)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
