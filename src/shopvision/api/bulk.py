"""``POST /v1/products:bulk``: many product writes in one request, one NDJSON line each, a result per line.

A line is one of::

    {"op": "put", "product_id": "sku-1", "image": "<base64 of the photo>", "metadata": {"price": "9.90"}}
    {"op": "put", "product_id": "sku-3", "image": "<base64>", "additional_images": ["<base64>", "<base64>"]}
    {"op": "patch", "product_id": "sku-1", "metadata": {"price": "8.90", "colour": null}}
    {"op": "delete", "product_id": "sku-2"}

Each line is checked as its single-product request would be (``PUT``, ``PATCH`` and ``DELETE /v1/products/{id}``)
and gets that request's status; a bad line costs only itself. The body is read whole first, within
:data:`~shopvision.contract.MAX_BULK_BYTES` and :data:`~shopvision.contract.MAX_BULK_LINES`, then the photos are
embedded together (batches for Triton) and the lines applied in order through the service's single writer, so a
feed sync (``shopvision index sync --service``) never races the service's own writes.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

from fastapi import Request

from shopvision.api.problems import Problem
from shopvision.api.uploads import metadata_values
from shopvision.contract import MAX_BULK_BYTES, MAX_BULK_LINES, MAX_PRODUCT_PHOTOS
from shopvision.images import looks_like_an_image

BULK_MEDIA_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines")
OPERATIONS = ("put", "patch", "delete")


@dataclass(frozen=True)
class BulkOperation:
    line: int
    op: str
    product_id: str
    images: tuple[bytes, ...] = ()
    """A put's photos: its ``image`` (the main one), then its ``additional_images``."""
    metadata: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class LineProblem:
    line: int
    problem: Problem
    product_id: str | None = None
    op: str | None = None


async def read_bulk(request: Request, *, max_image_bytes: int,
                    max_product_id_chars: int) -> list[BulkOperation | LineProblem]:
    """The body's lines, each an operation or the problem that keeps it from being one.

    The request as a whole is refused (415, 413) only for what no line can fix: not NDJSON, too large, too many
    lines."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in BULK_MEDIA_TYPES:
        raise Problem(415, "Not NDJSON", "send one JSON object per line with Content-Type application/x-ndjson, "
                      f"not {content_type or 'no Content-Type'}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BULK_BYTES:
        raise _too_large(int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BULK_BYTES:
            raise _too_large(len(body))
    lines = [(number, text) for number, text in enumerate(bytes(body).split(b"\n"), start=1) if text.strip()]
    if len(lines) > MAX_BULK_LINES:
        raise Problem(413, "Too many lines", f"{len(lines)} operations; at most {MAX_BULK_LINES} a request")
    if not lines:
        raise Problem(422, "Invalid parameters", "the body has no operations")
    return [_operation(number, text, max_image_bytes=max_image_bytes, max_product_id_chars=max_product_id_chars)
            for number, text in lines]


def _operation(number: int, text: bytes, *, max_image_bytes: int,
               max_product_id_chars: int) -> BulkOperation | LineProblem:
    try:
        record = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        return LineProblem(number, Problem(422, "Invalid parameters", f"not a JSON object: {error}"))
    if not isinstance(record, dict):
        return LineProblem(number, Problem(422, "Invalid parameters", "a line is a JSON object"))
    op, product_id = record.get("op"), record.get("product_id")
    named = product_id if isinstance(product_id, str) else None
    shown_op = op if isinstance(op, str) and op in OPERATIONS else None
    try:
        if shown_op is None:
            raise Problem(422, "Invalid parameters", f"op: one of {', '.join(OPERATIONS)}")
        if named is None or not named or len(named) > max_product_id_chars:
            raise Problem(422, "Invalid product id", f"product_id: a string of 1 to {max_product_id_chars} "
                          "characters")
        unknown = sorted(set(record) - {"op", "product_id", "image", "additional_images", "metadata"})
        if unknown:
            raise Problem(422, "Invalid parameters", f"unknown field(s) {', '.join(unknown)}")
        metadata = metadata_values(record.get("metadata", {}), removals=op == "patch")
        if op == "delete" and "metadata" in record:
            raise Problem(422, "Invalid parameters", "a delete takes no metadata")
        if op != "put" and ("image" in record or "additional_images" in record):
            raise Problem(422, "Invalid parameters", f"a {op} takes no image; a put replaces the photos")
        images = _images(record, max_image_bytes) if op == "put" else ()
    except Problem as problem:
        return LineProblem(number, problem, named, shown_op)
    return BulkOperation(number, shown_op, named, images, metadata)


def _images(record: dict, max_image_bytes: int) -> tuple[bytes, ...]:
    more = record.get("additional_images", [])
    if not isinstance(more, list):
        raise Problem(422, "Invalid parameters", "additional_images: a list of photos' bytes in base64")
    if len(more) >= MAX_PRODUCT_PHOTOS:
        raise Problem(422, "Invalid parameters", f"additional_images: {len(more)} photos; a product has at most "
                      f"{MAX_PRODUCT_PHOTOS}, so at most {MAX_PRODUCT_PHOTOS - 1} besides its image")
    images = [_image(record.get("image"), max_image_bytes, "image")]
    for number, encoded in enumerate(more):
        images.append(_image(encoded, max_image_bytes, f"additional_images[{number}]"))
    return tuple(images)


def _image(encoded: object, max_image_bytes: int, name: str) -> bytes:
    if not isinstance(encoded, str) or not encoded:
        raise Problem(422, "Invalid parameters", f"{name}: the photo's bytes in base64, which a put needs")
    if len(encoded) > (max_image_bytes + 2) // 3 * 4 + 4:
        raise Problem(413, "Image too large", f"{name}: images may have at most {max_image_bytes} bytes")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as error:
        raise Problem(422, "Invalid parameters", f"{name}: not base64 ({error})") from error
    if len(data) > max_image_bytes:
        raise Problem(413, "Image too large", f"{name} has {len(data)} bytes; at most {max_image_bytes}")
    if not looks_like_an_image(data):
        raise Problem(415, "Not an image", f"{name} ({len(data)} bytes starting {data[:8]!r}) is not a JPEG, PNG, "
                      "GIF, WebP, TIFF or BMP image")
    return data


def _too_large(size: int) -> Problem:
    return Problem(413, "Request too large", f"the body has over {size} bytes; at most {MAX_BULK_BYTES} a request: "
                   "send fewer lines at a time")
