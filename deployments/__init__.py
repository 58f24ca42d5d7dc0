"""The Ray layer: each stage as a Ray Serve deployment, the autoscaling policy, the HTTP ingress,
the Serve application (described by ``serve_config.yaml``) and the Ray runner of ``framestream run``.

Nothing in `stream` imports this package at module level.
"""
