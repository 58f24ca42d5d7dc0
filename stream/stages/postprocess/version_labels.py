"""The labels of each version of one model, read from the repository once per version: a score
names its `model_version`, and a new version may name other classes."""

from __future__ import annotations

import logging
from typing import Any

from stream.settings import ModelSettings
from stream.zoo.repository import ModelRepository
from stream.zoo.store import find_labels

__all__ = ["VersionLabels"]

log = logging.getLogger(__name__)


class VersionLabels:
    """Labels of `model`'s versions; `default` (the stage's own) for a score without a version."""

    def __init__(self, repository: ModelRepository, model: str, models: ModelSettings) -> None:
        self.repository, self.model, self.models = repository, model, models
        self.default: list[str] = []
        self._by_version: dict[int, list[str]] = {}

    def read(self, version: int) -> list[str]:
        """The labels of `version` as the repository has them (ModelError when it has none)."""
        spec = self.repository.spec(self.model, version)
        found = find_labels(spec, weights_dir=self.models.weights_dir, cache_dir=self.models.cache_dir)
        return list(found.names)

    def of(self, version: Any) -> list[str]:
        """The labels of `version` (a result's `model_version`), read once; the default without
        one, or when that version is gone from the repository."""
        if not isinstance(version, int) or isinstance(version, bool):
            return self.default
        if version not in self._by_version:
            try:
                self._by_version[version] = self.read(version)
            except Exception as e:  # noqa: BLE001 - a version gone from the repository: keep going
                log.warning("postprocess %s: labels of version %d unreadable (%s)", self.model, version, e)
                self._by_version[version] = self.default
        return self._by_version[version]
