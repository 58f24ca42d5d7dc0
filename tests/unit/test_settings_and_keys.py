from __future__ import annotations

import json
import logging
import os
import warnings

import pytest
from pydantic import ValidationError

from stream.core.keys import PipelineKeys
from stream.errors import ConfigError
from stream.settings import load_settings


def test_keys_share_one_hash_tag():
    keys = PipelineKeys("cams")
    names = [keys.frames, keys.tensors("m"), keys.scores("m"), keys.results, keys.dead, keys.events]
    assert all(n.startswith("fs:{cams}:") for n in names)
    with pytest.raises(ValueError, match="pipeline name"):
        PipelineKeys("a}b")


def test_yaml_then_env_overrides(tmp_path, monkeypatch):
    cfg = tmp_path / "fs.yaml"
    cfg.write_text("infer:\n  max_batch_size: 8\n  max_wait_ms: 4\n")
    monkeypatch.setenv("FRAMESTREAM_INFER__MAX_WAIT_MS", "7")
    s = load_settings(cfg)
    assert (s.infer.max_batch_size, s.infer.max_wait_ms) == (8, 7)


def test_bad_values_are_named(tmp_path):
    cfg = tmp_path / "fs.yaml"
    cfg.write_text("infer:\n  max_batch_size: 0\n")
    with pytest.raises(ValidationError, match="max_batch_size"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")


def test_the_frame_codec_has_one_setting_and_the_issues_name_for_it_says_which(tmp_path):
    cfg = tmp_path / "fs.yaml"
    cfg.write_text("ingest:\n  encoding: jpeg\n")
    assert load_settings(cfg).ingest.encoding == "jpeg"
    cfg.write_text("streams:\n  frame_codec: raw\n")
    with pytest.raises(ValidationError, match=r"is ingest\.encoding \(raw \| jpeg\)"):
        load_settings(cfg)


def test_the_redis_password_is_a_secret_like_the_api_tokens(monkeypatch, caplog):
    password, token = "redis-pw-0123456789", "admin-token-0123456789"
    monkeypatch.setenv("FRAMESTREAM_REDIS__PASSWORD", password)
    monkeypatch.setenv("FRAMESTREAM_API__ADMIN_TOKENS", token)
    settings = load_settings()
    # a logger of its own (made now: none an earlier test may have disabled or quietened)
    logger = logging.getLogger(f"framestream.test.{os.getpid()}.{id(settings)}")
    caplog.set_level(logging.WARNING, logger=logger.name)
    logger.warning("settings: %s", settings)  # settings in a log line
    assert "settings: " in caplog.text  # the line was written

    shown = [repr(settings), str(settings), json.dumps(settings.model_dump(mode="json")), caplog.text]
    assert not [s for s in shown if password in s or token in s]
    assert settings.redis.password is not None and settings.redis.password.get_secret_value() == password

    shared = settings.dump_without_secrets()  # what a run hands its replicas and stage processes
    assert "password" not in shared["redis"] and password not in repr(shared) and token not in repr(shared)
    assert not {"admin_tokens", "read_tokens"} & set(shared.get("api", {}))
    assert shared["redis"]["url"] == "auto" and load_settings(**shared).redis.password is not None


def test_the_weights_dir_has_one_name_and_the_old_one_still_works_with_a_deprecation_warning(
    monkeypatch, tmp_path
):
    monkeypatch.delenv("FRAMESTREAM_MODELS__WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("FRAMESTREAM_WEIGHTS_DIR", str(tmp_path / "old"))
    with pytest.warns(DeprecationWarning, match="FRAMESTREAM_WEIGHTS_DIR .*FRAMESTREAM_MODELS__WEIGHTS_DIR"):
        assert load_settings().models.weights_dir == tmp_path / "old"
    monkeypatch.setenv("FRAMESTREAM_MODELS__WEIGHTS_DIR", str(tmp_path / "new"))
    with pytest.warns(DeprecationWarning):
        assert load_settings().models.weights_dir == tmp_path / "new"  # the setting's own name wins
    with pytest.warns(DeprecationWarning):
        given = load_settings(models={"weights_dir": tmp_path / "given"})  # as the CLI's options
    assert given.models.weights_dir == tmp_path / "given"

    monkeypatch.delenv("FRAMESTREAM_WEIGHTS_DIR")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name alone: no warning
        assert load_settings().models.weights_dir == tmp_path / "new"
