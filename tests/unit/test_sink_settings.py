"""Sink settings: a bad sink is one clear error at start; secrets never leave in a dump; the kinds
come from entry points; what a sink sends (filters) and how a webhook body is signed."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from stream.errors import ConfigError
from stream.runners.processes import _write_config, sink_secret_variable, sink_secrets
from stream.settings import Settings, load_settings
from stream.sinks.destination import SinkItem
from stream.sinks.filters import sink_item
from stream.sinks.registry import build_destination, check_sinks, sink_kinds
from stream.sinks.settings import SinkSettings
from stream.sinks.webhook import sign, webhook_body

HOOK = {"name": "hook", "kind": "webhook", "url": "https://127.0.0.1:8443/in"}
SECRET = "do-not-show-this-secret"


def _error(**sink: object) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(sinks=[{**HOOK, **sink}])
    return str(caught.value)


def test_a_good_sink_has_the_documented_defaults() -> None:
    sink = Settings(sinks=[HOOK]).sinks[0]
    assert (sink.send, sink.sources, sink.models, sink.max_items, sink.max_wait_ms) == (
        ["results"],
        "*",
        None,
        100,
        200,
    )
    assert (sink.timeout_s, sink.verify_tls, sink.max_attempts, sink.max_age_s) == (10.0, True, 10, 600.0)
    assert (sink.max_backlog, sink.on_full, sink.topic) == (100_000, "pause", "framestream/{source}/{model}")
    assert sink.group == "sink:hook"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "url must be http://"),
        ({"url": "not a url"}, "url must be http://"),
        ({"url": "http://127.0.0.1:99999/x"}, "bad port"),
        ({"kind": "mqtt", "url": "http://127.0.0.1/x"}, "url must be mqtt://"),
        ({"name": "Bad_Name"}, "must be 1-63 characters"),
        ({"secret": SECRET, "secret_env": "HOME"}, "not both"),
        ({"send": []}, "at least one"),
        ({"send": ["frames"]}, "send"),
        ({"on_full": "block"}, "on_full"),
    ],
)
def test_a_bad_sink_is_a_clear_error_that_never_shows_the_secret(change: dict, says: str) -> None:
    with_secret = "secret" not in change and "secret_env" not in change
    message = _error(secret=SECRET, **change) if with_secret else _error(**change)
    assert says in message
    assert SECRET not in message


def test_postgres_needs_a_dsn_and_names_are_unique() -> None:
    assert "needs dsn" in _error(kind="postgres", url=None)
    with pytest.raises(ValidationError, match="hook used more than once"):
        Settings(sinks=[HOOK, HOOK])


def test_an_unknown_kind_is_a_config_error_naming_the_kinds() -> None:
    sink = Settings(sinks=[{**HOOK, "kind": "carrier-pigeon"}]).sinks[0]
    with pytest.raises(ConfigError, match="unknown kind 'carrier-pigeon'; kinds are .*webhook"):
        build_destination(sink)
    assert "webhook" in sink_kinds()
    assert [d.kind for d in check_sinks([Settings(sinks=[HOOK]).sinks[0]])] == ["webhook"]


def test_a_missing_secret_variable_is_a_config_error_when_the_sink_is_built() -> None:
    sink = Settings(sinks=[{**HOOK, "secret_env": "FRAMESTREAM_TEST_NOT_SET_ANYWHERE"}]).sinks[0]
    with pytest.raises(ConfigError, match="FRAMESTREAM_TEST_NOT_SET_ANYWHERE, which is not set"):
        build_destination(sink)


def test_a_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_HOOK_SECRET", SECRET)
    assert Settings(sinks=[{**HOOK, "secret_env": "MY_HOOK_SECRET"}]).sinks[0].secret_value() == SECRET


def test_secrets_stay_out_of_dumps_and_the_stage_config_file(tmp_path: Path) -> None:
    settings = Settings(sinks=[{**HOOK, "secret": SECRET}])
    assert SECRET not in json.dumps(settings.dump_without_secrets())
    assert SECRET not in json.dumps(settings.sinks[0].public())
    path = _write_config(settings, tmp_path)
    assert SECRET not in path.read_text()
    # the sinks process gets it through the environment, named by the config's secret_env
    written = yaml.safe_load(path.read_text())["sinks"][0]
    assert written["secret_env"] == sink_secret_variable("hook")
    assert sink_secrets(settings) == {sink_secret_variable("hook"): SECRET}


def test_sinks_from_the_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump({"sinks": [{**HOOK, "send": ["results", "events"], "models": ["m"]}]}))
    [sink] = load_settings(path).sinks
    assert (sink.name, sink.send, sink.models) == ("hook", ["results", "events"], ["m"])


def _sink(**change: object) -> SinkSettings:
    return Settings(sinks=[{**HOOK, **change}]).sinks[0]


RESULT = {"kind": "result", "source": "cam-1", "model": "m", "seq": 7, "label": "cat", "score": 0.8}


def test_filters_choose_what_a_sink_sends() -> None:
    assert sink_item(RESULT, _sink()) == SinkItem("results", "cam-1/m/7", "cam-1", RESULT)
    assert sink_item(RESULT, _sink(sources="cam-*")) is not None
    assert sink_item(RESULT, _sink(sources="door-*")) is None
    assert sink_item(RESULT, _sink(models=["other"])) is None
    assert sink_item(RESULT, _sink(min_score=0.9)) is None
    assert sink_item({"kind": "eos", "source": "cam-1", "model": "m"}, _sink()) is None
    change = {"kind": "label_change", "source": "cam-1", "model": "m", "seq": 9, "label": "dog"}
    assert sink_item(change, _sink()) is None  # events are not sent by default
    assert sink_item(change, _sink(send=["events"])).key == "cam-1/m/9"  # type: ignore[union-attr]
    status = {"kind": "source_status", "source": "cam-1", "change": "stalled", "time_ms": 5}
    assert sink_item(status, _sink(send=["events"])).key == "cam-1/status/5"  # type: ignore[union-attr]
    segment = {"id": "cam-1/m/3-9", "source": "cam-1", "model": "m", "label": "cat"}
    assert sink_item(segment, _sink(send=["segments"])).key == "cam-1/m/3-9"  # type: ignore[union-attr]


def test_the_webhook_body_is_signed_with_hmac_sha256() -> None:
    body = webhook_body([SinkItem("results", "cam-1/m/7", "cam-1", RESULT)])
    assert json.loads(body) == [{"key": "cam-1/m/7", "kind": "results", "item": RESULT}]
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body) == f"sha256={expected}"
