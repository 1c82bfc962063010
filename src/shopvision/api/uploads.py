"""An uploaded image, read from a multipart form or a raw ``image/*`` body, refused past the byte limit
while it streams in (never buffered whole first)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from shopvision.api.problems import Problem
from shopvision.contract import MAX_METADATA_BYTES, MAX_METADATA_FIELDS
from shopvision.images import looks_like_an_image

IMAGE_FIELD = "image"
METADATA_FIELD = "metadata"


@dataclass(frozen=True)
class Upload:
    data: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    """String metadata sent with the image (a JSON object in the form field ``metadata``)."""


async def read_image(request: Request, *, max_image_bytes: int, max_request_bytes: int) -> Upload:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_request_bytes:
        raise _too_large(int(declared), max_image_bytes)
    if content_type == "multipart/form-data":
        upload = await _read_form(request, max_image_bytes=max_image_bytes, max_request_bytes=max_request_bytes)
    elif content_type.startswith("image/"):
        upload = Upload(b"".join([chunk async for chunk in _limited(request, max_image_bytes, max_image_bytes)]))
    else:
        raise Problem(415, "Not an image", f"send the image as multipart/form-data (field '{IMAGE_FIELD}') or as "
                      f"a body with Content-Type image/*, not {content_type or 'no Content-Type'}")
    if not upload.data:
        raise Problem(400, "Invalid image", "the image is empty (0 bytes)")
    if not looks_like_an_image(upload.data):
        raise Problem(415, "Not an image", f"the upload ({len(upload.data)} bytes starting {upload.data[:8]!r}) is "
                      "not a JPEG, PNG, GIF, WebP, TIFF or BMP image")
    return upload


async def _limited(request: Request, limit: int, max_image_bytes: int) -> AsyncGenerator[bytes, None]:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(received, max_image_bytes)
        yield chunk


async def _read_form(request: Request, *, max_image_bytes: int, max_request_bytes: int) -> Upload:
    parser = MultiPartParser(request.headers, _limited(request, max_request_bytes, max_image_bytes), max_files=1,
                             max_fields=4, max_part_size=MAX_METADATA_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        if error.message.startswith("Part exceeded maximum size"):  # only fields are bounded so: the metadata
            raise Problem(422, "Invalid parameters", f"{METADATA_FIELD}: over {MAX_METADATA_BYTES} bytes, the most "
                          "a product's metadata may hold") from error
        raise Problem(400, "Malformed form", error.message) from error
    try:
        image = form.get(IMAGE_FIELD)
        if not isinstance(image, UploadFile):
            raise Problem(422, "Invalid parameters", f"the form has no file field '{IMAGE_FIELD}'")
        data = await image.read(max_image_bytes + 1)
        if len(data) > max_image_bytes:
            raise _too_large(len(data), max_image_bytes)
        return Upload(data, _metadata(form.get(METADATA_FIELD)))
    finally:
        await form.close()


def _metadata(raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    values = _metadata_object(str(raw), removals=False)
    return {key: value for key, value in values.items() if value is not None}


def _metadata_object(text: str, *, removals: bool) -> dict[str, str | None]:
    """A flat JSON object of strings (and, with ``removals``, nulls: fields to remove), within the bounds."""
    try:  # at most MAX_METADATA_BYTES: the form parser, or the patch's reader, refuses more
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise Problem(422, "Invalid parameters", f"{METADATA_FIELD}: not JSON ({error})") from error
    except RecursionError as error:  # [[[[...]]]]: json's recursion limit comes long before the size limit
        raise Problem(422, "Invalid parameters", f"{METADATA_FIELD}: nested too deeply; a JSON object of "
                      "strings is flat") from error
    return metadata_values(values, removals=removals)


def metadata_values(values: object, *, removals: bool) -> dict[str, str | None]:
    """Parsed metadata, checked: a flat object of strings (and, with ``removals``, nulls), within the bounds."""
    allowed = (str, type(None)) if removals else (str,)
    if not isinstance(values, dict) or not all(isinstance(key, str) and isinstance(value, allowed)
                                               for key, value in values.items()):
        raise Problem(422, "Invalid parameters", f"{METADATA_FIELD}: a JSON object of strings"
                      f"{' (null removes a field)' if removals else ''}, such as "
                      '{"title": "Red sneaker", "price": "59.90"}')
    try:  # json.loads lets "\ud800" through as a lone surrogate, which no UTF-8 store can hold
        "".join(values).encode() + "".join(value for value in values.values() if value is not None).encode()
    except UnicodeEncodeError as error:
        raise Problem(422, "Invalid parameters", f"{METADATA_FIELD}: not valid Unicode ({error.reason} at "
                      f"{error.start})") from error
    if len(values) > MAX_METADATA_FIELDS:
        raise Problem(422, "Invalid parameters", f"{METADATA_FIELD}: {len(values)} fields; at most "
                      f"{MAX_METADATA_FIELDS}")
    return values


async def read_metadata_patch(request: Request) -> dict[str, str | None]:
    """A JSON merge patch of a product's metadata (RFC 7386, flat): strings set fields, nulls remove them.
    Read while it streams in and refused past MAX_METADATA_BYTES."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/json", "application/merge-patch+json"):
        raise Problem(415, "Not JSON", "send the metadata changes as a JSON object (Content-Type: "
                      f"application/merge-patch+json or application/json), not {content_type or 'no Content-Type'}")
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > MAX_METADATA_BYTES:
            raise Problem(422, "Invalid parameters", f"{METADATA_FIELD}: over {MAX_METADATA_BYTES} bytes, the most "
                          "a product's metadata may hold")
    try:
        text = received.decode()
    except UnicodeDecodeError as error:
        raise Problem(422, "Invalid parameters", f"{METADATA_FIELD}: not UTF-8") from error
    return _metadata_object(text, removals=True)


def _too_large(size: int, max_image_bytes: int) -> Problem:
    return Problem(413, "Image too large", f"the upload is over {size} bytes; images may have at most "
                   f"{max_image_bytes} bytes")
