"""MQTT topic levels made from source ids: always one level, never a wildcard, and reversible."""

from __future__ import annotations

from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st

from stream.sinks.destination import SinkItem
from stream.sinks.mqtt import DEFAULT_TOPIC, escape_topic_level, topic_for


@given(st.text())
def test_an_escaped_value_is_one_literal_level_that_decodes_back(value: str) -> None:
    level = escape_topic_level(value)
    assert not any(c in level for c in "/+#\x00") and not level.startswith("$")
    assert unquote(level) == value


@given(st.text(min_size=1), st.text())
def test_every_source_gets_its_own_topic(source: str, model: str) -> None:
    item = SinkItem("results", "k", source, {"source": source, "model": model, "seq": 0})
    topic = topic_for(DEFAULT_TOPIC, item)
    prefix, encoded_source, encoded_model = topic.split("/")
    assert (prefix, unquote(encoded_source), unquote(encoded_model)) == ("framestream", source, model)
