"""Stages: ingest, preprocess, infer, postprocess. Each glues core logic to adapters."""
