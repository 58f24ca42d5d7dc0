"""The infer stage (`stage.py`) and its batch-size measurement."""
