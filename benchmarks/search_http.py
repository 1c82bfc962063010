"""Requests to the search service (`shopvision api`), shared by Locust users and the benchmark."""

from __future__ import annotations

CLASSIFY_PATH = "/v1/classify"
SEARCH_PATH = "/v1/search"
_BOUNDARY = "shopvision-benchmark-boundary"


def multipart_image(image: bytes) -> tuple[dict[str, str], bytes]:
    """A multipart/form-data body with the image in the field ``image``, as a browser form sends it."""
    body = (f"--{_BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"photo.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{_BOUNDARY}--\r\n".encode()
    return {"Content-Type": f"multipart/form-data; boundary={_BOUNDARY}"}, body


def classify_request(image: bytes, *, top_k: int = 5) -> tuple[str, dict[str, str], bytes]:
    return (f"{CLASSIFY_PATH}?k={top_k}", *multipart_image(image))


def search_request(image: bytes, *, k: int = 12) -> tuple[str, dict[str, str], bytes]:
    return (f"{SEARCH_PATH}?k={k}", *multipart_image(image))
