"""What ``shopvision categories train`` says about a head: provenance and evaluation, as JSON and Markdown."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from typing import Any

from shopvision.categories.embedding import EmbeddedPhotos
from shopvision.categories.training import TrainedHead
from shopvision.types import WeightsProvenance


def training_report(head: TrainedHead, embedded: EmbeddedPhotos, served: WeightsProvenance, *,
                    source: str, seed: int) -> dict[str, Any]:
    """Everything a reviewer needs to trust (or not) a head; its ``provenance`` goes next to the model."""
    held_out = head.evaluation["held_out"]
    return {
        "provenance": {
            "categories": head.categories,
            "training_set_sha256": embedded.training_set_sha256(),
            "photos": len(embedded.photos),
            "source": source,
            "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "embedding_model_sha256": served.model_sha256,
            "embedding_model_source": served.source,
            "embedding_backbone": served.backbone,
            "embedding_dim": served.embedding_dim,
            "embedding_weights_synthetic": served.synthetic,
            "held_out_accuracy": held_out["accuracy"],
            "chance": held_out["chance"],
            "regularisation_C": head.evaluation["regularisation"]["C"],
            "seed": seed,
            "scikit_learn": package_version("scikit-learn"),
        },
        "photos_per_category": dict(sorted(Counter(photo.category for photo in embedded.photos).items())),
        "vectors_from_catalog": embedded.from_catalog,
        "skipped_photos": [{"photo": photo, "reason": reason} for photo, reason in embedded.failed],
        **head.evaluation,
    }


def render_markdown(report: dict[str, Any], *, version: int) -> str:
    provenance, held_out = report["provenance"], report["held_out"]
    calibration = held_out["calibration"]
    lines = [f"# Categories head, version {version}", ""]
    if provenance["embedding_weights_synthetic"]:
        lines += ["**SYNTHETIC WEIGHTS.** These embeddings come from seeded random ResNet50 weights, not a trained "
                  "network: the numbers below say what this pipeline does, not what a shop's photos would get.", ""]
    lines += [
        f"Trained {provenance['trained_at']} on {provenance['photos']} photos from `{provenance['source']}` "
        f"(training set sha256 `{provenance['training_set_sha256'][:16]}…`), embeddings of "
        f"{provenance['embedding_model_source']} (sha256 `{str(provenance['embedding_model_sha256'])[:16]}…`); "
        f"{report['vectors_from_catalog']} vectors came from the catalog.",
        "",
        f"**Held-out accuracy {held_out['accuracy']:.3f}** on {report['photos']['held_out']} photos the training "
        f"never saw (chance, always the largest category: {held_out['chance']:.3f}). "
        f"Regularisation C = {report['regularisation']['C']:g}, chosen by {report['regularisation']['folds']}-fold "
        f"{report['regularisation']['scoring']} on the {report['photos']['train']} training photos.",
        "",
        "| category | photos | held-out precision | held-out recall |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {report['photos_per_category'][name]} | {scores['precision']:.3f} | {scores['recall']:.3f} |"
          for name, scores in held_out["per_category"].items()),
        "",
        "Most confused (held out): " + ("; ".join(
            f"{pair['category']} taken for {pair['predicted_as']} ({pair['photos']})"
            for pair in held_out["most_confused"]) or "none") + ".",
        "",
        f"Calibration (held out): expected calibration error {calibration['expected_calibration_error']:.3f}, "
        f"Brier {calibration['brier']:.3f}, log loss {calibration['log_loss']:.3f}.",
        "",
        "| top-1 confidence | photos | mean confidence | accuracy |",
        "|---|---:|---:|---:|",
        *(f"| {row['confidence']} | {row['photos']} | {row['mean_confidence']:.3f} | {row['accuracy']:.3f} |"
          for row in calibration["bins"]),
    ]
    if report["skipped_photos"]:
        lines += ["", f"Skipped {len(report['skipped_photos'])} unreadable photo(s):", "",
                  *(f"- `{item['photo']}`: {item['reason']}" for item in report["skipped_photos"])]
    return "\n".join(lines) + "\n"
