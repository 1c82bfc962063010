"""``shopvision api``: the visual search service (HTTP API and web page) in front of a running Triton."""

from __future__ import annotations

import argparse
from pathlib import Path

from shopvision.cli._common import EXIT_OK

DEFAULT_API_PORT = 8080
DEFAULT_DEMO_DIR = Path("build") / "demo"


def add_api_arguments(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    parser.add_argument(f"--{prefix}port", type=int, default=DEFAULT_API_PORT, dest="api_port",
                        help=f"the API and the page (default {DEFAULT_API_PORT})")
    parser.add_argument("--catalog", default=None,
                        help="a catalog folder, Milvus Lite .db file or Milvus URL (default: $SHOPVISION_CATALOG; "
                             "without one, a generated demo catalog)")
    parser.add_argument("--demo-dir", type=Path, default=DEFAULT_DEMO_DIR,
                        help=f"where the demo catalog is built on first start (default {DEFAULT_DEMO_DIR})")
    parser.add_argument("--demo-photos", type=Path, default=None, metavar="DIR",
                        help="real product photos for the demo catalog, one product per photo (default: generated "
                             "pictures; `make serve` passes the Grocery Store Dataset's catalog photos when "
                             "../shared/data is beside the checkout)")


def register(commands: argparse._SubParsersAction) -> None:
    api = commands.add_parser(
        "api", help="serve the visual search API and web page (needs a running Triton)",
        description="An HTTP API (/v1/classify, /v1/search, products, /docs) and a web page on one port, "
                    "talking to Triton over gRPC. Writes need $SHOPVISION_API_KEY; see docs/search-service.md.",
        epilog="example:\n  SHOPVISION_CATALOG=shop-index/ shopvision api --url grpc://localhost:8001 --port 8080",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    api.add_argument("--url", default=None, help="Triton's gRPC endpoint (default: $SHOPVISION_URL or "
                                                 "grpc://localhost:8001)")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    add_api_arguments(api)
    api.set_defaults(handler=run_api)


def run_api(args: argparse.Namespace) -> int:
    serve_api(args, triton_url=args.url)
    return EXIT_OK


def serve_api(args: argparse.Namespace, *, triton_url: str | None) -> None:
    """Run the service until Ctrl-C or SIGTERM (uvicorn finishes the requests in flight first)."""
    import uvicorn

    from shopvision.api.app import create_app
    from shopvision.api.demo import build_demo_catalog, demo_banner
    from shopvision.api.settings import ApiSettings

    settings = ApiSettings.from_environment(triton_url=triton_url, catalog=args.catalog)
    if settings.catalog is None:
        what = args.demo_photos or "generated pictures"
        print(f"no catalog configured: indexing the demo catalog in {args.demo_dir} ({what})", flush=True)
        location = build_demo_catalog(args.demo_dir, triton_url=settings.triton_url, photos=args.demo_photos)
        settings = ApiSettings.from_environment(triton_url=settings.triton_url, catalog=location,
                                                demo_banner=demo_banner(args.demo_photos))
    print(f"search service: http://{args.host}:{args.api_port}/ (page), /docs (API), catalog {settings.catalog}",
          flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.api_port, log_level="warning",
                timeout_graceful_shutdown=30)
