"""OpenVINO: the inference engine."""
