"""framestream: classify video frames at high throughput over Redis Streams."""

__version__ = "0.1.0"
