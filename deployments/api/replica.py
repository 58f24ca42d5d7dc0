"""The ingress replica serving a request, for routes that live outside the `Ingress` class.

Route modules (`deployments.api.sources`, ...) are FastAPI ``APIRouter``\\s included in the
ingress's app; their handlers take ``ingress: Any = Depends(serving_replica)`` and read the
replica's state (Redis client, keys, options) from it, as Serve's own class-based routes do.
"""

from typing import Any

from ray import serve

__all__ = ["serving_replica"]


async def serving_replica() -> Any:
    """The `deployments.api.ingress.Ingress` instance of this replica (Serve's servable object)."""
    return serve.get_replica_context().servable_object
