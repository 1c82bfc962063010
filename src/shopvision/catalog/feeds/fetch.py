"""Fetch a feed's images: http(s) with an SSRF guard, s3:// and gs:// through fsspec, into a local cache.

A feed comes from outside, so its URLs are not trusted:
* Every hop of an http(s) fetch is resolved here, and every address the name resolves to must be a public
  one (not private, loopback, link-local such as the cloud metadata service at 169.254.169.254, or reserved)
  unless ``allow_private`` says the shop's images live on its own network. The connection then goes to the
  address that was checked, never to a second lookup of the name, so DNS rebinding cannot swap it; TLS still
  verifies the certificate against the name (SNI).
* Redirects are followed by hand, at most :data:`~shopvision.contract.FEED_MAX_REDIRECTS`, to http(s) only.
* A body is read up to :data:`~shopvision.contract.MAX_IMAGE_BYTES` and for at most the fetch's timeout; it must
  be declared an image (or generic bytes) and start with an image format's magic bytes.

The cache keeps each URL's validators (ETag, Last-Modified, or an object store's ETag) and its bytes, stored by
content hash: a second sync asks only "has it changed?" and gets a 304 for what did not.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shopvision._protocol import RetryPolicy
from shopvision.contract import (
    FEED_FETCH_CONCURRENCY,
    FEED_FETCH_RETRIES,
    FEED_FETCH_TIMEOUT_S,
    FEED_MAX_REDIRECTS,
    MAX_IMAGE_BYTES,
)
from shopvision.errors import ShopvisionError
from shopvision.images import looks_like_an_image

GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
"""Content types object stores and some CDNs give any file: allowed, then judged by the magic bytes."""
USER_AGENT = "shopvision-feed-sync"
_CHUNK = 64 * 1024
_MAX_RETRY_AFTER_S = 30.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class ImageFetchError(ShopvisionError):
    """This image cannot be had; ``reason`` says why in words for the sync's report."""

    def __init__(self, reason: str, *, transient: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after


@dataclass(frozen=True)
class FetchSettings:
    concurrency: int = FEED_FETCH_CONCURRENCY
    timeout_s: float = FEED_FETCH_TIMEOUT_S
    retries: int = FEED_FETCH_RETRIES
    backoff_s: float = 0.5
    """The first retry's wait; each further one doubles it (with jitter: the SDK's RetryPolicy)."""
    max_bytes: int = MAX_IMAGE_BYTES
    allow_private: bool = False
    """Let image URLs reach private, loopback and link-local addresses (the shop's own network): off, because a
    hostile feed could otherwise make the sync read internal services or the cloud's metadata endpoint."""
    max_redirects: int = FEED_MAX_REDIRECTS
    ca_file: str | None = None
    """Certificates to trust for https images instead of the system's (a shop's own CA)."""


@dataclass(frozen=True)
class FetchedImage:
    url: str
    content_sha256: str
    size: int
    blob: Path
    transferred: bool
    """Whether the bytes came over the network this time (False: the server said they had not changed)."""

    def read(self) -> bytes:
        return self.blob.read_bytes()


class ImageCache:
    """``DIR/urls/<sha256 of URL>.json`` holds a URL's validators and content hash; ``DIR/blobs/<sha256>`` its
    bytes. Files are written whole and renamed into place, so a killed sync leaves no half entry."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "urls").mkdir(parents=True, exist_ok=True)
        (directory / "blobs").mkdir(parents=True, exist_ok=True)

    def lookup(self, url: str) -> dict[str, Any] | None:
        """The entry of a URL whose bytes are still here, or None."""
        try:
            entry: dict[str, Any] = json.loads(self._entry_path(url).read_text())
        except (OSError, ValueError):
            return None
        return entry if entry.get("url") == url and self.blob(entry["sha256"]).is_file() else None

    def image(self, entry: dict[str, Any]) -> FetchedImage:
        return FetchedImage(entry["url"], entry["sha256"], entry["size"], self.blob(entry["sha256"]), False)

    def store(self, url: str, body: Path, *, sha256: str, size: int, validators: dict[str, str]) -> FetchedImage:
        blob = self.blob(sha256)
        blob.parent.mkdir(exist_ok=True)
        os.replace(body, blob)
        entry = {"url": url, "sha256": sha256, "size": size, **validators}
        self._write(self._entry_path(url), json.dumps(entry).encode())
        return FetchedImage(url, sha256, size, blob, True)

    def retain(self, keep: Container[str]) -> int:
        """Forget every URL but those whose :meth:`entry_name` is in ``keep``, and the bytes no URL left refers to;
        returns the files removed."""
        removed = 0
        referenced: set[str] = set()
        for entry_path in (self.directory / "urls").glob("*.json"):
            if entry_path.name not in keep:
                entry_path.unlink(missing_ok=True)
                removed += 1
                continue
            with contextlib.suppress(OSError, ValueError, KeyError):
                referenced.add(json.loads(entry_path.read_text())["sha256"])
        for blob in (self.directory / "blobs").glob("*/*"):
            if blob.name not in referenced:
                blob.unlink(missing_ok=True)
                removed += 1
        return removed

    def blob(self, sha256: str) -> Path:
        return self.directory / "blobs" / sha256[:2] / sha256

    def temporary(self) -> Path:
        handle, name = tempfile.mkstemp(dir=self.directory, prefix=".part-")
        os.close(handle)
        return Path(name)

    @staticmethod
    def entry_name(url: str) -> str:
        """The file name of a URL's entry."""
        return f"{hashlib.sha256(url.encode()).hexdigest()}.json"

    def _entry_path(self, url: str) -> Path:
        return self.directory / "urls" / self.entry_name(url)

    def _write(self, path: Path, data: bytes) -> None:
        partial = self.temporary()
        partial.write_bytes(data)
        os.replace(partial, path)


def public_address(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to for ``host``, after checking that every address it resolves to may be reached."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ImageFetchError(f"cannot resolve {host}: {error.strerror}", transient=True) from error
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not allow_private:
        for address in addresses:
            mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
            plain = mapped or address  # ::ffff:10.0.0.1 is 10.0.0.1
            if not plain.is_global:
                raise ImageFetchError(f"{host} resolves to {plain}, a private, loopback or reserved address: refused "
                                      "(an image URL of a feed must be public; --allow-private-addresses allows the "
                                      "shop's own network)")
    return str(addresses[0])


class ImageFetcher:
    """Fetches images for many threads at once; ``close`` when done.

    Connections are pooled per host name: a request is sent to the address checked for its name, so a pool keyed
    by address alone would let a name reuse a TLS connection whose certificate was verified for another name.
    """

    def __init__(self, cache: ImageCache, settings: FetchSettings | None = None) -> None:
        self.cache = cache
        self.settings = settings or FetchSettings()
        self._verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=self.settings.ca_file)
                                               if self.settings.ca_file else True)
        self._clients: dict[str, httpx.Client] = {}
        self._object_stores: dict[str, Any] = {}
        self._lock = threading.Lock()

    def fetch(self, url: str) -> FetchedImage:
        """The image at ``url``, from the cache when the server says it has not changed; retries transient
        failures with backoff. Raises :class:`ImageFetchError`."""
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in ("http", "https", "s3", "gs"):
            raise ImageFetchError(f"not an http(s), s3 or gs URL: {url[:200]!r}")
        delays = RetryPolicy(attempts=self.settings.retries + 1, initial_backoff_s=self.settings.backoff_s,
                             max_backoff_s=_MAX_RETRY_AFTER_S).delays()
        tries = 1
        while True:
            try:
                return self._fetch_http(url) if scheme in ("http", "https") else self._fetch_object(url)
            except ImageFetchError as error:
                delay = next(delays, None) if error.transient else None
                if delay is None:
                    if tries > 1:
                        raise ImageFetchError(f"{error.reason} (after {tries} tries)") from error
                    raise
                time.sleep(min(_MAX_RETRY_AFTER_S, max(delay, error.retry_after or 0.0)))
                tries += 1

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def __enter__(self) -> ImageFetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fetch_http(self, url: str) -> FetchedImage:
        cached = self.cache.lookup(url)
        deadline = time.monotonic() + self.settings.timeout_s
        location = httpx.URL(url)
        for _hop in range(self.settings.max_redirects + 1):
            if location.scheme not in ("http", "https"):
                raise ImageFetchError(f"redirected to a {location.scheme}: URL; only http(s) is followed")
            host = location.host
            address = public_address(host, location.port or (443 if location.scheme == "https" else 80),
                                     allow_private=self.settings.allow_private)
            headers = {"Host": location.netloc.decode("ascii")}
            if cached is not None:
                if cached.get("etag"):
                    headers["If-None-Match"] = cached["etag"]
                if cached.get("last_modified"):
                    headers["If-Modified-Since"] = cached["last_modified"]
            client = self._client(host)
            request = client.build_request("GET", location.copy_with(host=address), headers=headers,
                                           extensions={"sni_hostname": host, "timeout": self._timeouts(deadline)})
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException as error:
                raise ImageFetchError(f"timed out ({type(error).__name__})", transient=True) from error
            except httpx.TransportError as error:
                raise ImageFetchError(f"cannot connect: {error}", transient=True) from error
            with contextlib.closing(response):
                if response.status_code == 304 and cached is not None:
                    return self.cache.image(cached)
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    location = location.join(response.headers["location"])
                    continue
                self._check_status(response)
                return self._receive(url, response, deadline)
        raise ImageFetchError(f"more than {self.settings.max_redirects} redirects")

    def _client(self, host: str) -> httpx.Client:
        with self._lock:
            client = self._clients.get(host)
            if client is None:
                concurrency = self.settings.concurrency
                client = self._clients[host] = httpx.Client(
                    limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
                    follow_redirects=False, trust_env=False, verify=self._verify,
                    headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
            return client

    def _timeouts(self, deadline: float) -> dict[str, float]:
        left = max(0.001, deadline - time.monotonic())
        return {"connect": min(10.0, left), "read": left, "write": left, "pool": left}

    @staticmethod
    def _check_status(response: httpx.Response) -> None:
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = response.headers.get("retry-after", "")
            raise ImageFetchError(f"HTTP {status}", transient=True,
                                  retry_after=float(retry_after) if retry_after.isdigit() else None)
        if status != 200:
            raise ImageFetchError(f"HTTP {status} {response.reason_phrase}".rstrip())
        content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type and not content_type.startswith("image/") and content_type not in GENERIC_TYPES:
            raise ImageFetchError(f"content type {content_type}, not an image")

    def _receive(self, url: str, response: httpx.Response, deadline: float) -> FetchedImage:
        limit = self.settings.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ImageFetchError(f"{int(declared)} bytes: over the {limit}-byte limit of an image")
        digest, size = hashlib.sha256(), 0
        partial = self.cache.temporary()
        try:
            with partial.open("wb") as body:
                try:
                    for chunk in response.iter_bytes(_CHUNK):
                        size += len(chunk)
                        if size > limit:
                            raise ImageFetchError(f"over the {limit}-byte limit of an image")
                        if time.monotonic() > deadline:
                            raise ImageFetchError(f"took over {self.settings.timeout_s:g} s", transient=True)
                        if size == len(chunk):
                            check_magic(chunk)
                        digest.update(chunk)
                        body.write(chunk)
                except httpx.TimeoutException as error:
                    raise ImageFetchError(f"took over {self.settings.timeout_s:g} s", transient=True) from error
                except httpx.TransportError as error:
                    raise ImageFetchError(f"connection lost: {error}", transient=True) from error
            if size == 0:
                raise ImageFetchError("empty body")
            validators = {name.replace("-", "_"): response.headers[name]
                          for name in ("etag", "last-modified") if name in response.headers}
            return self.cache.store(url, partial, sha256=digest.hexdigest(), size=size, validators=validators)
        finally:
            partial.unlink(missing_ok=True)

    def _fetch_object(self, url: str) -> FetchedImage:
        filesystem, path = self._object_store(url)
        filesystem.invalidate_cache(path)  # fsspec remembers listings; a resync must see the object as it is now
        try:
            info = filesystem.info(path)
        except FileNotFoundError as error:
            raise ImageFetchError("no such object") from error
        except (OSError, PermissionError) as error:
            raise ImageFetchError(f"cannot read the object: {error}", transient=True) from error
        size = int(info.get("size") or 0)
        tag = str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or "")
        cached = self.cache.lookup(url)
        if cached is not None and tag and cached.get("etag") == tag:
            return self.cache.image(cached)
        if size > self.settings.max_bytes:
            raise ImageFetchError(f"{size} bytes: over the {self.settings.max_bytes}-byte limit of an image")
        try:
            data = filesystem.cat_file(path)
        except OSError as error:
            raise ImageFetchError(f"cannot read the object: {error}", transient=True) from error
        if not data:
            raise ImageFetchError("empty object")
        check_magic(data[:16])
        partial = self.cache.temporary()
        try:
            partial.write_bytes(data)
            return self.cache.store(url, partial, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                                    validators={"etag": tag} if tag else {})
        finally:
            partial.unlink(missing_ok=True)

    def _object_store(self, url: str) -> tuple[Any, str]:
        from shopvision.catalog.feeds.sources import object_store

        scheme = url.split("://", 1)[0].lower()
        with self._lock:
            if scheme not in self._object_stores:
                self._object_stores[scheme] = object_store(url)[0]
        return self._object_stores[scheme], url.split("://", 1)[1]


def check_magic(head: bytes) -> None:
    """Refuse bytes that do not start like an image (an HTML error page served as 200, say)."""
    if not looks_like_an_image(head):
        raise ImageFetchError(f"not an image: its bytes start {head[:8]!r}")
