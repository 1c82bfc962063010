"""shopvision: ResNet50 classification and visual search served by NVIDIA Triton.

The client SDK is exported here and loaded on first use (tritonclient, numpy, Pillow), so
server-side modules such as ``shopvision.backend.preprocessing`` import without tritonclient.
Model tooling, the local server and the catalog live in subpackages with their own extras.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AsyncClient": "shopvision.aio",
    "Client": "shopvision.client",
    "NO_RETRY": "shopvision._protocol",
    "RetryPolicy": "shopvision._protocol",
    "SyntheticWeightsWarning": "shopvision._protocol",
    "Tls": "shopvision._protocol",
    "ClientClosedError": "shopvision.errors",
    "InvalidImageError": "shopvision.errors",
    "ModelMismatchError": "shopvision.errors",
    "NoCategoriesError": "shopvision.errors",
    "PermissionDeniedError": "shopvision.errors",
    "RequestRejectedError": "shopvision.errors",
    "RequestTimeoutError": "shopvision.errors",
    "ServerError": "shopvision.errors",
    "ServerUnavailableError": "shopvision.errors",
    "ShopvisionError": "shopvision.errors",
    "ImageResult": "shopvision.types",
    "Prediction": "shopvision.types",
    "ServerInfo": "shopvision.types",
    "WeightsProvenance": "shopvision.types",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from shopvision._protocol import (
        NO_RETRY as NO_RETRY,
        RetryPolicy as RetryPolicy,
        SyntheticWeightsWarning as SyntheticWeightsWarning,
        Tls as Tls,
    )
    from shopvision.aio import AsyncClient as AsyncClient
    from shopvision.client import Client as Client
    from shopvision.errors import (
        ClientClosedError as ClientClosedError,
        InvalidImageError as InvalidImageError,
        ModelMismatchError as ModelMismatchError,
        NoCategoriesError as NoCategoriesError,
        PermissionDeniedError as PermissionDeniedError,
        RequestRejectedError as RequestRejectedError,
        RequestTimeoutError as RequestTimeoutError,
        ServerError as ServerError,
        ServerUnavailableError as ServerUnavailableError,
        ShopvisionError as ShopvisionError,
    )
    from shopvision.types import (
        ImageResult as ImageResult,
        Prediction as Prediction,
        ServerInfo as ServerInfo,
        WeightsProvenance as WeightsProvenance,
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'shopvision' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
