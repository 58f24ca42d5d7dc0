"""The Grafana dashboard parses, covers what operators watch, and queries only metrics the code
emits, under the names Ray's Prometheus exporter gives them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stream.adapters.metrics import METRIC_NAMES
from tests.k8s.manifests import K8S, by_kind

Docs = dict[str, list[dict[str, Any]]]
DASHBOARD = K8S / "base" / "dashboards" / "framestream.json"
# Kind and tag keys of each metric the facade registers (checked against a live Ray below).
KINDS = {
    "frames": ("counter", {"stage", "outcome"}),
    "stage_seconds": ("histogram", {"stage"}),
    "batch_size": ("histogram", {"model"}),
    "stream_lag": ("gauge", {"stream", "group"}),
    "dead_letters": ("counter", {"stage"}),
    "dropped": ("counter", {"source", "reason"}),
    "replicas": ("gauge", {"stage"}),
    "e2e_latency": ("histogram", {"model"}),
    "replica_shortfalls": ("counter", {"stage"}),
    "source_frames": ("counter", {"source"}),
    "source_dropped": ("counter", {"source"}),
    "source_reconnects": ("counter", {"source"}),
    "source_last_frame_age": ("gauge", {"source"}),
    "source_up": ("gauge", {"source"}),
    "sink_delivered": ("counter", {"sink"}),
    "sink_retries": ("counter", {"sink"}),
    "sink_dead_letters": ("counter", {"sink", "reason"}),
    "sink_backlog": ("gauge", {"sink"}),
    "sink_last_error": ("gauge", {"sink"}),
}
_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
}


def exported_series() -> dict[str, tuple[str, set[str]]]:
    """Prometheus series name -> (metric key, tag keys), as Ray exports our metrics.

    Ray prefixes every custom metric with ``ray_``; a counter named ``framestream_frames`` becomes
    ``ray_framestream_frames_total``; histograms get ``_bucket``/``_sum``/``_count``.
    """
    out = {}
    for key, name in METRIC_NAMES.items():
        kind, tags = KINDS[key]
        for suffix in _SUFFIXES[kind]:
            out[f"ray_{name}{suffix}"] = (key, tags | ({"le"} if suffix == "_bucket" else set()))
    return out


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if t.get("expr")]


def parse_query(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression uses."""
    labels: set[str] = set()
    for selector in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*\"", selector))
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels |= {g.strip() for g in group.split(",") if g.strip()}
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without)\s*\([^)]*\)", " ", bare)
    names = {
        m.group(1)
        for m in re.finditer(r"([A-Za-z_:][\w:]*)\s*(\()?", bare)
        if not m.group(2) and m.group(1) not in _PROMQL_WORDS
    }
    return names, labels


def test_metric_kinds_cover_every_registered_metric() -> None:
    assert set(KINDS) == set(METRIC_NAMES)


def test_dashboard_parses_and_matches_its_configmap(rendered: Docs) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    for overlay, docs in rendered.items():
        (cm,) = [
            d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "framestream-grafana-dashboard"
        ]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"]["framestream.json"]) == dashboard, overlay
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_every_queried_metric_and_label_is_emitted_by_the_code() -> None:
    series = exported_series()
    dashboard = json.loads(DASHBOARD.read_text())
    used_keys = set()
    for expr in queries(dashboard):
        names, labels = parse_query(expr)
        assert names, expr
        for name in names:
            assert name in series, f"{name} (in {expr!r}) is not a metric the code emits"
            used_keys.add(series[name][0])
        allowed = set().union(*(series[n][1] for n in names))
        assert labels <= allowed, f"{expr!r} uses labels {labels - allowed} the metrics do not carry"
    assert used_keys == set(METRIC_NAMES), f"dashboard never shows {set(METRIC_NAMES) - used_keys}"


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    text = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput", "latency", "lag", "replicas", "batch size", "dropped", "dead letters"):
        assert topic in text, topic
    exprs = " ".join(queries(dashboard))
    for q in ("0.5", "0.95", "0.99"):
        assert (
            f"histogram_quantile({q}, sum by (le, stage) (rate(ray_framestream_stage_seconds_bucket" in exprs
        )
        # capture to result per model: what a user waits, queueing included (stage times hide it)
        assert (
            f"histogram_quantile({q}, sum by (le, model) (rate(ray_framestream_e2e_latency_seconds_bucket"
            in exprs
        )


def test_dashboard_shows_each_source_status_reconnects_and_silence() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    by_metric = {
        name: p for p in dashboard["panels"] for e in queries({"panels": [p]}) for name in parse_query(e)[0]
    }
    for metric in (
        "source_up",
        "source_last_frame_age",
        "source_reconnects",
        "source_frames",
        "source_dropped",
    ):
        series = {n for n in exported_series() if exported_series()[n][0] == metric}
        panel = next(by_metric[n] for n in series if n in by_metric)
        assert all("by (source)" in t["expr"] for t in panel["targets"]), panel["title"]
        assert "{{source}}" in panel["targets"][0]["legendFormat"], panel["title"]


def test_query_parser_finds_names_and_labels() -> None:
    names, labels = parse_query(
        'histogram_quantile(0.9, sum by (le, stage) (rate(x_bucket{outcome!="ok"}[$__rate_interval]))) / y'
    )
    assert names == {"x_bucket", "y"} and labels == {"le", "stage", "outcome"}


_SCRAPE = textwrap.dedent(
    """
    import json, re, socket, sys, time, urllib.request
    import ray
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _metrics_export_port=port)

    @ray.remote
    def record():
        from stream.adapters.metrics import metrics
        metrics.frames("infer", "ok", 3)
        metrics.stage_seconds("infer", 0.02)
        metrics.batch_size("m", 4)
        metrics.stream_lag("fs:{p}:frames", "preprocess", 7)
        metrics.dead_letters("infer")
        metrics.dropped("cam", "drop_oldest")
        metrics.replicas("infer", 2)
        metrics.e2e_latency("m", 0.2)
        metrics.replica_shortfalls("ingest")
        metrics.source_frames("cam", 8)
        metrics.source_dropped("cam", 1)
        metrics.source_reconnects("cam", 1)
        metrics.source_last_frame_age("cam", 0.5)
        metrics.source_up("cam", True)
        metrics.sink_delivered("hook", 5)
        metrics.sink_retries("hook")
        metrics.sink_dead_letters("hook", "failed", 1)
        metrics.sink_backlog("hook", 9)
        metrics.sink_last_error("hook", time.time())

    ray.get(record.remote(), timeout=60)
    want = set(json.loads(sys.argv[1]))
    deadline = time.monotonic() + 90
    body = ""
    while time.monotonic() < deadline:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            body = ""
        if want <= set(re.findall(r"^(ray_framestream_\\w+)\\{", body, re.M)):
            break
        time.sleep(0.5)
    ray.shutdown()
    print(json.dumps(body))
    """
)


@pytest.mark.ray
@pytest.mark.slow
def test_live_ray_exports_exactly_the_names_the_dashboard_relies_on(tmp_path: Path) -> None:
    series = exported_series()
    proc = subprocess.run(
        [sys.executable, "-c", _SCRAPE, json.dumps(sorted(series))],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=K8S.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    body = json.loads(proc.stdout.strip().splitlines()[-1])
    found: dict[str, set[str]] = {}
    for name, labels in re.findall(r"^(ray_framestream_\w+)\{([^}]*)\}", body, re.M):
        found.setdefault(name, set()).update(re.findall(r"(\w+)=\"", labels))
    assert set(found) == set(series), body[:2000]
    for name, (_, tags) in series.items():
        assert tags <= found[name], (name, found[name])
    types = dict(re.findall(r"^# TYPE (ray_framestream_\w+) (\w+)$", body, re.M))
    for key, name in METRIC_NAMES.items():
        assert types[f"ray_{name}"] == KINDS[key][0], name
