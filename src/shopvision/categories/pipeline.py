"""From labelled photos to an installed head: what ``shopvision categories train`` runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shopvision.categories.dataset import MIN_PHOTOS_PER_CATEGORY, TrainingDataError, check_counts, read_labelled
from shopvision.categories.embedding import embed_photos
from shopvision.categories.export import head_to_onnx
from shopvision.categories.report import TrainingReport, render_markdown, training_report
from shopvision.categories.training import TrainedHead, train_head
from shopvision.repository.files import CategoryHeads
from shopvision.repository.records import write_json

if TYPE_CHECKING:
    from shopvision.aio import Progress
    from shopvision.catalog import Catalog
    from shopvision.client import Client

REPORT_JSON = "training-report.json"
REPORT_MARKDOWN = "training-report.md"


@dataclass(frozen=True)
class InstalledHead:
    head: TrainedHead
    version: int
    report: TrainingReport
    markdown: str


def train_and_install(source: str | Path, client: Client, *, repository: Path, template: Path,
                      catalog: Catalog | None = None, categories: frozenset[str] | None = None, seed: int = 0,
                      minimum: int = MIN_PHOTOS_PER_CATEGORY, skip_unusable: bool = False,
                      progress: Progress | None = None) -> InstalledHead:
    """Read, embed, train, evaluate and install a head as the next version; its report goes next to it.

    ``categories`` keeps only those; photos that cannot be read or that the server refuses stop the
    training (:class:`TrainingDataError` lists them) unless ``skip_unusable``, which lists them in the report.
    """
    photos = [photo for photo in read_labelled(source) if categories is None or photo.category in categories]
    check_counts(photos, minimum=minimum)
    embedded = embed_photos(photos, client, catalog=catalog, progress=progress)
    if embedded.failed and not skip_unusable:
        listed = "; ".join(f"{photo}: {reason}" for photo, reason in embedded.failed)
        raise TrainingDataError(f"{len(embedded.failed)} of {len(photos)} photos cannot be used ({listed}): "
                                "fix or remove them, or pass --skip-unreadable to train without them")
    check_counts(embedded.photos, minimum=minimum)
    head = train_head(embedded.vectors, [photo.category for photo in embedded.photos], seed=seed)
    report = training_report(head, embedded, client.provenance(), source=str(source), seed=seed)
    heads = CategoryHeads(repository)
    version = heads.install(head_to_onnx(head).SerializeToString(), report.provenance, template=template)
    markdown = render_markdown(report, version=version)
    write_report(heads.model_dir / str(version), report, markdown)
    return InstalledHead(head, version, report, markdown)


def write_report(folder: Path, report: TrainingReport, markdown: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / REPORT_JSON, report.to_record())
    (folder / REPORT_MARKDOWN).write_text(markdown)
