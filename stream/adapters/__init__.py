"""Adapters: one folder per outside system (redis/, media/, openvino/), plus metrics and the
file system and DNS checks of the source policy."""
