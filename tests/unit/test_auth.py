"""Who may call which route (`deployments.api.auth`, pure) and how `framestream run` hands tokens to
the replicas (through the environment, never the Serve config)."""

from __future__ import annotations

import contextlib
import os

import pytest

from deployments.api.auth import Access, bearer_token
from stream.settings import Settings

READ = "r" * 20
ADMIN = "a" * 20
ACCESS = Access([READ], [ADMIN])


@pytest.mark.parametrize(
    ("method", "path", "token", "status"),
    [
        ("GET", "/v1/sources", None, 401),
        ("GET", "/v1/sources", "", 401),
        ("GET", "/v1/sources", "r" * 19, 401),  # a prefix of a token is not the token
        ("GET", "/v1/sources", READ + "r", 401),
        ("GET", "/v1/sources", READ, None),
        ("HEAD", "/v1/results/cam", READ, None),
        ("GET", "/v1/deadletters", ADMIN, None),  # admin implies read; a route added later
        ("POST", "/v1/sources", READ, 403),
        ("DELETE", "/v1/sources/cam", READ, 403),
        ("post", "/v1/classify", ADMIN, None),
        ("PUT", "/v1/anything-new", None, 401),
        ("GET", "/v1", None, 401),
        ("GET", "/healthz", None, None),
        ("GET", "/readyz", None, None),
        ("GET", "/", None, None),  # the console page holds no data
        ("GET", "/static/app.js", None, None),
        ("GET", "/v10/sources", None, None),  # not under /v1
    ],
)
def test_scopes(method: str, path: str, token: str | None, status: int | None) -> None:
    refusal = ACCESS.check(method, path, token)
    assert (refusal.status if refusal else None) == status
    if refusal is not None:
        assert refusal.headers["WWW-Authenticate"].startswith("Bearer")
        assert READ not in refusal.reason and ADMIN not in refusal.reason


def test_no_tokens_configured_means_open() -> None:
    assert Access([], []).check("POST", "/v1/sources", None) is None
    assert not Access([], []).enabled


@pytest.mark.parametrize(
    ("authorization", "query", "token"),
    [
        ("Bearer abc", None, "abc"),
        ("bearer  abc ", None, "abc"),
        ("Basic abc", None, None),
        ("Bearer ", "q", "q"),
        (None, "q", "q"),
        ("Bearer h", "q", "h"),  # the header wins
        (None, None, None),
    ],
)
def test_bearer_token(authorization: str | None, query: str | None, token: str | None) -> None:
    assert bearer_token(authorization, query) == token


def test_settings_take_comma_separated_tokens_and_refuse_short_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMESTREAM_API__ADMIN_TOKENS", f"{ADMIN}, {'b' * 20}")
    api = Settings().api
    assert [t.get_secret_value() for t in api.admin_tokens] == [ADMIN, "b" * 20]
    assert ADMIN not in repr(api) and ADMIN not in str(Settings().model_dump(mode="json"))
    monkeypatch.setenv("FRAMESTREAM_API__ADMIN_TOKENS", "short-secret")
    with pytest.raises(ValueError, match="token #1 has 12 characters") as error:
        Settings()
    assert "short-secret" not in str(error.value)


@pytest.fixture
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FRAMESTREAM_API__ADMIN_TOKENS", "FRAMESTREAM_API__READ_TOKENS"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("_clean_env")
def test_the_run_makes_a_token_for_a_local_ray_and_keeps_it_out_of_the_serve_config() -> None:
    from deployments.local.runner import _replica_settings, _tokens_through_environment

    with contextlib.ExitStack() as stack:
        token = _tokens_through_environment(stack, Settings(), None)
        assert token and len(token) >= 40
        assert os.environ["FRAMESTREAM_API__ADMIN_TOKENS"] == token
        assert Settings().api.admin_tokens[0].get_secret_value() == token  # what a replica reads
        config = _replica_settings(Settings(), "redis://127.0.0.1:6379/0")
        assert token not in repr(config)  # the API's limits go in the config, its tokens never
        assert not {"admin_tokens", "read_tokens"} & set(config.get("api", {}))
    assert "FRAMESTREAM_API__ADMIN_TOKENS" not in os.environ  # restored when the run ends


@pytest.mark.usefixtures("_clean_env")
def test_configured_tokens_reach_the_replicas_and_are_not_printed() -> None:
    from deployments.local.runner import _tokens_through_environment

    settings = Settings(api={"admin_tokens": [ADMIN], "read_tokens": [READ]})  # e.g. from --config
    with contextlib.ExitStack() as stack:
        assert _tokens_through_environment(stack, settings, None) is None
        assert os.environ["FRAMESTREAM_API__ADMIN_TOKENS"] == ADMIN
        assert os.environ["FRAMESTREAM_API__READ_TOKENS"] == READ
    with contextlib.ExitStack() as stack:  # an attached run cannot set the cluster's environment
        assert _tokens_through_environment(stack, Settings(), "ray://head:10001") is None
        assert "FRAMESTREAM_API__ADMIN_TOKENS" not in os.environ


def test_the_stage_processes_config_file_has_no_tokens(tmp_path) -> None:
    """A dump masks tokens as '**********'; a stage reading that back would fail (or, worse, take
    it as a token), so the processes runner leaves the section out."""
    from stream.runners.processes import _write_config
    from stream.settings import load_settings

    path = _write_config(Settings(api={"admin_tokens": [ADMIN]}), tmp_path)
    text = path.read_text()
    assert ADMIN not in text and "**" not in text
    assert not load_settings(path).api.enabled
