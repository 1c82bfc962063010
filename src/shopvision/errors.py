"""One exception hierarchy for everything shopvision raises: the SDK, the catalog, the tools and the CLI.

Every error a caller can meet derives from :class:`ShopvisionError`. Errors that are also a standard
Python kind (a bad argument) derive from that kind too, so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class ShopvisionError(Exception):
    """Base class of every error shopvision raises on purpose; anything else is a bug."""


class InvalidArgumentError(ShopvisionError, ValueError):
    """A value given to a function or command is outside what it accepts (the message says what is)."""


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


class ModelBuildError(ShopvisionError):
    """A model could not be built: its weights could not be had, were not the published ones, or its graph is
    not one the build can serve."""


class LocalServerError(ShopvisionError):
    """A local tritonserver could not be found, started, or made ready (``shopvision serve``, the tests)."""
