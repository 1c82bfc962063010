"""The records the built repository keeps beside its models, one frozen type for each, read and written here only.

- A resnet50 version's ``provenance.json``: :class:`shopvision.types.WeightsProvenance`, the one type for where
  weights came from (the build writes it, the configs' parameters state it, the SDK reads it back).
- A categories head's ``provenance.json``: :class:`HeadProvenance`, which names the weights whose embeddings
  it was trained on with that same type.
- Each model's ``promotions.json``: a list of :class:`PromotionRecord`.

The files keep the keys they had before these types existed, so repositories built earlier read unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shopvision._files import atomic_write
from shopvision.contract import PROVENANCE_FILE, RESNET50_BACKBONE, RESNET50_EMBEDDING_DIM
from shopvision.types import WeightsProvenance

HISTORY_FILE = "promotions.json"


def write_json(path: Path, document: Any) -> None:
    atomic_write(path, (json.dumps(document, indent=2) + "\n").encode())


def read_weights_provenance(version_dir: Path) -> WeightsProvenance | None:
    """A built resnet50 version's provenance, or None for a version built without one."""
    path = version_dir / PROVENANCE_FILE
    return WeightsProvenance.from_record(json.loads(path.read_text())) if path.exists() else None


def write_weights_provenance(version_dir: Path, provenance: WeightsProvenance) -> None:
    write_json(version_dir / PROVENANCE_FILE, provenance.to_record())


@dataclass(frozen=True)
class HeadProvenance:
    """What a categories head was trained on and how well it did: its version's ``provenance.json``."""

    categories: list[str]
    embeddings: WeightsProvenance
    """The weights whose embeddings it was trained on: it serves only beside the same ``model_sha256``."""
    training_set_sha256: str = ""
    photos: int = 0
    source: str = ""
    trained_at: str = ""
    held_out_accuracy: float = 0.0
    chance: float = 0.0
    regularisation_C: float = 0.0  # noqa: N815 (the name the report and the files have always used)
    seed: int = 0
    scikit_learn: str = ""

    _EMBEDDING_KEYS = {"embedding_model_sha256": "model_sha256", "embedding_model_source": "source",
                       "embedding_backbone": "backbone", "embedding_dim": "embedding_dim",
                       "embedding_weights_synthetic": "synthetic"}
    """The file's flat keys for :attr:`embeddings`' fields."""

    def to_record(self) -> dict[str, Any]:
        own = {name: value for name, value in dataclasses.asdict(self).items() if name != "embeddings"}
        embedded = {key: getattr(self.embeddings, name) for key, name in self._EMBEDDING_KEYS.items()}
        return {**own, **embedded}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> HeadProvenance:
        # Heads trained before backbones were a choice read ResNet50's 2048-d embeddings.
        embeddings = WeightsProvenance(**{
            "source": "unknown", "synthetic": False, "backbone": RESNET50_BACKBONE,
            "embedding_dim": RESNET50_EMBEDDING_DIM,
            **{name: record[key] for key, name in cls._EMBEDDING_KEYS.items() if key in record}})
        names = {item.name for item in dataclasses.fields(cls)} - {"embeddings"}
        return cls(embeddings=embeddings, **{name: value for name, value in record.items() if name in names})

    @classmethod
    def read(cls, version_dir: Path) -> HeadProvenance:
        return cls.from_record(json.loads((version_dir / PROVENANCE_FILE).read_text()))

    def write(self, version_dir: Path) -> None:
        write_json(version_dir / PROVENANCE_FILE, self.to_record())


@dataclass(frozen=True)
class PromotionRecord:
    """One promotion or rollback of a model: what ``promote`` and ``rollback`` return, and what ``promotions.json``
    keeps."""

    version: int
    previous: int
    promoted: bool
    checks: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    at: str = ""
    """When it was recorded (UTC, ISO 8601)."""

    @classmethod
    def now(cls, *, version: int, previous: int, promoted: bool, checks: dict[str, str] | None = None,
            reason: str | None = None) -> PromotionRecord:
        return cls(version, previous, promoted, dict(checks or {}), reason,
                   datetime.now(timezone.utc).isoformat(timespec="seconds"))


def read_history(model_dir: Path) -> list[PromotionRecord]:
    """A model's promotions and rollbacks, oldest first."""
    path = model_dir / HISTORY_FILE
    return [PromotionRecord(**entry) for entry in json.loads(path.read_text())] if path.exists() else []


def record_history(model_dir: Path, record: PromotionRecord) -> None:
    write_json(model_dir / HISTORY_FILE, [dataclasses.asdict(entry) for entry in [*read_history(model_dir), record]])
