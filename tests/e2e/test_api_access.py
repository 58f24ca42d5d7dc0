"""The HTTP API lets in only whom it should, opens only safe sources, and its OpenAPI document is
complete: against a live ingress (local Ray, a real redis-server, the real Serve config, all four
stages) with read and admin tokens configured and source files allowed under one folder.

Schemathesis fuzzes every operation of the live ``/openapi.json``: no 5xx, no status code or
header the document does not list, no body that breaks its schema. Its POSTed sources can only
name files under the app's one source folder (the policy refuses all else), and the app's rate
limit is high enough that the fuzzer reaches the routes.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from deployments.ray_internals import session_dir
from stream.adapters.redis.server import RedisServer, find_free_port
from stream.settings import Settings
from tests.leftovers import stop_ray
from tests.waiting import wait_until

ray = pytest.importorskip("ray")
schemathesis = pytest.importorskip("schemathesis")

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning"),
]

MODEL = "mobilenet-v1-0.25-128"  # the synthetic stand-in: fast, on every machine
READ = "read-" + secrets.token_urlsafe(24)
ADMIN = "admin-" + secrets.token_urlsafe(24)
FUZZ_EXAMPLES = 25
"""Examples per operation with a token: the whole fuzz takes about a minute on 2 busy cores."""
TOKEN_VARIABLES = ("FRAMESTREAM_API__READ_TOKENS", "FRAMESTREAM_API__ADMIN_TOKENS")
REPLICAS = {"Ingest": 1, "Preprocess": 1, "Infer": 1, "Postprocess": 1}


@dataclass
class Live:
    url: str
    media: Path
    """The one folder the app may read source files from."""
    outside: Path
    redis_url: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from ray import serve

    from stream.zoo.repository import load_spec
    from stream.zoo.store import locate_model
    from tests.faults.rayapp import FaultApp, start_local_ray

    cache = tmp_path_factory.mktemp("api-models")
    locate_model(load_spec(MODEL), weights_dir=None, cache_dir=cache, allow_synthetic=True)
    media, outside = tmp_path_factory.mktemp("media"), tmp_path_factory.mktemp("outside")
    settings = Settings(
        models={"cache_dir": cache, "weights_dir": None},
        ingest={"allowed_sources": {"schemes": ["file"], "roots": [media]}},
    )
    server = RedisServer().start()
    # as `framestream run` does: the tokens reach the replicas through the environment they inherit
    # from this process, never through the Serve config (which Ray logs and `serve config` shows)
    saved = {name: os.environ.get(name) for name in TOKEN_VARIABLES}
    os.environ.update(zip(TOKEN_VARIABLES, (READ, ADMIN), strict=True))
    start_local_ray()
    try:
        app = FaultApp(
            settings,
            server.url,
            MODEL,
            REPLICAS,
            ingress={"rate_per_s": 500, "burst": 500},
            name="apiaccess",
        )
        app.deploy(find_free_port())
        yield Live(f"http://127.0.0.1:{app.http_port}", media, outside, server.url)
    finally:
        try:
            serve.shutdown()
        finally:
            stop_ray()  # and what ray.shutdown leaves running
            server.close()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _routes(router: object, prefix: str = "") -> Iterator[tuple[str, set[str]]]:
    """(path, methods) of every route under `router`, into included routers (FastAPI nests them,
    and Serve re-mounts the deployment's routes through one) and mounts."""
    for route in getattr(router, "routes", []):
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included, prefix + getattr(route.include_context, "prefix", ""))
        elif hasattr(route, "methods"):
            yield prefix + route.path, set(route.methods or {"GET"})
        elif hasattr(route, "path"):  # a Mount (static files, a sub-app): it answers GET
            yield prefix + route.path, {"GET"}


def _v1_routes() -> list[tuple[str, str]]:
    """(method, path) of every /v1 route the app has, path parameters filled in."""
    import re

    from deployments.api.ingress import api

    found = []
    for path, methods in _routes(api.router):
        if not (path == "/v1" or path.startswith("/v1/")):
            continue
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        found += [(method, concrete) for method in sorted(methods)]
    return found


# -- who gets in ------------------------------------------------------------------------------


def test_every_v1_route_refuses_an_anonymous_request(live: Live) -> None:
    """Fail closed: each /v1 route of the app, including ones added after this test was written."""
    routes = _v1_routes()
    assert len(routes) >= 6, routes  # the routes of today, at least
    refused = {}
    with httpx.Client(base_url=live.url, timeout=30) as http:
        for method, path in routes:
            response = http.request(method, path, json={"uri": "/nothing"} if method == "POST" else None)
            refused[(method, path)] = response.status_code
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert set(response.json()) == {"error"}
        # health stays open (probes carry no token), and so does the API's description
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        documented = http.get("/openapi.json").json()["paths"]
    for method, path in refused:
        template = next(p for p in documented if _fills(p, path))
        assert "401" in documented[template][method.lower()]["responses"], (method, template)


def _fills(template: str, path: str) -> bool:
    import re

    return re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path) is not None


def test_tokens_and_scopes(live: Live) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        # a read token reads through the header; through the query only where a browser cannot
        # send a header (an EventSource, an <img>), since a URL ends up in logs and histories
        assert http.get("/v1/sources", headers=_bearer(READ)).status_code == 200
        assert http.get("/v1/sources", params={"token": READ}).status_code == 401
        assert http.get("/v1/sources/none/thumbnail", params={"token": READ}).status_code == 404
        assert http.post("/v1/sources", params={"token": ADMIN}, json={"uri": "/x"}).status_code == 401
        assert http.get("/v1/stages", headers=_bearer(ADMIN)).status_code == 200  # admin implies read
        # ... and is refused on every route that changes something, with the reason
        for method, path in _v1_routes():
            if method in ("GET", "HEAD"):
                continue
            response = http.request(method, path, headers=_bearer(READ), json={"uri": "/nothing"})
            assert response.status_code == 403, (method, path, response.text)
            assert "needs an admin token" in response.json()["error"]
        # an unknown token, a lookalike, a token in the wrong scheme: 401, and never echoed
        for headers in (_bearer("x" * 40), _bearer(ADMIN[:-1]), {"Authorization": f"Basic {ADMIN}"}):
            response = http.get("/v1/sources", headers=headers)
            assert response.status_code == 401, headers
            assert ADMIN not in response.text and "x" * 40 not in response.text


@pytest.mark.parametrize(
    ("uri", "status", "reason"),
    [
        ("/etc/passwd", 403, "outside the folders sources may be read from"),
        ("file:///etc/shadow", 403, "/etc/shadow is outside"),
        ("LINK/passwd-copy.mp4", 403, "or resolves through a symlink"),
        ("http://169.254.169.254/latest/meta-data", 403, "kind 'http' is not allowed"),
        ("relative/clip.mp4", 400, "must be absolute"),
    ],
)
def test_unsafe_sources_are_refused_even_with_an_admin_token(
    live: Live, uri: str, status: int, reason: str
) -> None:
    if uri.startswith("LINK/"):
        link = live.media / "escape"
        if not link.exists():
            link.symlink_to(live.outside)
        (live.outside / "passwd-copy.mp4").write_bytes(b"not for the API")
        uri = str(link / uri.removeprefix("LINK/"))
    with httpx.Client(base_url=live.url, timeout=30, headers=_bearer(ADMIN)) as http:
        response = http.post("/v1/sources", json={"uri": uri, "id": "refused"})
        assert response.status_code == status, response.text
        assert reason in response.json()["error"]
        listed = http.get("/v1/sources").json()["sources"]
    assert "refused" not in [s["id"] for s in listed]


def test_metadata_addresses_are_refused_by_the_default_policy() -> None:
    """The live app allows files only; the default policy allows http and still refuses these
    (the ingress calls the same function; its table of cases is tests/unit/test_source_policy.py)."""
    from stream.adapters.source_access import check_uri, policy_from
    from stream.settings import AllowedSources

    policy = policy_from(AllowedSources())
    for uri in (
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/",
        "http://localhost:6379/",
    ):
        verdict = check_uri(uri, policy)
        assert verdict.outcome == "forbidden", (uri, verdict)
    assert check_uri(str(Path(tempfile.gettempdir()) / "clip.mp4"), policy).allowed


def test_a_file_under_an_allowed_folder_plays(live: Live) -> None:
    from stream.adapters.media.video import write_demo_clip

    frames = 20
    clip = write_demo_clip(live.media / "allowed.mp4", frames=frames)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        created = http.post("/v1/sources", json={"uri": str(clip), "id": "allowed"}, headers=_bearer(ADMIN))
        assert created.status_code == 201, created.text
        assert created.json()["uri"] == str(clip.resolve())
        results: list[dict] = []
        deadline = time.monotonic() + 180
        while len(results) < frames and time.monotonic() < deadline:
            after = results[-1]["seq"] if results else -1
            page = http.get("/v1/results/allowed", params={"after_seq": after}, headers=_bearer(READ))
            assert page.status_code == 200, page.text
            results += page.json()["results"]
            if len(results) < frames:
                time.sleep(0.3)
        assert [r["seq"] for r in results] == list(range(frames))
        segments = wait_until(
            lambda: _ended_segments(http, "allowed"), timeout_s=60, what="the segments up to the source's end"
        )
        # they tile the clip, each with one smoothed label: the results' own
        assert [s["first_seq"] for s in segments] == [0, *(s["last_seq"] + 1 for s in segments[:-1])]
        assert segments[-1]["last_seq"] == frames - 1
        for s in segments:
            assert {r["smoothed_label"] for r in results[s["first_seq"] : s["last_seq"] + 1]} == {s["label"]}
        assert http.get("/v1/sources/allowed/segments").status_code == 401
        assert http.get("/v1/sources/none/segments", headers=_bearer(READ)).status_code == 404
        assert http.delete("/v1/sources/allowed", headers=_bearer(ADMIN)).status_code == 204


def _ended_segments(http: httpx.Client, source: str) -> list[dict] | None:
    """Every closed segment of `source` once the last one closed at its end (paged, 2 a page)."""
    segments: list[dict] = []
    after = -1
    while True:
        page = http.get(f"/v1/sources/{source}/segments", params={"after_seq": after, "limit": 2},
                        headers=_bearer(READ))  # fmt: skip
        assert page.status_code == 200, page.text
        body = page.json()
        segments += body["segments"]
        if not body["segments"]:
            break
        after = body["next_after_seq"]
    ended = bool(segments) and segments[-1]["closed_by"] == "eos" and body["open"] is None
    return segments if ended else None


def test_tokens_stay_out_of_rays_logs(live: Live) -> None:
    """Neither the tokens the replicas were given nor one sent in a query string (which the console
    link carries) end up in Ray's logs: Serve's access log writes the path only."""
    session = session_dir()  # this cluster's: others may run on the machine
    assert session is not None, "cannot find this Ray cluster's session folder"

    def logs() -> list[Path]:
        return [p for p in (session / "logs").rglob("*") if p.is_file()]

    def access_lines() -> int:
        """Lines of Serve's access log for the request below (Serve logs the route, not the path)."""
        return sum(p.read_bytes().count(b"GET /v1/sources/{source_id}/thumbnail") for p in logs())

    before = access_lines()
    with httpx.Client(base_url=live.url, timeout=30) as http:
        assert http.get("/v1/sources/none/thumbnail", params={"token": ADMIN}).status_code == 404
    # the request's log line is on disk: a check of the logs before it would prove nothing
    wait_until(lambda: access_lines() > before, timeout_s=30, what="the request's access log line")
    leaked = [p.name for p in logs() if ADMIN.encode() in p.read_bytes()]
    assert not leaked, f"the admin token is in {leaked}"


# -- the OpenAPI document is complete: schemathesis against the live ingress ---------------------


def _operations(live: Live) -> list:
    """Every operation of the live ``/openapi.json`` but the SSE streams (they never end, so a fuzzer
    waiting for a body would hang; they are covered above, in tests/e2e/test_ray_pipeline.py and
    tests/e2e/test_console_browser.py)."""
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    streams = {("GET", "/v1/events"), ("GET", "/v1/console/events")}
    return [op for op in operations if (op.method.upper(), op.path) not in streams]


def _checks() -> list:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]


def _fuzz(live: Live, examples: int, headers: dict[str, str], modes: tuple[str, ...]) -> dict[str, int]:
    """Run schemathesis' generated requests against every operation; the status codes seen.

    (Schemathesis' own pytest plug-in does not load under pytest 9.2, so the cases come from each
    operation's Hypothesis strategy, which is the same generator.)"""
    from schemathesis import GenerationMode

    seen: dict[str, int] = {}
    checks = _checks()
    for operation in _operations(live):
        for mode in modes:

            @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
            def run(case) -> None:
                response = case.call_and_validate(
                    base_url=live.url, headers=headers, checks=checks, timeout=30
                )
                key = f"{case.method} {case.path} {response.status_code}"
                seen[key] = seen.get(key, 0) + 1

            try:
                run()
            except Unsatisfiable:  # no invalid input exists (an operation without parameters)
                assert mode == "negative", operation.label
    return seen


def test_the_openapi_document_holds_for_fuzzed_requests_with_an_admin_token(live: Live) -> None:
    started = time.monotonic()
    seen = _fuzz(live, FUZZ_EXAMPLES, _bearer(ADMIN), ("positive", "negative"))
    elapsed_s = time.monotonic() - started
    print(f"fuzzed {sum(seen.values())} requests in {elapsed_s:.0f} s: {sorted(seen.items())}")
    assert not any(key.endswith(" 429") for key in seen), seen  # the fuzzer reached the routes
    assert any(key.startswith("POST /v1/sources 4") for key in seen), seen
    with httpx.Client(base_url=live.url, timeout=30, headers=_bearer(ADMIN)) as http:
        uris = [s["uri"] for s in http.get("/v1/sources").json()["sources"]]
    assert all(uri.startswith(str(live.media.resolve())) for uri in uris), uris  # nothing else opened


def test_the_openapi_document_holds_for_fuzzed_requests_without_a_token(live: Live) -> None:
    seen = _fuzz(live, 3, {}, ("positive",))
    refused = {key for key in seen if " /v1/" in key}
    assert refused and all(key.endswith(" 401") for key in refused), seen
