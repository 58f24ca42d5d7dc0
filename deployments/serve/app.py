"""The framestream Serve application: ingress + push classifier + one deployment per stage.

``deployments/serve/serve_config.yaml`` names `build_app` as its import path and passes `AppArgs` as
``args``; `serve run deployments/serve/serve_config.yaml`, the KubeRay RayService and
``framestream run`` all deploy through it. Deployment names (what the config's ``deployments:``
entries refer to) are in `DEPLOYMENT_NAMES`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray.serve import Application

from deployments.api.ingress import Ingress, IngressOptions
from deployments.serve.classifier import Classifier
from deployments.serve.stage import StageDeployment
from stream.core.messages import STAGES

__all__ = ["APP_NAME", "SINKS", "AppArgs", "DEPLOYMENT_NAMES", "build_app"]

APP_NAME = "framestream"
DEPLOYMENT_NAMES = {
    "ingest": "Ingest",
    "preprocess": "Preprocess",
    "infer": "Infer",
    "postprocess": "Postprocess",
    "classifier": "Classifier",
    "ingress": "Ingress",
    "sinks": "Sinks",
}
SINKS = "sinks"
"""The stage name of the sinks' delivery loop (`stream.sinks.loop.SinkLoop`): deployed when
``args.stages`` names it (serve_config.yaml does); its replicas share the partitions under leases,
so it autoscales like the stages and each source's items stay in order."""


class ClassifierArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_batch_size: int | None = Field(None, ge=1)
    batch_wait_ms: float | None = Field(None, ge=0)


class AppArgs(BaseModel):
    """``args`` of the application in the Serve config.

    `settings` are overrides of `stream.settings.Settings` (nested like the YAML/env sections);
    every replica reads its settings from its environment (``FRAMESTREAM_*``, e.g.
    ``FRAMESTREAM_REDIS__URL``) with these on top.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="model name; default: settings.models.default")
    settings: dict[str, Any] = Field(default_factory=dict)
    stages: list[str] = Field(
        default_factory=lambda: list(STAGES),
        description="stages to deploy; 'sinks' delivers the settings' sinks (docs/sinks.md)",
    )
    stuck_after_s: float = Field(60.0, gt=0, description="health check: no progress this long = stuck")
    ingress: IngressOptions = Field(default_factory=lambda: IngressOptions.model_validate({}))
    classifier: ClassifierArgs = Field(default_factory=lambda: ClassifierArgs.model_validate({}))

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - {*STAGES, SINKS})
        if unknown:
            raise ValueError(f"unknown stages {unknown}; known: {[*STAGES, SINKS]}")
        return value


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application for `args` (see `AppArgs`); Serve calls this with the config's ``args``."""
    a = AppArgs.model_validate(args or {})
    stages = {
        # the decorated classes are Serve Deployments (mypy sees the classes)
        name: StageDeployment.options(name=DEPLOYMENT_NAMES[name]).bind(  # type: ignore[attr-defined]
            name, a.settings, a.model, a.stuck_after_s
        )
        for name in (*STAGES, SINKS)
        if name in a.stages
    }
    classifier = Classifier.options(name=DEPLOYMENT_NAMES["classifier"]).bind(  # type: ignore[attr-defined]
        a.settings, a.model, a.classifier.max_batch_size, a.classifier.batch_wait_ms
    )
    return Ingress.options(name=DEPLOYMENT_NAMES["ingress"]).bind(  # type: ignore[attr-defined]
        classifier, stages, a.settings, a.model, a.ingress.model_dump()
    )
