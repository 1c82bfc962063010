"""The search service on a free port in this process (uvicorn in a thread), for the API and page tests."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import uvicorn

from shopvision.api.app import create_app
from shopvision.api.settings import ApiSettings
from shopvision.server.tritonserver import free_ports


class ServiceThread:
    def __init__(self, settings: ApiSettings) -> None:
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=10)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="search-service", daemon=True)

    def __enter__(self) -> ServiceThread:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the search service did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def client(self, **options: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, **{"timeout": 60, **options})  # type: ignore[arg-type]


def index_photos(catalog_dir: Path, photos: list[Path], triton_url: str) -> None:
    """A catalog of these photos, indexed through the server as `shopvision index build` does."""
    import shopvision
    from shopvision.catalog import Catalog, CatalogItem

    items = [CatalogItem(product_id=path.stem, path=path, extra={"colour": ("red", "blue")[index % 2]})
             for index, path in enumerate(photos)]
    with shopvision.Client(triton_url) as client, Catalog.open(catalog_dir, client=client) as catalog:
        report = catalog.build(items)
    assert not report.failed and report.added == len(photos), report
