"""One root exception with a few subclasses; `__str__` names what was wrong."""

from __future__ import annotations

__all__ = [
    "FramestreamError",
    "ConfigError",
    "CodecError",
    "ModelError",
    "TransportError",
    "SourceError",
    "DeadLetterError",
    "UnknownDeadLetter",
    "LeaseLost",
]


class FramestreamError(Exception):
    """Root of every error framestream raises on purpose."""


class ConfigError(FramestreamError):
    """A setting has a bad value or a required service is missing."""


class CodecError(FramestreamError):
    """Bytes that are not a valid framestream message (truncated, oversize, wrong dtype, ...)."""


class ModelError(FramestreamError):
    """A model is unknown, missing, corrupt, or does not match its descriptor."""


class TransportError(FramestreamError):
    """Redis could not be reached or refused a command (auth, connection, ...)."""


class SourceError(FramestreamError):
    """A frame source cannot be opened or read."""


class DeadLetterError(FramestreamError):
    """A dead letter cannot be retried (no payload kept, no origin recorded, ...)."""


class UnknownDeadLetter(DeadLetterError):
    """No dead letter has that id (retried, trimmed, or never there)."""


class LeaseLost(TransportError):
    """A fenced commit found its lease held by another (or by nobody): nothing of it was written."""

    def __init__(self, leases: list[str]) -> None:
        super().__init__(f"lease(s) lost, commit refused: {', '.join(leases)}")
        self.leases = leases
