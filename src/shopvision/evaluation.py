"""Accuracy of the served model on a labelled sample, and drift of new photos against a reference.

A dataset is a folder tree ``class_name/*.jpg`` or a CSV ``image_path,label``. Labels are ImageNet
class names as the server's label file spells them (case and ``_``/space do not matter) or class
indices. A shop's own labels (``sneakers``, ``tote bag``) cannot map to ImageNet's 1000 fixed
classes automatically: pass ``label_map`` (shop label -> ImageNet class) where one exists.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shopvision.contract import NUM_CLASSES
from shopvision.errors import ShopvisionError
from shopvision.images import IMAGE_SUFFIXES
from shopvision.samples import product_jpeg

if TYPE_CHECKING:
    from shopvision.client import Client



class DatasetError(ShopvisionError):
    """The labelled dataset is missing, malformed, or names classes the model does not have."""


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str


@dataclass
class ClassResult:
    images: int = 0
    top1: int = 0
    top5: int = 0
    confused_with: dict[str, int] = field(default_factory=dict)
    """Top-1 predictions that were wrong, by predicted class."""


@dataclass
class EvalReport:
    url: str
    model_source: str
    images: int
    """Every image of the dataset, those that failed included: the accuracies' denominator."""
    failed: list[tuple[str, str]]
    """Images the server could not read (path, reason); each counts as a miss."""
    top1_accuracy: float
    top5_accuracy: float
    images_per_s: float
    per_class: dict[str, ClassResult]


@dataclass(frozen=True)
class EmbeddingStats:
    """The centre and spread of a sample's embeddings: enough to notice that new photos look different."""

    mean: np.ndarray
    spread: float
    """Mean cosine distance of the sample's embeddings to their (normalised) mean."""
    count: int

    @classmethod
    def of(cls, embeddings: np.ndarray) -> EmbeddingStats:
        mean = embeddings.mean(axis=0)
        centre = mean / np.linalg.norm(mean)
        return cls(mean.astype(np.float32), float(np.mean(1 - embeddings @ centre)), len(embeddings))

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, spread=self.spread, count=self.count)

    @classmethod
    def load(cls, path: Path) -> EmbeddingStats:
        data = np.load(path)
        return cls(data["mean"], float(data["spread"]), int(data["count"]))

    def drift_from(self, reference: EmbeddingStats) -> dict[str, float]:
        """How far this sample moved from the reference: centre shift and spread ratio."""
        shift = 1 - float(self.mean @ reference.mean / (np.linalg.norm(self.mean) * np.linalg.norm(reference.mean)))
        return {"centre_shift_cosine_distance": round(shift, 6),
                "spread": round(self.spread, 6), "reference_spread": round(reference.spread, 6),
                "spread_ratio": round(self.spread / reference.spread, 3) if reference.spread else float("nan")}


def normalise(label: str) -> str:
    return " ".join(label.replace("_", " ").lower().split())


def read_dataset(source: str | Path) -> list[LabelledImage]:
    source = Path(source)
    if source.is_dir():
        items = [LabelledImage(path, path.parent.name) for path in sorted(source.glob("*/*"))
                 if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]
    elif source.suffix.lower() == ".csv" and source.is_file():
        with source.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            if not {"image_path", "label"} <= set(reader.fieldnames or []):
                raise DatasetError(f"{source}: the header must have image_path and label")
            items = [LabelledImage(Path(row["image_path"]) if Path(row["image_path"]).is_absolute()
                                   else source.parent / row["image_path"], row["label"]) for row in reader]
    else:
        raise DatasetError(f"{source}: not a folder of class folders or a .csv file")
    if not items:
        raise DatasetError(f"{source}: no labelled images found")
    return items


def server_labels(client: Client) -> list[str]:
    """The served model's 1000 class names by index, from one classification of a generated photo
    (not the dataset's: its first image may be one the server cannot read)."""
    (predictions,) = client.classify([product_jpeg(0)], top_k=NUM_CLASSES)
    labels = [""] * NUM_CLASSES
    for prediction in predictions:
        labels[prediction.index] = prediction.label
    return labels


def class_names(labels: list[str]) -> list[str]:
    """A unique name per class index: ImageNet names a few classes twice (two "crane"s, 134 a bird
    and 517 a machine), and those get their index appended."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[normalise(label)] = counts.get(normalise(label), 0) + 1
    return [label if counts[normalise(label)] == 1 else f"{label} ({index})" for index, label in enumerate(labels)]


def resolve_labels(dataset: list[LabelledImage], labels: list[str], label_map: Mapping[str, str]) -> list[int]:
    """ImageNet index of each image's label; refuses labels the model does not have, and names that
    stand for several classes (the dataset must then say which, by index)."""
    by_name: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_name.setdefault(normalise(label), []).append(index)
    mapped = {normalise(shop): normalise(imagenet) for shop, imagenet in label_map.items()}
    indices: list[int] = []
    unknown: set[str] = set()
    ambiguous: dict[str, list[int]] = {}
    for item in dataset:
        name = mapped.get(normalise(item.label), normalise(item.label))
        if name.isdigit() and int(name) < len(labels):
            indices.append(int(name))
        elif len(by_name.get(name, [])) == 1:
            indices.append(by_name[name][0])
        elif name in by_name:
            ambiguous[item.label] = by_name[name]
            indices.append(-1)
        else:
            unknown.add(item.label)
            indices.append(-1)
    if unknown:
        raise DatasetError(f"labels not among the model's ImageNet classes: {', '.join(sorted(unknown))}; "
                           "use the class names of the label file, indices, or a label map")
    if ambiguous:
        which = "; ".join(f"{label!r} is classes {' and '.join(map(str, found))}" for label, found in ambiguous.items())
        raise DatasetError(f"labels that name several ImageNet classes: {which}; use the class index instead")
    return indices


def evaluate(client: Client, dataset: list[LabelledImage], *, label_map: Mapping[str, str] | None = None,
             progress: Callable[[int, int], None] | None = None) -> tuple[EvalReport, np.ndarray]:
    """Top-1/top-5 accuracy and per-class confusion against the server; also returns the embeddings."""
    labels = server_labels(client)
    truth = resolve_labels(dataset, labels, label_map or {})
    names = class_names(labels)
    started = time.perf_counter()
    results = client.analyze([item.path for item in dataset], top_k=5, on_error="report", progress=progress)
    elapsed = time.perf_counter() - started
    per_class: dict[str, ClassResult] = {}
    failed, embeddings = [], []
    for item, expected, result in zip(dataset, truth, results, strict=True):
        stats = per_class.setdefault(names[expected], ClassResult())
        stats.images += 1
        if result.error is not None:
            failed.append((str(item.path), result.error.reason))
            continue
        embeddings.append(result.vector)
        predicted = [prediction.index for prediction in result.predictions]
        stats.top1 += predicted[0] == expected
        stats.top5 += expected in predicted
        if predicted[0] != expected:
            wrong = names[predicted[0]]
            stats.confused_with[wrong] = stats.confused_with.get(wrong, 0) + 1
    report = EvalReport(
        url=client.url, model_source=client.provenance().source, images=len(dataset), failed=failed,
        top1_accuracy=round(sum(s.top1 for s in per_class.values()) / len(dataset), 4),
        top5_accuracy=round(sum(s.top5 for s in per_class.values()) / len(dataset), 4),
        images_per_s=round(len(dataset) / elapsed, 1), per_class=dict(sorted(per_class.items())),
    )
    return report, np.stack(embeddings) if embeddings else np.empty((0, client.provenance().embedding_dim),
                                                                    dtype=np.float32)
