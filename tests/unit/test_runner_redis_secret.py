"""`framestream run --runner ray` keeps the Redis password out of the Serve application's config
(which `serve status`, `serve config` and the dashboard show): a local Ray started by the run
gets the URL and password through the environment its replicas inherit."""

from __future__ import annotations

import contextlib
import os

import pytest
from rich.console import Console

from deployments.local.runner import _redis_through_environment, _replica_settings
from stream.settings import Settings

URL = "redis://:s3cret-pw@127.0.0.1:6390/0"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAMESTREAM_REDIS__URL", raising=False)
    monkeypatch.delenv("FRAMESTREAM_REDIS__PASSWORD", raising=False)


def test_a_local_ray_gets_the_url_through_the_environment_and_the_config_has_no_secret() -> None:
    settings = Settings(redis={"password": "other-pw"})
    console = Console(record=True)
    with contextlib.ExitStack() as stack:
        replica_url = _redis_through_environment(stack, settings, URL, None, console)
        assert replica_url is None
        assert os.environ["FRAMESTREAM_REDIS__URL"] == URL
        assert os.environ["FRAMESTREAM_REDIS__PASSWORD"] == "other-pw"
        config = repr(_replica_settings(settings, replica_url))
        assert "s3cret-pw" not in config and "other-pw" not in config
        assert "url" not in _replica_settings(settings, replica_url)["redis"]
    # the run is over: the driver's environment is as it was
    assert "FRAMESTREAM_REDIS__URL" not in os.environ and "FRAMESTREAM_REDIS__PASSWORD" not in os.environ


def test_no_password_means_the_url_goes_into_the_config_as_before() -> None:
    plain = "redis://127.0.0.1:6390/0"
    with contextlib.ExitStack() as stack:
        assert _redis_through_environment(stack, Settings(), plain, None, Console()) == plain
    assert "FRAMESTREAM_REDIS__URL" not in os.environ
    assert _replica_settings(Settings(), plain)["redis"]["url"] == plain


def test_an_existing_cluster_keeps_the_url_and_the_user_is_warned() -> None:
    console = Console(record=True, width=200)
    with contextlib.ExitStack() as stack:
        assert _redis_through_environment(stack, Settings(), URL, "ray://head:10001", console) == URL
    assert "FRAMESTREAM_REDIS__URL" not in os.environ
    assert "password in the Redis URL goes into the Serve" in console.export_text()
