"""The HTTP API: the ingress's FastAPI app, one router module per concern, auth, rate limit, errors,
OpenAPI.
"""
