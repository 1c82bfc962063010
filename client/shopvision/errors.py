"""One exception hierarchy for everything the SDK raises."""

from __future__ import annotations


class ShopvisionError(Exception):
    """Base class of every error raised by the shopvision SDK."""


class InvalidImageError(ShopvisionError):
    """An image could not be read locally or preprocessing refused it (INVALID_ARG, "invalid image ...").

    ``index`` is the image's position in the call's input, when known. Never retried.
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message if index is None else f"image #{index}: {message}")
        self.index = index
        self.reason = message


class RequestRejectedError(ShopvisionError):
    """The server refused the request as a whole (its size, shape or batch), not one image in it. Never retried."""


class PermissionDeniedError(ShopvisionError):
    """An admin API (model load/unload, repository index) was called without the right admin key."""


class ServerUnavailableError(ShopvisionError):
    """The server could not be reached or is not ready (connection refused, UNAVAILABLE, 503)."""


class RequestTimeoutError(ShopvisionError):
    """A call did not finish within its timeout."""


class ModelMismatchError(ShopvisionError):
    """The server's model does not have the inputs and outputs this client expects."""


class NoCategoriesError(ModelMismatchError):
    """Categories were asked for, but the server serves no categories head (none trained and promoted)."""


class ServerError(ShopvisionError):
    """The server failed a request for a reason other than the ones above."""


class ClientClosedError(ShopvisionError):
    """The client was closed; create a new one."""
