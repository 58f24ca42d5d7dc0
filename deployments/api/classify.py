"""``POST /v1/classify`` (an ``APIRouter`` the ingress's app includes): one JPEG/PNG image in the
body, its classification back, batched with other pushed images by
`deployments.serve.classifier.Classifier` (415 other types, 413 over ``max_image_bytes`` or over
``api.max_image_pixels`` by the size its header names, checked before decoding; 400 an image that
does not decode, 503 when the classifier is busy or does not answer in time)."""

# No `from __future__ import annotations`: FastAPI resolves the route annotations at runtime.
import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from deployments.api.http_errors import ApiError
from deployments.api.openapi import errors
from deployments.api.replica import serving_replica

__all__ = ["IMAGE_TYPES", "router"]

IMAGE_TYPES = {"image/jpeg", "image/jpg", "image/png"}
_BODY_TYPES = ("image/jpeg", "image/png")

router = APIRouter()


@router.post(
    "/v1/classify",
    tags=["classify"],
    responses=errors(403, 413, 415, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in _BODY_TYPES},
        }
    },
)
async def classify(request: Request, ingress: Any = Depends(serving_replica)) -> dict[str, Any]:
    """Classify one JPEG or PNG image sent as the request body; batched with concurrent pushes."""
    started = time.monotonic()
    body = await _read_image_body(request, ingress.cfg.max_image_bytes)
    max_pixels = ingress.settings.api.max_image_pixels
    _check_size(body, max_pixels)
    tensor = await asyncio.to_thread(_prepare, body, ingress.spec, max_pixels)
    timeout_s = ingress.cfg.classify_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            result = await ingress.classifier.classify.remote(tensor)
    except TimeoutError as e:
        raise ApiError(503, f"classifier did not answer within {timeout_s:g} s") from e
    except Exception as e:
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        if isinstance(e, BackPressureError | DeploymentUnavailableError):
            raise ApiError(503, f"classifier busy or unavailable: {type(e).__name__}") from e
        raise
    return {**result, "latency_ms": round((time.monotonic() - started) * 1000.0, 3)}


async def _read_image_body(request: Request, limit: int) -> bytes:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in IMAGE_TYPES:
        raise ApiError(415, f"content-type must be image/jpeg or image/png, got {ctype or 'none'!r}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"image is {declared} bytes, over the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"image is over the limit of {limit} bytes")
    if not body:
        raise ApiError(400, "empty body: send the image bytes")
    return bytes(body)


def _check_size(body: bytes, max_pixels: int) -> None:
    """ApiError unless the image's header names a size within `max_pixels` (before decoding: a
    small PNG can hold an image that takes gigabytes to decode)."""
    from stream.core.image_header import image_size

    size = image_size(body[:65536])
    if size is None:
        raise ApiError(400, "not a JPEG or PNG image: its size cannot be read from its header")
    if size[0] * size[1] > max_pixels:
        raise ApiError(413, f"image is {size[1]}x{size[0]}, over the limit of {max_pixels} pixels")


def _prepare(body: bytes, spec: Any, max_pixels: int) -> Any:
    from stream.adapters.media.image import decode_image, fit_to_model
    from stream.errors import CodecError

    try:
        return fit_to_model(decode_image(body, max_pixels), spec)
    except CodecError as e:
        raise ApiError(400, f"not a decodable JPEG/PNG image: {e}") from e
