"""The shop's own categories without a server: labelled photos, training and its held-out evaluation, the
exported head, the report, and the head versions of a built repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.linear_model import LogisticRegression

from shopvision.categories.dataset import LabelledPhoto, TrainingDataError, check_counts, read_labelled
from shopvision.categories.embedding import EmbeddedPhotos
from shopvision.categories.export import head_to_onnx
from shopvision.categories.report import render_markdown, training_report
from shopvision.categories.training import MAX_ITERATIONS, Split, train_head
from shopvision.contract import (
    CATEGORISED_EMBEDDING,
    CATEGORY_PROBABILITIES,
    EMBEDDING,
    ENSEMBLE_MODEL,
)
from shopvision.repository.configs import read_config
from shopvision.repository.files import CategoryHeads, assemble
from shopvision.repository.records import HeadProvenance, PromotionRecord, record_history
from shopvision.samples import write_labelled_photos
from tests.support.servers import TEMPLATE
from tests.support.vectors import labelled_vectors, served_weights


def test_labelled_photos_come_from_category_folders_or_a_csv(tmp_path: Path) -> None:
    written = write_labelled_photos(tmp_path / "folders", per_category=2, categories=("striped", "dotted"))
    assert [(p.category, p.path.name) for p in read_labelled(tmp_path / "folders")] == [
        ("dotted", "0000.jpg"), ("dotted", "0001.jpg"), ("striped", "0000.jpg"), ("striped", "0001.jpg")]
    plain = tmp_path / "plain.csv"
    plain.write_text("image_path,category\nfolders/striped/0000.jpg,shirts\nfolders/dotted/0000.jpg,dresses\n")
    assert [(p.category, p.path, p.product_id) for p in read_labelled(plain)] == [
        ("dresses", written["dotted"][0], None), ("shirts", written["striped"][0], None)]
    catalog_csv = tmp_path / "products.csv"
    catalog_csv.write_text("product_id,image_path,colour,category\nsku-1,folders/striped/0001.jpg,black,shirts\n")
    assert read_labelled(catalog_csv) == [LabelledPhoto("shirts", written["striped"][1], "sku-1")]
    for text, problem in (("image_path\nx.jpg\n", "needs the columns"),
                          ("image_path,category\nx.jpg,\n", "without a category")):
        broken = tmp_path / "broken.csv"
        broken.write_text(text)
        with pytest.raises(TrainingDataError, match=problem):
            read_labelled(broken)


def test_too_few_photos_or_categories_are_refused_with_the_counts() -> None:
    photos = [LabelledPhoto("shoes", Path(f"s{i}.jpg")) for i in range(12)]
    with pytest.raises(TrainingDataError, match="at least 2 categories"):
        check_counts(photos)
    photos += [LabelledPhoto("bags", Path(f"b{i}.jpg")) for i in range(4)]
    with pytest.raises(TrainingDataError, match=r"at least 10 photos; too few: 'bags' \(4\)"):
        check_counts(photos)
    assert check_counts(photos, minimum=4) == {"bags": 4, "shoes": 12}


@pytest.mark.parametrize("categories", [2, 4])
def test_the_exported_head_computes_what_predict_proba_does(categories: int) -> None:
    vectors, labels = labelled_vectors(categories, 30, seed=categories)
    head = train_head(vectors, labels, seed=0)
    session = ort.InferenceSession(head_to_onnx(head).SerializeToString(), providers=["CPUExecutionProvider"])
    served = session.run([CATEGORY_PROBABILITIES], {EMBEDDING: vectors})[0]
    assert served.shape == (len(vectors), categories)
    assert float(np.abs(served - head.classifier.predict_proba(vectors)).max()) < 1e-5
    evaluation = head.evaluation
    held_out_photos = -(-len(vectors) * 25 // 100)  # scikit-learn rounds the held-out quarter up
    assert evaluation.photos == Split(train=len(vectors) - held_out_photos, held_out=held_out_photos)
    held_out = evaluation.held_out
    assert held_out.chance == pytest.approx(1 / categories, abs=0.05)
    assert held_out.accuracy > held_out.chance + 0.3
    assert set(held_out.per_category) == set(labels)
    assert evaluation.regularisation.C in [row.C for row in evaluation.regularisation.grid]
    assert 0 <= held_out.calibration.expected_calibration_error <= 1
    assert sum(row.photos for row in held_out.calibration.bins) == evaluation.photos.held_out
    # The held-out photos are a stratified part the classifier never saw: the two parts split the rows, and a
    # classifier fitted on the training part alone, with the C chosen, is the one trained (coefficients equal).
    train, unseen = set(head.train_rows.tolist()), set(head.held_out_rows.tolist())
    assert not train & unseen and train | unseen == set(range(len(vectors))) and len(unseen) == held_out_photos
    assert {labels[row] for row in unseen} == set(labels)
    refit = LogisticRegression(C=evaluation.regularisation.C, max_iter=MAX_ITERATIONS)
    refit.fit(vectors[head.train_rows], [labels[row] for row in head.train_rows])
    np.testing.assert_allclose(refit.coef_, head.classifier.coef_, atol=1e-6)
    accuracy = np.mean(refit.predict(vectors[head.held_out_rows]) == np.array(labels)[head.held_out_rows])
    assert held_out.accuracy == pytest.approx(accuracy)


def test_the_report_names_confusions_and_says_loudly_when_weights_are_synthetic() -> None:
    # Two categories drawn from the same cluster cannot be told apart: they must show up as confused.
    vectors, labels = labelled_vectors(3, 30, seed=7)
    labels = [label if label != "cat-2" else ("cat-1" if index % 2 else "cat-2") for index, label in enumerate(labels)]
    head = train_head(vectors, labels, seed=0)
    confused = {(pair.category, pair.predicted_as) for pair in head.evaluation.held_out.most_confused}
    assert confused & {("cat-1", "cat-2"), ("cat-2", "cat-1")}, head.evaluation.held_out.most_confused
    photos = [LabelledPhoto(label, Path(f"{index}.jpg")) for index, label in enumerate(labels)]
    embedded = EmbeddedPhotos(photos=photos, vectors=vectors, digests=[f"{i:064x}" for i in range(len(photos))])
    report = training_report(head, embedded, served_weights(synthetic=True), source="labelled/", seed=0)
    assert report.provenance.embeddings.synthetic is True
    assert report.provenance.training_set_sha256 == embedded.training_set_sha256()
    # The record keeps the keys heads installed before the typed record have, and reads back equal.
    record = report.provenance.to_record()
    assert record["embedding_weights_synthetic"] is True and record["embedding_model_sha256"] == "ab" * 32
    assert HeadProvenance.from_record(json.loads(json.dumps(record))) == report.provenance
    markdown = render_markdown(report, version=3)
    assert markdown.startswith("# Categories head, version 3\n\n**SYNTHETIC WEIGHTS.**")
    assert "taken for" in markdown and "| cat-0 | 30 |" in markdown
    real = render_markdown(training_report(head, embedded, served_weights(synthetic=False), source="x", seed=0),
                           version=3)
    assert "SYNTHETIC" not in real


def test_a_repository_gets_the_head_model_and_the_ensemble_its_step_only_once_a_head_is_installed(
        tmp_path: Path) -> None:
    repository = tmp_path / "model_repository"
    assemble(TEMPLATE, repository)
    heads = CategoryHeads(repository)
    assert not heads.model_dir.exists() and heads.serving_version() is None
    vectors, labels = labelled_vectors(3, 12, seed=1)
    head = train_head(vectors, labels, seed=0)
    provenance = HeadProvenance(categories=head.categories, embeddings=served_weights())
    version = heads.install(head_to_onnx(head).SerializeToString(), provenance, template=TEMPLATE)
    assert version == 1 and heads.categories(1) == ["cat-0", "cat-1", "cat-2"]
    assert (heads.model_dir / "config.pbtxt").is_file() and (heads.model_dir / "1" / "model.py").is_file()
    assemble(TEMPLATE, repository)  # no promotion recorded: the newest head serves from the next assembly
    assert heads.serving_version() == 1
    ensemble = (repository / ENSEMBLE_MODEL / "config.pbtxt").read_text()
    assert 'name: "category_probabilities"' in ensemble and 'label_filename: "categories-1.txt"' in ensemble
    assert (repository / ENSEMBLE_MODEL / "categories-1.txt").read_text() == "cat-0\ncat-1\ncat-2\n"
    record_history(heads.model_dir, PromotionRecord.now(version=0, previous=1, promoted=True))
    assemble(TEMPLATE, repository)  # a rollback to "no head" survives reassembly
    assert heads.serving_version() is None
    assert "category_probabilities" not in (repository / ENSEMBLE_MODEL / "config.pbtxt").read_text()


def test_a_head_on_another_backbones_embeddings_gets_configs_of_its_width(tmp_path: Path) -> None:
    """A head trained on MobileNet v2's 1280-d embeddings: its model and its configs read 1280 values."""
    repository = tmp_path / "model_repository"
    assemble(TEMPLATE, repository)
    vectors, labels = labelled_vectors(3, 12, seed=4, width=1280)
    head = train_head(vectors, labels, seed=0)
    heads = CategoryHeads(repository)
    heads.install(head_to_onnx(head).SerializeToString(), HeadProvenance(head.categories, served_weights()),
                  template=TEMPLATE)
    for path in heads.configs():
        config = read_config(path)
        assert [list(t.dims) for t in (*config.input, *config.output) if t.name in (EMBEDDING, CATEGORISED_EMBEDDING)
                ] == [[1280], [1280]], path
    session = ort.InferenceSession(str(heads.model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    probabilities = session.run([CATEGORY_PROBABILITIES], {EMBEDDING: vectors[:4]})[0]
    np.testing.assert_allclose(probabilities, head.classifier.predict_proba(vectors[:4]), atol=1e-5)


def test_a_head_whose_first_promotion_failed_does_not_serve_after_reassembly(tmp_path: Path) -> None:
    repository = tmp_path / "model_repository"
    assemble(TEMPLATE, repository)
    heads = CategoryHeads(repository)
    vectors, labels = labelled_vectors(2, 12, seed=1)
    head = train_head(vectors, labels, seed=0)
    heads.install(head_to_onnx(head).SerializeToString(), HeadProvenance(head.categories, served_weights()),
                  template=TEMPLATE)
    record_history(heads.model_dir, PromotionRecord.now(version=1, previous=0, promoted=False))
    assemble(TEMPLATE, repository)
    assert heads.serving_version() is None
    # The template's ensemble, comments and all: nothing rewrote it.
    assert (repository / ENSEMBLE_MODEL / "config.pbtxt").read_text() == (
        TEMPLATE / ENSEMBLE_MODEL / "config.pbtxt").read_text()


# --- On a real server ------------------------------------------------------------------------------
