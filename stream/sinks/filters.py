"""Which pipeline entries a sink delivers, and as what (pure: no I/O).

A sink's group reads every entry of its streams; an entry that is not an item (an end-of-stream,
a skip marker) or that its filters leave out is acked without being sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from stream.core.messages import LABEL_CHANGE, RESULT
from stream.sinks.destination import ItemKind, SinkItem, item_key
from stream.sinks.settings import SinkSettings

__all__ = ["item_kind", "sink_item"]

_EVENT_KINDS = {LABEL_CHANGE, "source_status"}
_NOT_ITEMS = {"eos", "skip", "frame"}


def item_kind(meta: Mapping[str, Any]) -> ItemKind | None:
    """What an entry's message is as a sink item (results, events, segments), or None for an
    entry no sink delivers (end-of-stream, skip marker). Read from the message itself, so an
    entry re-driven from a dead letter (the sink's retry stream) is known without its stream."""
    kind = meta.get("kind")
    if kind == RESULT:
        return "results"
    if kind in _EVENT_KINDS or meta.get("type") == "source_status":
        return "events"
    if kind in _NOT_ITEMS:
        return None
    return "segments" if "id" in meta else None


def sink_item(meta: Mapping[str, Any], sink: SinkSettings) -> SinkItem | None:
    """The item `sink` delivers for one entry's message, or None when it delivers nothing for it
    (not an item, a kind it does not send, a source or model its filters leave out, a result
    below its `min_score`, an item without the fields its key needs)."""
    kind = item_kind(meta)
    if kind is None or kind not in sink.send:
        return None
    source = meta.get("source")
    if not isinstance(source, str) or not fnmatchcase(source, sink.sources):
        return None
    model = meta.get("model")
    if sink.models is not None and model is not None and model not in sink.models:
        return None
    if kind == "results" and sink.min_score is not None:
        score = meta.get("score")
        if not isinstance(score, int | float) or score < sink.min_score:
            return None
    try:
        key = item_key(kind, meta)
    except KeyError:
        return None
    return SinkItem(kind=kind, key=key, source=source, body=dict(meta))
