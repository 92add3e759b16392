"""One root exception for the whole platform; each error carries its HTTP and gRPC status."""

from __future__ import annotations

import grpc


class RtmlError(Exception):
    """Root of every error rtml raises on purpose.

    ``http_status`` and ``grpc_status`` tell the edges (REST, gRPC) how to answer without
    a second mapping table: an edge converts, it never decides.
    """

    http_status: int = 500
    grpc_status: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInputError(RtmlError):
    """The caller sent something malformed: a 4xx, never a 5xx."""

    http_status = 400
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(RtmlError):
    """The named thing (model, version, feature view) does not exist."""

    http_status = 404
    grpc_status = grpc.StatusCode.NOT_FOUND


class PayloadTooLargeError(RtmlError):
    """The request body is larger than the configured limit."""

    http_status = 413
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotReadyError(RtmlError):
    """A dependency (model, store, broker) is not ready yet."""

    http_status = 503
    grpc_status = grpc.StatusCode.UNAVAILABLE


class ConfigurationError(RtmlError):
    """Settings are missing or inconsistent; raised at start-up, naming the setting."""
