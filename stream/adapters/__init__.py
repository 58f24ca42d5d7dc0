"""Adapters: one folder per outside system (redis/, media/, openvino/), plus metrics and the file\nsystem and DNS checks of the source policy."""
