"""The console's snapshot building: source rows from whatever ``GET /v1/sources`` items hold,
the latest smoothed label per source, stage rows; and the page's files."""

from __future__ import annotations

from types import SimpleNamespace

from deployments.console.feed import (
    LatestResults,
    index_html,
    source_row,
    stage_counts,
    stage_rows,
    static_file,
)


def _result(seq: int, label: str, *, model: str = "m", late: bool = False, source: str = "cam") -> dict:
    return {"kind": "result", "source": source, "model": model, "seq": seq, "smoothed_label": label,
            "smoothed_score": 0.5 + seq / 100, "late": late, "result_ms": 1e12}  # fmt: skip


def test_latest_keeps_the_newest_in_order_result_of_its_model() -> None:
    latest = LatestResults("m")
    for meta in (_result(3, "cat"), _result(5, "dog"), _result(4, "cow"), _result(9, "eel", late=True),
                 _result(7, "fox", model="other"), {"kind": "eos", "source": "cam", "seq": 10}):  # fmt: skip
        latest.note(meta)
    got = latest.get("cam")
    assert got is not None and (got["label"], got["score"], got["result_seq"]) == ("dog", 0.55, 5)
    latest.note(_result(1, "ant", source="gone"))
    latest.keep_only({"cam"})
    assert latest.get("gone") is None and latest.get("cam") is not None


def test_source_row_passes_status_fields_through_and_leaves_missing_ones_none() -> None:
    today = {"id": "cam", "uri": "/c.mp4", "loop": True, "next_seq": 40, "done": False, "error": None,
             "owner": "r1", "target_fps": None, "every_nth": None, "live": None}  # fmt: skip
    row = source_row(today, {"label": "cat", "score": 0.9, "result_seq": 38})
    assert row["id"] == "cam" and row["next_seq"] == 40 and row["label"] == "cat" and row["score"] == 0.9
    assert row["status"] is None and row["fps"] is None and row["last_frame_age_s"] is None
    with_status = {**today, "status": "failed", "reason": "404 from camera", "frames": 39, "dropped": 2,
                   "reconnects": 3, "last_frame_age_s": 4.5, "fps": 0.0}  # fmt: skip
    row = source_row(with_status, None)
    assert (row["status"], row["reason"], row["frames"], row["reconnects"]) == (
        "failed",
        "404 from camera",
        39,
        3,
    )
    assert row["label"] is None and row["score"] is None


def test_stage_counts_and_rows_in_pipeline_order() -> None:
    probes = {
        "preprocess": SimpleNamespace(handled=90, backlog=10),
        "infer": SimpleNamespace(handled=80, backlog=5),
    }
    counters = {"published:*": 100, "dead:infer": 2, "published:cam": 100}
    counts = stage_counts(["ingest", "preprocess", "infer", "postprocess"], probes, counters)
    assert counts["ingest"] == {"handled": 100, "lag": None, "dead_letters": 0}
    assert counts["infer"] == {"handled": 80, "lag": 5, "dead_letters": 2}
    assert counts["postprocess"] == {"handled": 0, "lag": 0, "dead_letters": 0}  # no group yet
    rows = stage_rows(counts, {"infer": {"RUNNING": 2, "STARTING": 1}}, {"infer": 41.234})
    assert [r["stage"] for r in rows] == ["ingest", "preprocess", "infer", "postprocess"]
    infer = rows[2]
    assert (infer["replicas"], infer["fps"], infer["lag"], infer["dead_letters"]) == (2, 41.2, 5, 2)
    assert rows[0]["fps"] is None and rows[0]["replicas"] == 0


def test_the_page_names_its_base_and_only_its_own_files_are_served() -> None:
    page = index_html("/models/m")
    assert '<base href="/models/m/">' in page and 'src="console/console.js"' in page
    assert '<base href="/">' in index_html("")
    assert '<base href="/&quot;&gt;x/">' in index_html('/">x')
    js = static_file("console.js")
    assert js is not None and js[1].startswith("text/javascript") and b"EventSource" in js[0]
    assert static_file("../ingress.py") is None and static_file("index.html") is None
