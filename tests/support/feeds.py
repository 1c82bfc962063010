"""A shop's product feed for the feed tests: real products from ../shared/data, and a photo server on 127.0.0.1.

The products: the three Amazon (ABO) samples, several photos each, with brand and colour from their listing, and
the Grocery Store Dataset's 81 iconic catalog photos with their titles. The server behaves like a shop's CDN
(ETag, conditional GET) and can misbehave on purpose: 404s, a slow URL, redirects, a wrong content type and an
oversized image.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import re
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.real_data import ABO, GROCERY, require

MERCHANT_COLUMNS = ("id", "title", "price", "availability", "brand", "image_link", "additional_image_link")


@dataclass
class ShopProduct:
    product_id: str
    photos: list[Path]
    title: str
    brand: str
    price: str

    def row(self, base_url: str) -> dict[str, str]:
        """The product's Merchant Center row, its photos served from ``base_url``."""
        links = [f"{base_url}/photos/{self.product_id}/{index}.jpg" for index in range(len(self.photos))]
        return {"id": self.product_id, "title": self.title, "price": self.price, "availability": "in_stock",
                "brand": self.brand, "image_link": links[0], "additional_image_link": ",".join(links[1:])}


def shop_products() -> list[ShopProduct]:
    """84 real products; skips the test where ../shared/data is absent."""
    products = []
    for folder in sorted(require(ABO).iterdir()):
        if not folder.is_dir():
            continue
        listing = (folder / "metadata.txt").read_text()
        brand = re.search(r"'brand': '\[\{language_tag=\w+, value=([^}]*)\}", listing)
        name = re.search(r"'model_name': '\[\{language_tag=\w+, value=([^}]*)\}", listing)
        products.append(ShopProduct(folder.name, sorted(folder.glob("*.jpg")), name.group(1) if name else folder.name,
                                    brand.group(1) if brand else "", "24.99 USD"))
    for number, photo in enumerate(sorted(require(GROCERY / "iconic-images-and-descriptions").rglob("*_Iconic.jpg"))):
        title = photo.stem.removesuffix("_Iconic").replace("-", " ")
        products.append(ShopProduct(f"grocery-{number:03d}", [photo], title, photo.parent.parent.name,
                                    f"{1 + number % 9}.{number % 100:02d} SEK"))
    return products


def write_tsv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=MERCHANT_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w") as stream:
        for row in rows:
            record: dict[str, object] = dict(row)
            record["additional_image_link"] = [link for link in row["additional_image_link"].split(",") if link]
            stream.write(json.dumps(record) + "\n")
    return path


@dataclass
class Served:
    body: bytes
    content_type: str = "image/jpeg"
    delay_s: float = 0.0
    status: int = 200
    location: str | None = None


@dataclass
class PhotoServer:
    """Serves ``routes`` (path to :class:`Served`) on 127.0.0.1 with ETags; counts what it sent."""

    routes: dict[str, Served] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    transfers: Counter[str] = field(default_factory=Counter)
    """Paths whose bytes were sent (200), not answered 304."""
    tls: tuple[Path, Path] | None = None
    """A certificate and key: serve https, as ``https://localhost:PORT``."""

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests[self.path] += 1
                served = server.routes.get(self.path)
                if served is None:
                    self._send(404, b"not found", "text/plain")
                    return
                time.sleep(served.delay_s)
                if served.location is not None:
                    self._send(served.status, b"", "text/plain", {"Location": served.location})
                    return
                etag = '"' + hashlib.sha256(served.body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self._send(304, b"", None, {"ETag": etag})
                    return
                if served.status == 200:
                    server.transfers[self.path] += 1
                self._send(served.status, served.body, served.content_type, {"ETag": etag})

            def _send(self, status: int, body: bytes, content_type: str | None,
                      headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if content_type:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gave up (a size limit, a timeout)
                    self.wfile.write(body)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_port}"
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
            self.url = f"https://localhost:{self._http.server_port}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def serve_products(self, products: list[ShopProduct]) -> None:
        for product in products:
            for index, photo in enumerate(product.photos):
                self.routes[f"/photos/{product.product_id}/{index}.jpg"] = Served(photo.read_bytes())

    def reset_counts(self) -> None:
        self.requests.clear()
        self.transfers.clear()

    def __enter__(self) -> PhotoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._http.server_close()

