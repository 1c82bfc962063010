"""Read a shop's product feed, a row at a time: Google Merchant TSV and RSS/XML, CSV, JSON Lines.

Every format becomes the same :class:`FeedRow`: a product id, its main image URL, its additional image URLs
and its other attributes as metadata. Google's attribute names are the canonical ones (``id``, ``image_link``,
``additional_image_link``); a :class:`FeedMapping` maps a shop's own column names onto them (a Shopify CSV's
``Handle`` and ``Image Src``). A malformed row becomes a :class:`RowProblem` with its row number and the
rest of the feed is read: one bad row never stops a sync.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Final

from shopvision.catalog.feeds.errors import FeedError
from shopvision.catalog.filters import as_number
from shopvision.contract import MAX_METADATA_BYTES, MAX_METADATA_FIELDS

ID: Final = "id"
IMAGE_LINK: Final = "image_link"
ADDITIONAL_IMAGE_LINK: Final = "additional_image_link"
AVAILABILITY: Final = "availability"
FEED_FORMATS: Final = ("tsv", "csv", "xml", "jsonl")
_SUFFIXES: Final = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".xml": "xml", ".rss": "xml", ".atom": "xml",
                    ".jsonl": "jsonl", ".ndjson": "jsonl"}
_ALIASES: Final = {ID: ("id", "product_id", "sku"), IMAGE_LINK: ("image_link", "image_url", "image")}
"""Column names taken for a canonical field when the feed has no column of the canonical name."""
_ITEM_TAGS: Final = ("item", "entry")
"""The element of one product: RSS 2.0's ``item``, Atom's ``entry`` (Merchant Center takes both)."""


@dataclass(frozen=True)
class FeedRow:
    """One product of a feed."""

    row: int
    """Where it is: the line of a TSV, CSV or JSON Lines file (the header is line 1), the item's number in XML."""
    product_id: str
    image_url: str
    additional_image_urls: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RowProblem:
    """A row that cannot be indexed, and why."""

    row: int
    reason: str
    product_id: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class FeedMapping:
    """Which of the feed's columns hold the canonical fields, and which columns become metadata.

    ``columns`` maps a canonical field (``id``, ``image_link``, ``additional_image_link``) or a metadata name to
    the feed's column: ``{"id": "Handle", "image_link": "Image Src", "price": "Variant Price"}``. Columns not
    named keep their own name as metadata; ``exclude`` drops some.
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    exclude: frozenset[str] = frozenset()
    numbers: frozenset[str] = frozenset()
    """Metadata fields that must be numbers, so that filters compare them (``price<50``): ``12.00 USD`` is stored
    as ``12.00`` with ``USD`` in ``price_unit``; a value that does not start with a number fails its row."""

    @classmethod
    def parse(cls, pairs: Iterable[str], *, exclude: Iterable[str] = (), numbers: Iterable[str] = ()) -> FeedMapping:
        """From ``FIELD=COLUMN`` strings, as the CLI's ``--map`` takes them."""
        columns: dict[str, str] = {}
        for pair in pairs:
            name, separator, column = pair.partition("=")
            if not separator or not name.strip() or not column.strip():
                raise FeedError(f"--map {pair!r}: expected FIELD=COLUMN, such as id=Handle or image_link='Image Src'")
            columns[name.strip()] = column.strip()
        return cls(columns=columns, exclude=frozenset(exclude), numbers=frozenset(numbers))

    def to_row(self, number: int, values: Mapping[str, object]) -> FeedRow | RowProblem:
        """The canonical row of one record of the feed (column name to value)."""
        renamed = {feed_column: name for name, feed_column in self.columns.items()}
        fields: dict[str, object] = {}
        for column, value in values.items():
            if column in self.exclude or value is None or value == "" or value == []:
                continue
            fields[renamed.get(column, column)] = value
        for canonical, aliases in _ALIASES.items():
            if canonical not in fields and canonical not in self.columns:
                alias = next((name for name in aliases if name in fields), None)
                if alias is not None:
                    fields[canonical] = fields.pop(alias)
        product_id = _text(fields.pop(ID, ""))
        image_url = _text(fields.pop(IMAGE_LINK, ""))
        additional = _urls(fields.pop(ADDITIONAL_IMAGE_LINK, ""))
        if not product_id:
            return RowProblem(number, f"no {self.columns.get(ID, ID)!r}: every product needs an id")
        if not image_url:
            return RowProblem(number, f"no {self.columns.get(IMAGE_LINK, IMAGE_LINK)!r}: every product needs an "
                                      "image", product_id=product_id)
        metadata = {name: _text(value) for name, value in fields.items()}
        for name in sorted(self.numbers & metadata.keys()):
            amount, _, unit = metadata[name].partition(" ")
            if as_number(amount) is None:
                return RowProblem(number, f"{name}: {metadata[name]!r} is not a number (declared with --number)",
                                  product_id=product_id, url=image_url)
            metadata[name] = amount
            if unit.strip():
                metadata[f"{name}_unit"] = unit.strip()
        if additional:
            metadata[ADDITIONAL_IMAGE_LINK] = ",".join(additional)
        size = len(json.dumps(metadata, ensure_ascii=False).encode())
        if len(metadata) > MAX_METADATA_FIELDS or size > MAX_METADATA_BYTES:
            return RowProblem(number, f"metadata of {len(metadata)} fields and {size} bytes: at most "
                                      f"{MAX_METADATA_FIELDS} fields and {MAX_METADATA_BYTES} bytes (drop columns "
                                      "with --exclude)", product_id=product_id, url=image_url)
        return FeedRow(number, product_id, image_url, additional, metadata)


def feed_format(location: str, explicit: str | None = None) -> str:
    """The format of a feed: ``explicit``, or from its name's suffix (``.gz`` and a URL's query ignored)."""
    if explicit is not None:
        if explicit not in FEED_FORMATS:
            raise FeedError(f"unknown feed format {explicit!r}: one of {', '.join(FEED_FORMATS)}")
        return explicit
    name = location.split("?", 1)[0].split("#", 1)[0].lower().removesuffix(".gz")
    suffix = name[name.rfind("."):] if "." in name.rsplit("/", 1)[-1] else ""
    if suffix not in _SUFFIXES:
        raise FeedError(f"{location}: cannot tell the feed's format from its name; give --format "
                        f"({', '.join(FEED_FORMATS)})")
    return _SUFFIXES[suffix]


def read_rows(stream: IO[bytes], format: str, mapping: FeedMapping | None = None) -> Iterator[FeedRow | RowProblem]:
    """The feed's rows as they are read (the feed is never held whole), and duplicate ids as problems."""
    mapping = mapping or FeedMapping()
    readers = {"tsv": _table_records, "csv": _table_records, "xml": _xml_records, "jsonl": _jsonl_records}
    seen: set[str] = set()
    for number, record in readers[format](stream, format):
        row = record if isinstance(record, RowProblem) else mapping.to_row(number, record)
        if isinstance(row, FeedRow):
            if row.product_id in seen:
                row = RowProblem(number, "duplicate id: an earlier row has it", product_id=row.product_id,
                                 url=row.image_url)
            else:
                seen.add(row.product_id)
        yield row


def _table_records(stream: IO[bytes], format: str) -> Iterator[tuple[int, Mapping[str, object] | RowProblem]]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.DictReader(text, delimiter="\t" if format == "tsv" else ",")
    try:
        for record in reader:
            if None in record:
                yield reader.line_num, RowProblem(reader.line_num, f"{len(record[None])} more values than the header "
                                                                   "has columns")
                continue
            yield reader.line_num, {name.strip(): (value or "").strip() for name, value in record.items()}
    except (csv.Error, UnicodeDecodeError) as error:
        raise FeedError(f"line {reader.line_num}: not a {format.upper()} file ({error})") from error
    finally:
        text.detach()  # the stream is its opener's to close, not the wrapper's (which would close it when collected)


def _jsonl_records(stream: IO[bytes], format: str) -> Iterator[tuple[int, Mapping[str, object] | RowProblem]]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            yield number, RowProblem(number, f"not JSON: {error}")
            continue
        if not isinstance(record, dict):
            yield number, RowProblem(number, f"a JSON {type(record).__name__}, not an object")
            continue
        yield number, record


def _xml_records(stream: IO[bytes], format: str) -> Iterator[tuple[int, Mapping[str, object] | RowProblem]]:
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, iterparse

    number = 0
    try:
        # Elements are dropped once read: memory stays that of one item, however long the feed. defusedxml
        # refuses entity expansion and external references, which a hostile feed could use.
        for _event, element in iterparse(stream, events=("end",), forbid_dtd=True):
            if _local_name(element.tag) not in _ITEM_TAGS:
                continue
            number += 1
            record: dict[str, object] = {}
            additional: list[str] = []
            for child in element:
                name, value = _local_name(child.tag), (child.text or "").strip()
                if len(child) or not value:
                    continue  # nested attributes (shipping, tax) are not product metadata here
                if name == ADDITIONAL_IMAGE_LINK:
                    additional.append(value)  # repeated, one element a link
                else:
                    record[name] = value
            element.clear()
            yield number, {**record, ADDITIONAL_IMAGE_LINK: additional} if additional else record
    except (ParseError, DefusedXmlException) as error:
        raise FeedError(f"after item {number}: not a well-formed or safe XML feed ({error})") from error


def _local_name(tag: str) -> str:
    """``{http://base.google.com/ns/1.0}id`` and ``g:id`` are both ``id``."""
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value).strip()


def _urls(value: object) -> tuple[str, ...]:
    """Additional image links: a JSON list, repeated XML elements, or one comma-separated cell (TSV, CSV)."""
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(url for url in (str(item).strip() for item in items) if url)
