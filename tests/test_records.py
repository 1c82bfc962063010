"""The repository's records: each file read and written by one frozen type, and files written before the types
existed read unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from shopvision import contract
from shopvision.repository.records import (
    HISTORY_FILE,
    HeadProvenance,
    PromotionRecord,
    read_history,
    read_weights_provenance,
    record_history,
    write_weights_provenance,
)
from shopvision.types import WeightsProvenance

BUILT = WeightsProvenance(source="resnet50-v1-12", synthetic=False, model_sha256="1" * 64, backbone="resnet50-v1-12",
                          embedding_dim=2048, source_sha256="2" * 64, built_at="2026-12-07T01:00:00+00:00")
SYNTHETIC = WeightsProvenance(source="synthetic", synthetic=True, model_sha256="3" * 64,
                              backbone=contract.SYNTHETIC_BACKBONE, embedding_dim=2048, source_sha256="4" * 64,
                              built_at="2026-12-07T01:00:00+00:00", seed=7)


def test_weights_provenance_reads_back_from_its_file_and_from_config_parameters(tmp_path: Path) -> None:
    for provenance in (BUILT, SYNTHETIC):
        write_weights_provenance(tmp_path, provenance)
        assert read_weights_provenance(tmp_path) == provenance
        parameters = provenance.as_parameters()
        assert all(key.startswith(contract.PROVENANCE_PARAMETER_PREFIX) and isinstance(value, str)
                   for key, value in parameters.items())
        unprefixed = {key[len(contract.PROVENANCE_PARAMETER_PREFIX):]: value for key, value in parameters.items()}
        assert WeightsProvenance.from_parameters(unprefixed) == provenance
    assert BUILT.as_parameters()["weights_seed"] == "" and SYNTHETIC.as_parameters()["weights_synthetic"] == "true"
    assert read_weights_provenance(tmp_path / "absent") is None


def test_config_parameters_stamped_before_backbones_were_named_read_as_unknown() -> None:
    old = WeightsProvenance.from_parameters({"source": "resnet50-v1-12", "synthetic": "false",
                                             "model_sha256": "1" * 64})
    assert (old.backbone, old.embedding_dim, old.seed, old.source_sha256) == ("unknown", 0, None, None)


def test_a_head_provenance_keeps_the_flat_keys_of_heads_installed_before_the_type(tmp_path: Path) -> None:
    written_before = {
        "categories": ["bags", "shoes"], "training_set_sha256": "5" * 64, "photos": 40, "source": "labelled/",
        "trained_at": "2026-11-30T00:00:00+00:00", "embedding_model_sha256": "1" * 64,
        "embedding_model_source": "resnet50-v1-12", "embedding_weights_synthetic": False,
        "held_out_accuracy": 0.9, "chance": 0.5, "regularisation_C": 10.0, "seed": 0, "scikit_learn": "1.5.2"}
    (tmp_path / contract.PROVENANCE_FILE).write_text(json.dumps(written_before))
    head = HeadProvenance.read(tmp_path)
    # Heads from before backbones were a choice were trained on ResNet50's 2048-d embeddings.
    assert head.embeddings == WeightsProvenance(source="resnet50-v1-12", synthetic=False, model_sha256="1" * 64,
                                                backbone=contract.RESNET50_BACKBONE, embedding_dim=2048)
    assert (head.categories, head.photos, head.held_out_accuracy, head.regularisation_C) == (
        ["bags", "shoes"], 40, 0.9, 10.0)
    record = head.to_record()
    assert record == {**written_before, "embedding_backbone": "resnet50-v1-12", "embedding_dim": 2048}
    head.write(tmp_path / "again")
    assert HeadProvenance.read(tmp_path / "again") == head


def test_promotions_append_in_order_and_read_back_typed(tmp_path: Path) -> None:
    assert read_history(tmp_path) == []
    first = PromotionRecord.now(version=2, previous=1, promoted=True, checks={"parity": "ok"})
    second = PromotionRecord.now(version=3, previous=2, promoted=False, reason="failed its checks")
    record_history(tmp_path, first)
    record_history(tmp_path, second)
    assert read_history(tmp_path) == [first, second]
    assert first.at.endswith("+00:00")
    entries = json.loads((tmp_path / HISTORY_FILE).read_text())
    assert entries[1] == {"version": 3, "previous": 2, "promoted": False, "checks": {}, "reason": "failed its checks",
                          "at": second.at}
