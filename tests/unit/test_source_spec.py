"""A source's spec as stored in the registry: its own models survive the round trip; bad ones are
refused with the reason."""

from __future__ import annotations

import pytest

from stream.adapters.redis.source_registry import SourceSpec


def test_models_of_its_own_round_trip_and_default_to_every_model() -> None:
    spec = SourceSpec(uri="/clips/a.mp4", models=("cars", "people", "cars"))
    assert spec.models == ("cars", "people")  # repeats dropped, order kept
    assert SourceSpec.from_json(spec.to_json()) == spec
    assert SourceSpec.from_json('{"uri": "/clips/a.mp4"}').models is None


@pytest.mark.parametrize(
    ("models", "reason"),
    [([], "at least one model"), ("cars", "list of model names"), (["cars", ""], "list of model names")],
)
def test_bad_models_are_refused(models: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        SourceSpec.from_json({"uri": "/clips/a.mp4", "models": models})
