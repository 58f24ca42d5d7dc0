"""Adapters: one module per external system (Redis, redis-server, OpenVINO, video)."""
