"""What ``shopvision categories train`` says about a head: provenance and evaluation, as JSON and Markdown."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from typing import Any

from shopvision.categories.embedding import EmbeddedPhotos
from shopvision.categories.training import Evaluation, TrainedHead
from shopvision.repository.records import HeadProvenance
from shopvision.types import WeightsProvenance


@dataclass(frozen=True)
class SkippedPhoto:
    photo: str
    reason: str


@dataclass(frozen=True)
class TrainingReport:
    """Everything a reviewer needs to trust (or not) a head; its ``provenance`` goes next to the model."""

    provenance: HeadProvenance
    photos_per_category: dict[str, int]
    vectors_from_catalog: int
    skipped_photos: list[SkippedPhoto]
    evaluation: Evaluation

    def to_record(self) -> dict[str, Any]:
        """The report as ``training-report.json`` and ``categories train --json`` give it: the evaluation's
        ``photos``, ``regularisation`` and ``held_out`` at the top level."""
        return {"provenance": self.provenance.to_record(), "photos_per_category": self.photos_per_category,
                "vectors_from_catalog": self.vectors_from_catalog,
                "skipped_photos": [asdict(skipped) for skipped in self.skipped_photos],
                **self.evaluation.to_record()}


def training_report(head: TrainedHead, embedded: EmbeddedPhotos, served: WeightsProvenance, *,
                    source: str, seed: int) -> TrainingReport:
    held_out = head.evaluation.held_out
    provenance = HeadProvenance(
        categories=head.categories, embeddings=served, training_set_sha256=embedded.training_set_sha256(),
        photos=len(embedded.photos), source=source,
        trained_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        held_out_accuracy=held_out.accuracy, chance=held_out.chance,
        regularisation_C=head.evaluation.regularisation.C, seed=seed, scikit_learn=package_version("scikit-learn"))
    return TrainingReport(
        provenance=provenance,
        photos_per_category=dict(sorted(Counter(photo.category for photo in embedded.photos).items())),
        vectors_from_catalog=embedded.from_catalog,
        skipped_photos=[SkippedPhoto(photo, reason) for photo, reason in embedded.failed],
        evaluation=head.evaluation)


def render_markdown(report: TrainingReport, *, version: int) -> str:
    provenance, evaluation = report.provenance, report.evaluation
    held_out, regularisation = evaluation.held_out, evaluation.regularisation
    calibration = held_out.calibration
    lines = [f"# Categories head, version {version}", ""]
    if provenance.embeddings.synthetic:
        lines += ["**SYNTHETIC WEIGHTS.** These embeddings come from seeded random ResNet50 weights, not a trained "
                  "network: the numbers below say what this pipeline does, not what a shop's photos would get.", ""]
    lines += [
        f"Trained {provenance.trained_at} on {provenance.photos} photos from `{provenance.source}` "
        f"(training set sha256 `{provenance.training_set_sha256[:16]}…`), embeddings of "
        f"{provenance.embeddings.source} (sha256 `{str(provenance.embeddings.model_sha256)[:16]}…`); "
        f"{report.vectors_from_catalog} vectors came from the catalog.",
        "",
        f"**Held-out accuracy {held_out.accuracy:.3f}** on {evaluation.photos.held_out} photos the training "
        f"never saw (chance, always the largest category: {held_out.chance:.3f}). "
        f"Regularisation C = {regularisation.C:g}, chosen by {regularisation.folds}-fold "
        f"{regularisation.scoring} on the {evaluation.photos.train} training photos.",
        "",
        "| category | photos | held-out precision | held-out recall |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {report.photos_per_category[name]} | {scores.precision:.3f} | {scores.recall:.3f} |"
          for name, scores in held_out.per_category.items()),
        "",
        "Most confused (held out): " + ("; ".join(
            f"{pair.category} taken for {pair.predicted_as} ({pair.photos})"
            for pair in held_out.most_confused) or "none") + ".",
        "",
        f"Calibration (held out): expected calibration error {calibration.expected_calibration_error:.3f}, "
        f"Brier {calibration.brier:.3f}, log loss {calibration.log_loss:.3f}.",
        "",
        "| top-1 confidence | photos | mean confidence | accuracy |",
        "|---|---:|---:|---:|",
        *(f"| {row.confidence} | {row.photos} | {row.mean_confidence:.3f} | {row.accuracy:.3f} |"
          for row in calibration.bins),
    ]
    if report.skipped_photos:
        lines += ["", f"Skipped {len(report.skipped_photos)} unreadable photo(s):", "",
                  *(f"- `{item.photo}`: {item.reason}" for item in report.skipped_photos)]
    return "\n".join(lines) + "\n"
