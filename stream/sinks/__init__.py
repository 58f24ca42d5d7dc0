"""Sinks: deliver results, label-change events and segments to the user's own systems (webhook,
MQTT, PostgreSQL, plugins), at least once and in order per source. `destination` states what a
destination must do; the delivery loop they share reads Redis and acks only what was confirmed."""
