"""The serving contract: model and tensor names, shapes and preprocessing constants.

This module is the one place these names live. The model repository's ``config.pbtxt``
files spell them too (protobuf text cannot import Python); ``tests/test_repository.py``
checks that every config agrees with this module, so a rename has to happen in both.
"""

from __future__ import annotations

from typing import Final

ENSEMBLE_MODEL: Final = "shopvision"
PREPROCESS_MODEL: Final = "preprocess"
RESNET_MODEL: Final = "resnet50"
QUALITY_MONITOR_MODEL: Final = "quality_monitor"
CATEGORIES_MODEL: Final = "categories"
"""The shop's own categories: a linear head on the embedding, trained by ``shopvision categories train``.

Only in a built repository once a head is trained; the ensemble gains its step and output when one serves."""

IMAGE_INPUT: Final = "image"
"""Raw encoded image bytes, TYPE_STRING, dims [1] per batch item."""
PIXELS: Final = "pixel_values"
"""Normalised FP32 CHW tensor between preprocess and resnet50."""
PROBABILITIES: Final = "probabilities"
EMBEDDING: Final = "embedding"
MONITORED_PROBABILITIES: Final = "monitored_probabilities"
"""quality_monitor's output: the probabilities, unchanged, after their top-1 was recorded."""

CATEGORY_PROBABILITIES: Final = "category_probabilities"
"""The head's softmax over the shop's categories; ask it for ``class_count: k`` for "score:index:category"."""
CATEGORISED_EMBEDDING: Final = "categorised_embedding"
"""The head's input, passed through unchanged: while a head serves, the ensemble's ``embedding`` output comes
from the head's step, in the path rather than a side branch. Triton 2.51 fails a request that leaves out the
output of a step which consumes another requested output ("unexpected deadlock")."""
RESNET_EMBEDDING: Final = "resnet50_embedding"
"""The ensemble's name for resnet50's embedding on its way into the head, while one serves."""
CATEGORY_LABELS_FILE: Final = "categories.txt"
"""The category names of a head version, one per line in output order (next to its ``model.onnx``)."""

NUM_CLASSES: Final = 1000
RESNET50_EMBEDDING_DIM: Final = 2048
"""The default backbone's embedding width, which the template's configs spell. It is not the served width:
``shopvision model build`` writes the built backbone's (1280 for MobileNet v2) into every config of the built
repository, and the SDK, the catalog, the categories head and the search service read it from the served model
(``ServerInfo.embedding_dim``, the ``weights_embedding_dim`` parameter)."""
LABELS_FILE: Final = "imagenet_labels.txt"

MIB: Final = 1024 * 1024
MAX_IMAGE_BYTES: Final = 8 * MIB
"""The largest encoded image preprocess accepts (its ``max_image_bytes`` parameter) and the search service takes.

A 12-megapixel phone JPEG is 3-6 MB; the model sees 224x224, so a larger file only costs memory."""
MAX_IMAGE_PIXELS: Final = 24_000_000
"""The most pixels an image may declare in its header (preprocess's ``max_image_pixels``); checked before decoding.

What a product photo needs at its source: a 24-megapixel camera's 6000x4000, four times Shopify's recommended
2048x2048 and twice a phone's 12 MP. Past it a photo only costs: the model sees 224x224, and decoding is bought per
pixel (at this cap an image decodes into at most 72 MB of RGB plus its alpha, and takes about a second of a core:
``benchmarks/results/limits``). A larger photo is refused with this number, so a shop can downscale it once."""
MAX_METADATA_BYTES: Final = 16 * 1024
"""A product's metadata as sent to the search service (the JSON object in the form field ``metadata``): a
catalog row's title, price and the like, a few hundred bytes; 16 KiB leaves room for long descriptions while
bounding what one write makes the service parse and store."""
MAX_METADATA_FIELDS: Final = 64
"""Columns in one product's metadata: each is a row of the catalog's filter index."""
MAX_PRODUCT_PHOTOS: Final = 11
"""Photos one product may have: Google Merchant Center's ``image_link`` and its up to 10 ``additional_image_link``.
Each is a vector in the catalog, so a search over products of 11 photos walks 11 times the vectors."""
MAX_FILTER_VALUES: Final = 32
"""``label=`` or ``where=`` values in one search request: a page's facets, not a list of every label."""
MAX_BATCH_SIZE: Final = 32
"""Images in one request: the ensemble's ``max_batch_size`` (and the largest batch preprocess is handed)."""
BYTES_ELEMENT_PREFIX: Final = 4
"""Triton's serialised BYTES element: a 4-byte length before each image's bytes."""
REQUEST_ENVELOPE_BYTES: Final = 64 * 1024
"""What a request carries besides its images: HTTP headers and JSON header, or gRPC framing and names."""


def max_request_bytes() -> int:
    """The largest inference request the product accepts: a full batch of images at the byte limit.

    Rounded up to whole MiB so proxies can spell it (``257m``); the gateway, the Helm Ingress and the
    chart's memory sizing are derived from it (``shopvision.server.limits``)."""
    exact = MAX_BATCH_SIZE * (MAX_IMAGE_BYTES + BYTES_ELEMENT_PREFIX) + REQUEST_ENVELOPE_BYTES
    return -(-exact // MIB) * MIB


RESIZE_SHORTER_SIDE: Final = 256
CROP_SIZE: Final = 224
IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)

CPU_CONFIG_NAME: Final = "cpu"
"""``--model-config-name`` wherever a CPU serves (``make serve``, the tests, compose's cpu profile, the chart without
GPUs, the container when it sees none): resnet50 in the Python backend, on an inference engine installed from PyPI.
Each model's ``config.pbtxt`` is the GPU node's: Triton's own onnxruntime backend on CUDA."""
ENGINE_PARAMETER: Final = "engine"
"""The ``cpu`` configuration's parameter naming the engine that runs resnet50 (one of :data:`ENGINES`)."""
RESNET50_BACKBONE: Final = "resnet50-v1-12"
"""The ONNX Model Zoo's ResNet50, the default weights; what a record from before backbones were a choice names."""
SYNTHETIC_BACKBONE: Final = "resnet50-synthetic"
"""The backbone of synthetic weights: the ResNet50 architecture with seeded random weights."""
ENGINES: Final = ("onnxruntime", "openvino")
"""Inference engines the Python-backend runner drives; the first is what a config without the parameter gets."""

MODEL_FILE: Final = "model.onnx"
"""ResNet50 weights in each version folder of resnet50 (Triton's onnxruntime default name)."""
PROVENANCE_FILE: Final = "provenance.json"
"""Written next to each model version's ``model.onnx`` by ``shopvision model build``."""
PROVENANCE_PARAMETER_PREFIX: Final = "weights_"
"""Model-config ``parameters`` keys that expose the served weights' provenance."""

ADMIN_KEY_ENV: Final = "SHOPVISION_ADMIN_KEY"
ADMIN_KEY_HEADER: Final = "shopvision-admin-key"
"""HTTP header for Triton's restricted APIs; over gRPC Triton expects ``triton-grpc-protocol-`` + this."""
REJECTED_IMAGE: Final = "invalid image"
"""Every refusal of one image by preprocess says this, so a client can tell it from a refused request."""

CONFIDENCE_METRIC: Final = "shopvision_top1_confidence"
"""Prometheus histogram (``_bucket``/``_sum``/``_count``) of each served image's top-1 probability."""
CONFIDENCE_BUCKETS: Final = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)

FEED_FETCH_CONCURRENCY: Final = 16
"""Images a feed sync fetches at once (``index sync --concurrency``): enough to hide a CDN's latency behind the
model's batches, few enough not to look like an attack to the shop's CDN."""
FEED_FETCH_TIMEOUT_S: Final = 30.0
"""The most one image's fetch may take, connection and body together (a server that trickles bytes is cut)."""
FEED_FETCH_RETRIES: Final = 3
"""Tries after the first for a transient failure (connection, timeout, 429, 5xx), with exponential backoff."""
FEED_MAX_REDIRECTS: Final = 5
MAX_BULK_LINES: Final = 256
"""Operations in one ``POST /v1/products:bulk`` request: a feed sync sends its changes in requests of this many."""
MAX_BULK_BYTES: Final = 48 * MIB
"""The largest bulk request body: a few full-size photos (base64 makes 8 MiB into 10.7) or many ordinary ones. The
service reads a request whole before it writes any of it, so this bounds one request's memory."""
