"""``index build|remove|stats`` and ``search``: the visual-search catalog."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

from shopvision.cli._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ProgressBar,
    SyncProgress,
    UsageError,
    add_json_option,
    add_url_option,
    print_json,
)

if TYPE_CHECKING:
    from shopvision.catalog import Catalog
    from shopvision.client import Client



def register(commands: argparse._SubParsersAction) -> None:
    index = commands.add_parser(
        "index", help="build and maintain a visual-search catalog",
        description="A catalog lives in a folder (embedded FAISS + SQLite), a Milvus Lite file (*.db) "
                    "or a Milvus server (http://host:19530).",
        epilog="examples:\n  shopvision index build photos/ --index catalog/\n"
               "  shopvision index build products.csv --index catalog/ --prune\n"
               "  shopvision index build photos/ --index catalog.db           # Milvus Lite\n"
               "  shopvision index build photos/ --index http://milvus:19530  # Milvus server, token in $MILVUS_TOKEN\n"
               "  shopvision index stats --index catalog/\n"
               "  shopvision index remove sku-123 sku-456 --index catalog/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = index.add_subparsers(dest="action", required=True, metavar="ACTION")

    build = actions.add_parser(
        "build", help="index a folder of photos or a CSV (product_id,image_path[,extra columns])",
        description="Embed new and changed photos (by content hash) through the server and store them with "
                    "their product id, path, top-1 label and the CSV's extra columns. Interrupted builds keep "
                    "what they committed; run the same command again to resume.")
    build.add_argument("source", metavar="FOLDER|CSV")
    build.add_argument("--prune", action="store_true", help="also remove products no longer in the source")
    add_json_option(build, "the counts and each failed product")
    _add_catalog_options(build)
    add_url_option(build)
    build.set_defaults(handler=run_build)

    _register_sync(actions)

    remove = actions.add_parser("remove", help="remove products by id")
    remove.add_argument("product_ids", nargs="+", metavar="PRODUCT_ID")
    add_json_option(remove, "how many were asked for and removed")
    _add_catalog_options(remove)
    remove.set_defaults(handler=run_remove)

    stats = actions.add_parser("stats", help="size, engine, index and model of a catalog")
    add_json_option(stats, "the catalog's figures")
    _add_catalog_options(stats)
    stats.set_defaults(handler=run_stats)

    search = commands.add_parser(
        "search", help="find the products that look most like a photo",
        description="Embed the photo through the server and print the k nearest products with cosine scores.",
        epilog="examples:\n  shopvision search query.jpg --index catalog/ -k 5\n"
               "  shopvision search query.jpg --index catalog/ --label-filter running_shoe --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument("image", metavar="IMG")
    search.add_argument("-k", type=int, default=10, help="how many products (default 10)")
    search.add_argument("--label-filter", nargs="+", metavar="LABEL",
                        help="only products whose top-1 ImageNet label is one of these")
    search.add_argument("--json", action="store_true", help="one JSON object per hit and line")
    _add_catalog_options(search)
    add_url_option(search)
    search.set_defaults(handler=run_search)


def _register_sync(actions: argparse._SubParsersAction) -> None:
    from shopvision.catalog.feeds import FEED_FORMATS, MISSING_POLICIES
    from shopvision.contract import FEED_FETCH_CONCURRENCY, FEED_FETCH_RETRIES, FEED_FETCH_TIMEOUT_S

    sync = actions.add_parser(
        "sync", help="bring a catalog in step with a product feed (Merchant TSV/XML, CSV, JSON Lines)",
        description="Read the feed (a path or an http(s)://, s3:// or gs:// URL; .gz is unpacked), fetch its "
                    "images (cached, revalidated with ETag/Last-Modified), embed what changed, store metadata "
                    "changes without embedding, and remove this feed's products that left it. A bad row or image "
                    "is reported with its row, URL and reason, and the rest is indexed. Interrupted syncs keep "
                    "what they committed: run the same command again to resume.",
        epilog="examples:\n  shopvision index sync products.tsv --index catalog/\n"
               "  shopvision index sync https://shop.example/feed.xml --index catalog/ --json\n"
               "  shopvision index sync s3://bucket/export.csv --index catalog/ --map id=Handle "
               "--map image_link='Image Src'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sync.add_argument("feed", metavar="FEED")
    sync.add_argument("--format", choices=FEED_FORMATS, help="the feed's format (default: from its name)")
    sync.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                      help="take FIELD (id, image_link, additional_image_link, or a metadata name) from the feed's "
                           "COLUMN; repeat for more")
    sync.add_argument("--exclude", action="append", default=[], metavar="COLUMN",
                      help="leave a column out of the metadata; repeat for more")
    sync.add_argument("--number", action="append", default=[], metavar="FIELD",
                      help="a metadata field that must be a number, so that filters compare it (price<50): "
                           "'12.00 USD' is stored as 12.00, its unit in FIELD_unit; repeat for more")
    sync.add_argument("--name", help="the feed's name in the catalog (metadata 'feed'; default: its URL without "
                                     "credentials or query, or its absolute path)")
    sync.add_argument("--missing", choices=MISSING_POLICIES, default="remove",
                      help="what happens to this feed's products that left it (default: remove)")
    sync.add_argument("--concurrency", type=int, default=FEED_FETCH_CONCURRENCY,
                      help=f"images fetched at once (default {FEED_FETCH_CONCURRENCY})")
    sync.add_argument("--timeout", type=float, default=FEED_FETCH_TIMEOUT_S,
                      help=f"seconds one image may take (default {FEED_FETCH_TIMEOUT_S:g})")
    sync.add_argument("--retries", type=int, default=FEED_FETCH_RETRIES,
                      help=f"tries after the first for a transient failure (default {FEED_FETCH_RETRIES})")
    sync.add_argument("--allow-private-addresses", action="store_true",
                      help="let image URLs reach private and loopback addresses (refused by default: SSRF)")
    sync.add_argument("--ca-file", metavar="PEM", help="certificates to trust for https images instead of the "
                                                       "system's")
    sync.add_argument("--cache", metavar="DIR", help="fetched images and their validators (default: "
                                                     "~/.cache/shopvision/feeds/<feed>)")
    add_json_option(sync, "the sync's report")
    sync.add_argument("--service", metavar="URL",
                      help="sync into the search service at URL through its API (bulk writes; the service embeds and "
                           "stays the catalog's only writer), its write key in $SHOPVISION_API_KEY, instead of --index")
    _add_catalog_options(sync, required=False)
    add_url_option(sync)
    sync.set_defaults(handler=run_sync)


def _add_catalog_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    from shopvision.catalog.faiss_store import INDEX_KINDS
    from shopvision.catalog.milvus_store import DEFAULT_COLLECTION

    parser.add_argument("--index", required=required, metavar="PATH|URI",
                        help="catalog folder, Milvus Lite file (*.db) or Milvus URI (http://host:19530)")
    parser.add_argument("--collection", default=DEFAULT_COLLECTION, help="Milvus collection name")
    parser.add_argument("--search-index", choices=INDEX_KINDS, default="auto",
                        help="embedded engine: exact search, HNSW, or auto by catalog size (default)")


def _open(args: argparse.Namespace, client: Client | None = None) -> Catalog:
    from shopvision.catalog import Catalog
    from shopvision.catalog.milvus_store import MilvusConnection

    return Catalog.open(args.index, client=client, collection=args.collection,
                        milvus=MilvusConnection.from_environment(), index=args.search_index)


def run_build(args: argparse.Namespace) -> int:
    import shopvision

    with shopvision.Client(args.url) as client, _open(args, client) as catalog:
        try:
            report = catalog.build(args.source, prune=args.prune, progress=ProgressBar("index", min_total=1))
        except KeyboardInterrupt:
            print("\ninterrupted: the batches committed so far are kept; run the same command to resume",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
        products = catalog.stats().products
    for product_id, reason in report.failed:
        print(f"{product_id}: FAILED: {reason}", file=sys.stderr)
    if args.json:
        print_json({"index": args.index, "products": products, "added": report.added, "updated": report.updated,
                    "unchanged": report.unchanged, "removed": report.removed,
                    "failed": [{"product_id": product_id, "reason": reason} for product_id, reason in report.failed]})
        return EXIT_FAILED if report.failed else EXIT_OK
    print(f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
          f"removed {report.removed}, failed {len(report.failed)}; {products} products in {args.index}")
    return EXIT_FAILED if report.failed else EXIT_OK


def run_sync(args: argparse.Namespace) -> int:
    from pathlib import Path

    import shopvision
    from shopvision.catalog.feeds import FeedMapping, FetchSettings, SyncOptions, sync_feed
    from shopvision.catalog.feeds.service import API_KEY_ENV, ServiceCatalog

    if args.concurrency < 1 or args.retries < 0 or args.timeout <= 0:
        raise UsageError("--concurrency must be at least 1, --retries at least 0 and --timeout above 0")
    options = SyncOptions(
        name=args.name, format=args.format,
        mapping=FeedMapping.parse(args.map, exclude=args.exclude, numbers=args.number),
        missing=args.missing, cache=Path(args.cache) if args.cache else None,
        fetch=FetchSettings(concurrency=args.concurrency, timeout_s=args.timeout, retries=args.retries,
                            allow_private=args.allow_private_addresses, ca_file=args.ca_file))
    if (args.index is None) == (args.service is None):
        raise UsageError("give the catalog to sync into: --index PATH|URI, or --service URL")
    status = SyncProgress()
    try:
        if args.service is not None:
            with ServiceCatalog(args.service, api_key=os.environ.get(API_KEY_ENV)) as service:
                report = sync_feed(service, args.feed, options, progress=status)
        else:
            with shopvision.Client(args.url) as client, _open(args, client) as catalog:
                report = sync_feed(catalog, args.feed, options, progress=status)
    except KeyboardInterrupt:
        status.end()
        print("\ninterrupted: the batches committed so far are kept; run the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    status.end()
    if args.json:
        print_json(report.as_dict())
    else:
        for problem in report.failed:
            where = f"row {problem.row}" + (f" ({problem.product_id})" if problem.product_id else "")
            print(f"{where}: FAILED: {problem.reason}" + (f" [{problem.url}]" if problem.url else ""),
                  file=sys.stderr)
        print(f"{report.rows} rows: added {report.added}, re-embedded {report.reembedded}, metadata updated "
              f"{report.metadata_updated}, unchanged {report.unchanged}, removed {report.removed}, marked "
              f"unavailable {report.marked_unavailable}, failed {len(report.failed)}; images fetched "
              f"{report.fetched} ({report.bytes_fetched / 1e6:.1f} MB), not modified {report.not_modified}; "
              f"{report.elapsed_s:.1f} s")
    return EXIT_FAILED if report.failed else EXIT_OK


def run_remove(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        removed = catalog.remove(args.product_ids)
    if args.json:
        print_json({"asked": len(args.product_ids), "removed": removed})
    else:
        print(f"removed {removed} of {len(args.product_ids)} products")
    return EXIT_OK if removed == len(args.product_ids) else EXIT_FAILED


def run_stats(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        stats = catalog.stats()
    if args.json:
        print_json(asdict(stats))
        return EXIT_OK
    print(f"catalog   {stats.location} ({stats.engine}, {stats.index} search)")
    print(f"products  {stats.products} x {stats.dimension}-d")
    print(f"model     {stats.backbone or 'unknown backbone'} from {stats.model_source} sha256 {stats.model_sha256}")
    if stats.labels:
        print("labels    " + ", ".join(f"{label} {count}" for label, count in stats.labels.items()))
    return EXIT_OK


def run_search(args: argparse.Namespace) -> int:
    import shopvision

    with shopvision.Client(args.url) as client, _open(args, client) as catalog:
        hits = catalog.search(args.image, k=args.k, labels=args.label_filter)
    for rank, hit in enumerate(hits, 1):
        if args.json:
            print(json.dumps({"rank": rank, **asdict(hit)}))
        else:
            matched = f"  (photo {hit.photo + 1} of {len(hit.photos)})" if len(hit.photos) > 1 else ""
            print(f"{rank:>3}. {hit.score:.4f}  {hit.product_id}  {hit.label}  {hit.path}{matched}")
    if not hits:
        print("no products found", file=sys.stderr)
    return EXIT_OK
